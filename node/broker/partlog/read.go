package partlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"herd/node"
)

// ReadResult is what Read delivers.
type ReadResult struct {
	Records []byte // whole batches only, below the high watermark
	// Buf is the disk read's buffer that Records lies in, as the shell
	// delivered it, or nil if Records is a copy or empty. A caller done
	// with Records may hand Buf to Env.Recycle (or, once it has sent from
	// it, Env.RecycleSent); nothing else references it.
	Buf            []byte
	HighWatermark  int64
	LogStartOffset int64
	Err            error // nil, ErrOffsetOutOfRange, ErrStorage or ErrClosed
}

// Read delivers whole batches starting with the batch that holds offset, at
// most maxBytes of them, except that when minOneBatch is set the first batch
// is returned whole even if it is larger (KIP-74). offset == HighWatermark
// gives no records; offset outside [LogStartOffset, HighWatermark] gives
// ErrOffsetOutOfRange. A read never crosses a segment boundary (as in
// Kafka), so it may return less than maxBytes with more data available.
// The bytes are read from the file through the offset index; every batch is
// checked (length, magic, offsets dense) before it is served, and its CRC
// too unless this process verified it already (Append, or a recovery scan);
// a batch that fails is reported as ErrStorage rather than served. Whether
// the next batch fits is decided from its length prefix, before its body is
// read.
func (l *Log) Read(offset int64, maxBytes int, minOneBatch bool, done func(ReadResult)) {
	hw, start := l.hw, l.start
	answer := func(recs []byte, err error) {
		done(ReadResult{Records: recs, HighWatermark: hw, LogStartOffset: start, Err: err})
	}
	if err := l.usable(); err != nil {
		l.d.later(func() { answer(nil, err) })
		return
	}
	if offset < start || offset > hw {
		l.d.later(func() { answer(nil, ErrOffsetOutOfRange) })
		return
	}
	if offset == hw {
		l.d.later(func() { answer(nil, nil) })
		return
	}
	seg := l.segmentFor(offset)
	r := &reader{offset: offset, hw: hw, maxBytes: max(maxBytes, 0), minOne: minOneBatch, next: -1,
		checkCRC: l.d.h.Bug != BugServeTorn}
	l.withIndex(seg, func(ix *segIndex, err error) {
		if err != nil {
			answer(nil, l.readErr(seg, err))
			return
		}
		// Read from the index position through maxBytes past the target
		// batch in one go: the batches skipped before it (up to the next
		// index entry) count too, or the window ends short, a second read
		// follows and result() copies both buffers into one.
		pos, span := ix.lookupSpan(uint32(offset - seg.base))
		if span == 0 {
			span = seg.size - pos
		}
		r.ix = ix
		w := &walker{l: l, seg: seg, want: span + int64(r.maxBytes) + batchHeaderSize, track: true}
		if span > probeSpan {
			// Big batches: the one at pos is usually the batch before
			// offset (entries name a batch's last offset). Read its
			// header first; peek skips it unread if it ends before
			// offset, and sizes the next read by the batch's length.
			w.want = batchHeaderSize
		}
		w.visit = r.visit
		w.peek = r.peek
		w.end = func(err error) {
			if err == nil && r.total == 0 && r.minOne {
				// offset is below the high watermark, so the segment
				// holds a batch with it: only damaged headers (a base
				// offset or length that lies) make the walk miss it.
				err = fmt.Errorf("%w: no batch holding offset %d in segment %d", ErrCorrupt, offset, seg.base)
			}
			if err != nil {
				w.recycle(nil)
				answer(nil, l.readErr(seg, err))
				return
			}
			recs, buf := r.result()
			w.recycle(buf)
			done(ReadResult{Records: recs, Buf: buf, HighWatermark: hw, LogStartOffset: start})
		}
		w.start(pos)
	})
}

// segmentFor returns the segment holding offset (which must be at or above
// the first segment's base).
func (l *Log) segmentFor(offset int64) *segment {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > offset })
	if i == 0 {
		panic(fmt.Sprintf("partlog: %s offset %d below the first segment %d", l.name(), offset, l.segs[0].base))
	}
	return l.segs[i-1]
}

// readErr classifies a failed read: a segment that retention removed under
// it means the offset has left the log.
func (l *Log) readErr(seg *segment, err error) error {
	switch {
	case l.closed != nil:
		return l.closed
	case seg.deleted || errors.Is(err, node.ErrNotExist):
		return ErrOffsetOutOfRange
	case errors.Is(err, ErrCorrupt):
		l.d.logf("%s: corrupt batch in segment %d: %v", l.name(), seg.base, err)
		return ErrStorage
	}
	return ErrStorage
}

// probeSpan: a Read whose index span is larger than this reads the header
// of the batch at the index position first, so a big batch before the
// offset is skipped unread.
const probeSpan = 64 << 10

// reader collects the batches a Read returns.
type reader struct {
	offset, hw int64
	maxBytes   int
	minOne     bool
	checkCRC   bool  // false only for the planted bug BugServeTorn
	next       int64 // the offset the next delivered batch must start at (-1: first)
	total      int
	ix         *segIndex

	// Delivered bytes: earlier runs (copied out of buffers since replaced)
	// and the current run, cur[from:to] of the walker's buffer number gen.
	// Usually there is only the current run, returned without copying.
	parts    [][]byte
	cur      []byte
	from, to int
	gen      int
}

// peek decides from a batch's length prefix (base offset and length),
// before its body is read: stop at the high watermark or at a batch that
// would be delivered but does not fit, skip a batch whose header (when
// the buffer holds it) says it ends before the offset, and size the next
// read to what can be delivered. Header fields are not covered by a check
// yet here; a lie costs at most a wrong skip, which visit reports as
// offsets that are not dense, or a short answer.
func (r *reader) peek(w *walker, pos int64, hdr []byte, size int) walkStep {
	base := int64(binary.BigEndian.Uint64(hdr[offBaseOffset:]))
	if base >= r.hw {
		w.end(nil)
		return walkStop
	}
	if r.next < 0 && len(hdr) >= offLastDelta+4 && hdr[offMagic] == 2 &&
		base+int64(int32(binary.BigEndian.Uint32(hdr[offLastDelta:]))) < r.offset {
		// Before the one asked for. The batch holding offset starts
		// right after; it ends at the latest at the next index entry.
		next := pos + int64(size)
		w.want = int64(r.maxBytes) + lengthPrefix
		if e := r.ix.boundaryAfter(next); e > next {
			w.want = max(w.want, e-next)
		}
		return walkSkip
	}
	if r.next >= 0 || base == r.offset {
		// The next batch to deliver (if it is what it claims; visit
		// checks that once it is read).
		if r.total+size > r.maxBytes && !(r.total == 0 && r.minOne) {
			w.end(nil)
			return walkStop
		}
		w.want = int64(size)
		if after := r.maxBytes - r.total - size; after >= batchHeaderSize {
			w.want += int64(after + lengthPrefix)
		}
		return walkVisit
	}
	// Before the batch holding offset, or that batch with offset inside it.
	w.want = int64(size+r.maxBytes) + lengthPrefix
	return walkVisit
}

func (r *reader) visit(w *walker, b []byte) bool {
	pos := w.filePos() - int64(len(b))
	// peek has stopped at the high watermark already. Batches before the
	// offset are only parsed: they are not served.
	h, err := parseBatchCRC(b, false)
	if err != nil {
		w.end(fmt.Errorf("%w: at %d: %v", ErrCorrupt, pos, err))
		return false
	}
	if h.lastOffset() < r.offset {
		return true // before the one asked for: skip
	}
	if r.checkCRC && pos < w.seg.verifiedFrom && !crcOK(b) {
		w.end(fmt.Errorf("%w: at %d: %v", ErrCorrupt, pos, ErrCorrupt))
		return false
	}
	if r.next < 0 && h.baseOffset > r.offset || r.next >= 0 && h.baseOffset != r.next || h.nextOffset() > r.hw {
		w.end(fmt.Errorf("%w: batch at %d holds offsets %d-%d, expected %d", ErrCorrupt,
			pos, h.baseOffset, h.lastOffset(), max(r.next, r.offset)))
		return false
	}
	if r.total+len(b) > r.maxBytes && !(r.total == 0 && r.minOne) {
		w.end(nil)
		return false
	}
	r.next = h.nextOffset()
	r.total += len(b)
	if r.maxBytes-r.total < batchHeaderSize {
		// No further batch can fit: end without reading more.
		r.add(w, b)
		w.end(nil)
		return false
	}
	w.want = int64(r.maxBytes-r.total) + lengthPrefix
	r.add(w, b)
	return true
}

// add appends b, the batch just visited, to the delivered bytes.
func (r *reader) add(w *walker, b []byte) {
	at := w.i - len(b)
	if r.cur != nil && r.gen == w.gen && r.to == at {
		r.to = w.i
		return
	}
	if r.to > r.from {
		r.parts = append(r.parts, r.cur[r.from:r.to])
	}
	r.cur, r.from, r.to, r.gen = w.buf, at, w.i, w.gen
}

// result returns the delivered bytes and the read buffer they lie in (nil
// if they had to be copied out of more than one).
func (r *reader) result() (recs, buf []byte) {
	if len(r.parts) == 0 {
		if r.to == r.from {
			return nil, nil
		}
		return r.cur[r.from:r.to:r.to], r.cur
	}
	out := make([]byte, 0, r.total)
	for _, p := range r.parts {
		out = append(out, p...)
	}
	return append(out, r.cur[r.from:r.to]...), nil
}

// walker reads a segment's batches forward from a position, in reads of
// about want bytes, handing each whole batch to visit until visit returns
// false (having called end) or the segment ends (end(nil)). Bytes that do
// not parse as a batch boundary end it with ErrCorrupt.
type walker struct {
	l     *Log
	seg   *segment
	want  int64
	visit func(w *walker, b []byte) bool
	end   func(err error)
	// peek, if set, is called once per batch as soon as its length prefix
	// is in the buffer, before the rest is read (if it is not there yet)
	// or visited, with its position, what the buffer holds of it (at
	// least the length prefix) and its whole size.
	peek   func(w *walker, pos int64, hdr []byte, size int) walkStep
	peeked int64 // 1 + the position last peeked at (0: none)

	buf    []byte
	bufPos int64 // file position of buf[0]
	i      int   // next batch in buf
	gen    int   // bumped per read, so a reader knows which buffer a batch is in
	// track: list in read every buffer the walk read (as delivered), for
	// recycle (a Read's walk; a recovery scan's would hold a whole segment).
	track bool
	read  [][]byte
}

// recycle hands every buffer the walk read back to the shell, except keep
// (which the caller returns to its own caller).
func (w *walker) recycle(keep []byte) {
	for _, b := range w.read {
		if keep == nil || cap(b) == 0 || &b[:1][0] != &keep[:1][0] {
			w.l.d.recycle(b)
		}
	}
	w.read = nil
}

// walkStep is what a walker's peek decides.
type walkStep uint8

const (
	walkVisit walkStep = iota // read the batch (if needed) and visit it
	walkSkip                  // move past it without reading or visiting it
	walkStop                  // stop; peek has called end
)

func (w *walker) filePos() int64 { return w.bufPos + int64(w.i) }

func (w *walker) start(pos int64) {
	w.bufPos = pos
	if pos >= w.seg.size {
		// Never end inside the caller's call: its callback must come from
		// a completion.
		w.l.d.later(func() { w.end(nil) })
		return
	}
	w.run()
}

func (w *walker) run() {
	for {
		pos := w.filePos()
		if pos >= w.seg.size {
			w.end(nil)
			return
		}
		rest := w.buf[w.i:]
		size := peekSize(rest)
		if pos+lengthPrefix > w.seg.size || len(rest) >= lengthPrefix && (size < 0 || pos+int64(size) > w.seg.size) {
			w.end(fmt.Errorf("%w: bad batch length at %d", ErrCorrupt, pos))
			return
		}
		if size >= 0 && w.peek != nil && w.peeked != pos+1 {
			w.peeked = pos + 1
			switch w.peek(w, pos, rest[:min(size, len(rest))], size) {
			case walkStop:
				return
			case walkSkip:
				if size <= len(rest) {
					w.i += size
				} else {
					w.buf, w.bufPos, w.i = nil, pos+int64(size), 0
					w.gen++
				}
				continue
			}
		}
		if size < 0 || size > len(rest) {
			n := min(max(w.want, int64(size)), w.seg.size-pos, node.MaxReadLen)
			w.l.d.do(node.ReadOp(w.l.segFile(w.seg, logSuffix), pos, int(n)), func(ev node.Event) {
				if ev.Err != nil {
					w.end(ev.Err)
					return
				}
				if int64(len(ev.Data)) < min(n, int64(max(size, lengthPrefix))) {
					// The file is shorter than what was written to it.
					w.end(fmt.Errorf("%w: short read at %d", ErrCorrupt, pos))
					return
				}
				w.buf, w.bufPos, w.i = ev.Data, pos, 0
				w.gen++
				if w.track {
					w.read = append(w.read, ev.Data)
				}
				w.run()
			})
			return
		}
		b := rest[:size:size]
		w.i += size
		if !w.visit(w, b) {
			return
		}
	}
}

// withIndex calls fn with the segment's indexes: at once for the active
// segment or a cached one, else after loading them from the index files
// (rebuilding them from the .log if they are missing or do not make sense).
// fn is internal; user callbacks are still only called from completions.
func (l *Log) withIndex(s *segment, fn func(*segIndex, error)) {
	if s.ix != nil {
		if s.sealed {
			l.d.cache.touch(s)
		}
		fn(s.ix, nil)
		return
	}
	var offData, timeData []byte
	readLen := min(max(l.cfg.SegmentIndexBytes, 1<<20)*2, node.MaxReadLen)
	l.d.do(node.ReadOp(l.segFile(s, indexSuffix), 0, readLen), func(ev node.Event) {
		if ev.Err == nil {
			offData = ev.Data
		}
	})
	l.d.do(node.ReadOp(l.segFile(s, timeIndexSuffix), 0, readLen), func(ev node.Event) {
		if ev.Err == nil {
			timeData = ev.Data
		}
		// Decoding copies the entries out: the buffers are free after.
		defer l.d.recycle(offData, timeData)
		if s.deleted {
			fn(nil, node.ErrNotExist)
			return
		}
		if s.ix != nil { // loaded meanwhile by another read
			fn(s.ix, nil)
			return
		}
		span := s.next - s.base
		offs, ok1 := decodeOffsetIndex(offData, s.size, span)
		times, ok2 := decodeTimeIndex(timeData, span)
		if ok1 && ok2 && offData != nil && timeData != nil {
			s.ix = newSegIndex(offs, times)
			l.d.cache.touch(s)
			fn(s.ix, nil)
			return
		}
		l.d.logf("%s: index of segment %d missing or inconsistent; rebuilding it", l.name(), s.base)
		l.rebuildIndex(s, fn)
	})
}

// rebuildIndex scans a sealed segment whole to recreate its indexes, then
// rewrites its index files.
func (l *Log) rebuildIndex(s *segment, fn func(*segIndex, error)) {
	sc := &scan{l: l, seg: newSegment(s.base), fileSize: s.size, firstLast: -1}
	sc.done = func(err error) {
		if err == nil && (sc.bad || sc.seg.next != s.next) {
			err = fmt.Errorf("%w: segment %d of %s does not scan to its end", ErrCorrupt, s.base, l.name())
		}
		if err != nil {
			fn(nil, err)
			return
		}
		if s.deleted {
			fn(nil, node.ErrNotExist)
			return
		}
		sc.seg.maybeTimeEntry()
		s.ix = sc.seg.ix
		s.maxTS, s.maxTSOffset = sc.seg.maxTS, sc.seg.maxTSOffset
		if sc.seg.size == s.size {
			s.verifiedFrom = 0 // the scan checked every batch
		}
		l.d.cache.touch(s)
		if l.usable() == nil {
			l.writeIndexFiles(s)
		}
		fn(s.ix, nil)
	}
	sc.run(0)
}

// writeIndexFiles writes (not syncs) a segment's index files.
func (l *Log) writeIndexFiles(s *segment) {
	for _, f := range []struct {
		suffix string
		data   []byte
	}{{indexSuffix, encodeOffsetIndex(&s.ix.offsets)}, {timeIndexSuffix, encodeTimeIndex(&s.ix.times)}} {
		p := l.segFile(s, f.suffix)
		l.d.do(node.WriteOp(p, 0, f.data), nil)
		l.d.do(node.TruncateOp(p, int64(len(f.data))), nil)
	}
}

// OffsetForTimestamp finds the first offset whose record timestamp is >= ts
// (ListOffsets by time), among records below the high watermark; offset and
// timestamp -1 if none. The segment is found by its largest timestamp, the
// position through its time and offset indexes, then batches are scanned.
// Within an uncompressed batch the exact record is found; a compressed
// batch answers with its base offset (never past the record sought).
func (l *Log) OffsetForTimestamp(ts int64, done func(offset, timestamp int64, err error)) {
	if err := l.usable(); err != nil {
		l.d.later(func() { done(-1, -1, err) })
		return
	}
	l.searchTime(ts, l.hw, -1, done, true)
}

// searchTime searches the first segment after offset `after` whose largest
// timestamp reaches ts.
func (l *Log) searchTime(ts, hw, after int64, done func(offset, timestamp int64, err error), first bool) {
	var seg *segment
	for _, s := range l.segs {
		if s.base >= hw {
			break
		}
		if s.base > after && s.maxTS >= ts {
			seg = s
			break
		}
	}
	if seg == nil {
		if first {
			l.d.later(func() { done(-1, -1, nil) })
		} else {
			done(-1, -1, nil)
		}
		return
	}
	l.withIndex(seg, func(ix *segIndex, err error) {
		if err != nil {
			done(-1, -1, l.readErr(seg, err))
			return
		}
		found := false
		w := &walker{l: l, seg: seg, want: 1 << 20}
		w.visit = func(w *walker, b []byte) bool {
			h, err := parseBatch(b)
			switch {
			case err != nil:
				w.end(fmt.Errorf("%w: at %d: %v", ErrCorrupt, w.filePos()-int64(len(b)), err))
				return false
			case h.baseOffset >= hw:
				w.end(nil)
				return false
			case h.maxTimestamp < ts || h.lastOffset() < l.start:
				return true
			}
			off, t, ok := findTimestamp(b, &h, ts)
			if !ok {
				return true // the batch overstated its timestamps
			}
			found = true
			done(max(off, l.start), t, nil)
			return false
		}
		w.end = func(err error) {
			switch {
			case found:
			case err != nil:
				done(-1, -1, l.readErr(seg, err))
			case l.usable() != nil:
				done(-1, -1, l.usable())
			default:
				l.searchTime(ts, hw, seg.base, done, false)
			}
		}
		w.start(ix.lookup(ix.lookupTime(ts)))
	})
}
