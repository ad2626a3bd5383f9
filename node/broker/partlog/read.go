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
	Records        []byte // whole batches only, below the high watermark
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
// checked (length, CRC, offsets dense) before it is served, and a batch that
// fails is reported as ErrStorage rather than served.
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
		w := &walker{l: l, seg: seg, want: span + int64(r.maxBytes) + batchHeaderSize}
		w.visit = r.visit
		w.end = func(err error) {
			if err != nil {
				answer(nil, l.readErr(seg, err))
				return
			}
			answer(r.result(), nil)
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

// reader collects the batches a Read returns.
type reader struct {
	offset, hw int64
	maxBytes   int
	minOne     bool
	checkCRC   bool  // false only for the planted bug BugServeTorn
	next       int64 // the offset the next delivered batch must start at (-1: first)
	total      int

	// Delivered bytes: earlier runs (copied out of buffers since replaced)
	// and the current run, cur[from:to] of the walker's buffer number gen.
	// Usually there is only the current run, returned without copying.
	parts    [][]byte
	cur      []byte
	from, to int
	gen      int
}

func (r *reader) visit(w *walker, b []byte) bool {
	base := int64(binary.BigEndian.Uint64(b[offBaseOffset:]))
	if base >= r.hw {
		w.end(nil)
		return false
	}
	h, err := parseBatchCRC(b, r.checkCRC)
	if err != nil {
		w.end(fmt.Errorf("%w: at %d: %v", ErrCorrupt, w.filePos()-int64(len(b)), err))
		return false
	}
	if h.lastOffset() < r.offset {
		return true // before the one asked for: skip
	}
	if r.next < 0 && h.baseOffset > r.offset || r.next >= 0 && h.baseOffset != r.next || h.nextOffset() > r.hw {
		w.end(fmt.Errorf("%w: batch at %d holds offsets %d-%d, expected %d", ErrCorrupt,
			w.filePos()-int64(len(b)), h.baseOffset, h.lastOffset(), max(r.next, r.offset)))
		return false
	}
	if r.total+len(b) > r.maxBytes && !(r.total == 0 && r.minOne) {
		w.end(nil)
		return false
	}
	r.next = h.nextOffset()
	r.total += len(b)
	at := w.i - len(b)
	if r.cur != nil && r.gen == w.gen && r.to == at {
		r.to = w.i
		return true
	}
	if r.to > r.from {
		r.parts = append(r.parts, r.cur[r.from:r.to])
	}
	r.cur, r.from, r.to, r.gen = w.buf, at, w.i, w.gen
	return true
}

func (r *reader) result() []byte {
	if len(r.parts) == 0 {
		if r.to == r.from {
			return nil
		}
		return r.cur[r.from:r.to:r.to]
	}
	out := make([]byte, 0, r.total)
	for _, p := range r.parts {
		out = append(out, p...)
	}
	return append(out, r.cur[r.from:r.to]...)
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

	buf    []byte
	bufPos int64 // file position of buf[0]
	i      int   // next batch in buf
	gen    int   // bumped per read, so a reader knows which buffer a batch is in
}

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
			s.ix = &segIndex{offsets: offs, times: times}
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
	}{{indexSuffix, encodeOffsetIndex(s.ix.offsets)}, {timeIndexSuffix, encodeTimeIndex(s.ix.times)}} {
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
