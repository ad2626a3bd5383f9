package partlog

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"herd/node"
)

// Log is one partition's log.
type Log struct {
	d         *Dir
	tp        TopicPartition
	topicID   [16]byte
	overrides map[string]string
	cfg       Config
	path      string // the partition directory

	segs          []*segment // oldest first; the last is active; never empty
	start         int64      // log start offset
	hw            int64      // high watermark: what readers may see
	recoveryPoint int64      // offsets below it are durable (fsynced)
	closed        error      // set when deleted or the dir closed

	// The append pipeline. Each append is one write op; queue holds those
	// not yet acknowledged, in offset order, which is also the order their
	// completions arrive in (a node's disk ops complete in submission
	// order), so counters suffice to know which are done.
	queue        []pendingAppend
	qHead        int
	pendingBytes int64
	writeSeq     uint64 // writes submitted
	writesDone   uint64 // writes completed
	onWritten    func(node.Event)

	// Flushing (fsync). At most one flush is in flight; appends that ask
	// for one meanwhile share the next (group commit).
	unflushed      int64 // records appended since the last flush was submitted
	unflushedSince node.Time
	flushing       bool
	// retainStart is the log start offset a retention deletion will set
	// once the checkpoint naming it is durable (0: none in progress).
	retainStart int64
	flushAgain  bool
	flushSeq    uint64 // flushes submitted
	flushedSeq  uint64 // flushes completed
	toSync      []*segment
	namesDirty  bool // files were created or removed since the last directory sync

	hdrs []batchHeader // scratch for Append's validation
}

type pendingAppend struct {
	end      int64  // log end offset after this append
	writeSeq uint64 // its write
	flushSeq uint64 // the flush it waits for (0: none)
	bytes    int64
	done     func(error)
}

func newLog(d *Dir, tp TopicPartition, id [16]byte, overrides map[string]string, cfg Config) *Log {
	l := &Log{d: d, tp: tp, topicID: id, overrides: overrides, cfg: cfg, path: d.join(partitionDirName(tp))}
	l.onWritten = l.written
	return l
}

func (l *Log) file(name string) string { return l.path + "/" + name }
func (l *Log) segFile(s *segment, suffix string) string {
	if suffix == logSuffix {
		// Every append names the file: keep the string.
		if s.logPath == "" {
			s.logPath = l.file(segmentName(s.base, logSuffix))
		}
		return s.logPath
	}
	return l.file(segmentName(s.base, suffix))
}
func (l *Log) name() string     { return partitionDirName(l.tp) }
func (l *Log) active() *segment { return l.segs[len(l.segs)-1] }
func (l *Log) leo() int64       { return l.active().next }
func (l *Log) queueLen() int    { return len(l.queue) - l.qHead }
func (l *Log) maxIndexEntries() int {
	return l.cfg.SegmentIndexBytes / offsetEntrySize
}

func (l *Log) TopicPartition() TopicPartition { return l.tp }
func (l *Log) TopicID() [16]byte              { return l.topicID }

// Overrides returns a copy of the topic-level overrides.
func (l *Log) Overrides() map[string]string { return cloneMap(l.overrides) }
func (l *Log) Config() Config               { return l.cfg }

// LogStartOffset is the first offset still held.
func (l *Log) LogStartOffset() int64 { return l.start }

// LogEndOffset is the offset the next appended record gets.
func (l *Log) LogEndOffset() int64 { return l.leo() }

// HighWatermark is the end of what readers may see: appends whose write has
// completed (and, when the flush policy demands it, whose fsync has).
func (l *Log) HighWatermark() int64 { return l.hw }

// RecoveryPoint is the offset below which everything is known to be
// fsynced.
func (l *Log) RecoveryPoint() int64 { return l.recoveryPoint }

// Size is the number of bytes in the log's segments.
func (l *Log) Size() int64 {
	var n int64
	for _, s := range l.segs {
		n += s.size
	}
	return n
}

// SegmentCount is the number of segments (the active one included).
func (l *Log) SegmentCount() int { return len(l.segs) }

func (l *Log) usable() error {
	if l.closed != nil {
		return l.closed
	}
	return l.d.usable()
}

// Append validates batches (one or more RecordBatch v2, as a producer sent
// them), assigns them offsets from LogEndOffset (the batches' baseOffset and
// partitionLeaderEpoch fields are rewritten in place; for a LogAppendTime
// topic also the attributes' timestamp type and maxTimestamp, with the CRC
// recomputed), and writes them as received, in one disk write. Append takes
// ownership of batches: the caller must not touch them afterwards.
// Validation failures (ErrCorrupt, ErrInvalidRecord, ErrTooLarge,
// ErrUnsupportedMagic), ErrBacklog, ErrClosed and ErrStorage are returned
// at once and done is never called. Otherwise base and last are the offsets
// assigned, and done is called once the data is written (and fsynced if the
// flush policy says so), with nil, or with ErrStorage or ErrClosed if the
// dir failed or the log was deleted first. logAppendTime is the broker time
// stamped on the batches if the topic uses LogAppendTime (-1 otherwise).
func (l *Log) Append(batches []byte, leaderEpoch int32, done func(err error)) (base, last, logAppendTime int64, err error) {
	if err := l.usable(); err != nil {
		return 0, 0, -1, err
	}
	if l.queueLen() >= maxPendingAppends || l.pendingBytes+int64(len(batches)) > maxPendingBytes {
		return 0, 0, -1, ErrBacklog
	}
	hs, records, err := validateAppend(batches, l.cfg.MaxMessageBytes, l.hdrs[:0])
	l.hdrs = hs[:0]
	if err != nil {
		return 0, 0, -1, err
	}
	now := l.d.h.Now()
	if l.shouldRoll(len(batches), records, now) {
		l.roll()
	}
	seg := l.active()
	logAppendTime = -1
	if l.cfg.LogAppendTime {
		logAppendTime = l.d.h.WallClock()
	}
	base = seg.next
	pos, off := seg.size, base
	interval, maxEntries := l.cfg.IndexIntervalBytes, l.maxIndexEntries()
	for i := range hs {
		h := &hs[i]
		b := batches[pos-seg.size : pos-seg.size+int64(h.size)]
		stampBatch(b, off, leaderEpoch)
		h.baseOffset = off
		if logAppendTime >= 0 {
			stampLogAppendTime(b, logAppendTime)
			h.maxTimestamp = logAppendTime
		}
		seg.track(h, pos, interval, maxEntries)
		pos += int64(h.size)
		off += int64(h.recordCount)
	}
	if pos-seg.size != int64(len(batches)) {
		panic("partlog: validated batches do not add up to the appended bytes")
	}
	if !seg.hasOpened {
		seg.openedAt, seg.hasOpened = now, true
	}
	l.d.do(node.WriteOp(l.segFile(seg, logSuffix), seg.size, batches), l.onWritten)
	seg.size, seg.next = pos, off
	l.markDirty(seg)
	l.writeSeq++
	if l.unflushed == 0 {
		l.unflushedSince = now
	}
	l.unflushed += records
	var flushSeq uint64
	if fm := l.cfg.FlushMessages; fm > 0 && fm != math.MaxInt64 && l.unflushed >= fm {
		flushSeq = l.flush()
	}
	if l.d.h.Bug == BugAckBeforeFlush {
		flushSeq = 0 // the fsync still runs, but nothing waits for it
	}
	writeSeq := l.writeSeq
	if l.d.h.Bug == BugAckBeforeWrite {
		writeSeq = 0 // the write still runs, but nothing waits for it
	}
	l.queue = append(l.queue, pendingAppend{end: off, writeSeq: writeSeq, flushSeq: flushSeq, bytes: int64(len(batches)), done: done})
	l.pendingBytes += int64(len(batches))
	return base, off - 1, logAppendTime, nil
}

// shouldRoll says whether an append of n bytes and records records must
// start a new segment: Kafka's reasons (size, age, full index, relative
// offsets overflowing 32 bits), never for an empty segment.
func (l *Log) shouldRoll(n int, records int64, now node.Time) bool {
	s := l.active()
	if s.empty() {
		return false
	}
	return s.size+int64(n) > l.cfg.SegmentBytes ||
		(s.hasOpened && int64(now.Sub(s.openedAt)/time.Millisecond) >= l.cfg.SegmentMs) ||
		s.ix.offsets.len() >= l.maxIndexEntries() ||
		s.ix.times.len() >= l.cfg.SegmentIndexBytes/timeEntrySize ||
		s.next+records-1-s.base > math.MaxInt32
}

func (l *Log) markDirty(s *segment) {
	s.dirty = true
	if !s.queued {
		s.queued = true
		l.toSync = append(l.toSync, s)
	}
}

// roll seals the active segment and starts a new one at the log end. The
// new file is created at once, so the newest offset is always named by a
// file (offsets never go back after a crash, even if retention removes
// every older segment), and the sealed segment is flushed, as Kafka
// flushes on roll: that advances the recovery point.
func (l *Log) roll() {
	old := l.active()
	l.sealIndexes(old)
	old.sealed = true
	l.d.cache.touch(old)
	s := newSegment(old.next)
	l.segs = append(l.segs, s)
	l.d.do(node.WriteOp(l.segFile(s, logSuffix), 0, nil), nil)
	l.namesDirty = true
	l.markDirty(s)
	l.flush()
}

// sealIndexes writes the segment's indexes to its .index and .timeindex
// files (with the final time entry Kafka adds when a segment goes inactive).
// Each file is written whole and then cut to length, as a longer stale
// file may be there. They are caches: until a flush covers them and the
// recovery point passes the segment, recovery does not trust them.
func (l *Log) sealIndexes(s *segment) {
	s.maybeTimeEntry()
	for _, f := range []struct {
		suffix string
		data   []byte
	}{{indexSuffix, encodeOffsetIndex(&s.ix.offsets)}, {timeIndexSuffix, encodeTimeIndex(&s.ix.times)}} {
		p := l.segFile(s, f.suffix)
		l.d.do(node.WriteOp(p, 0, f.data), nil)
		l.d.do(node.TruncateOp(p, int64(len(f.data))), nil)
	}
	s.indexDirty = true
	l.namesDirty = true
	if !s.queued {
		s.queued = true
		l.toSync = append(l.toSync, s)
	}
}

// flush fsyncs everything written so far (group commit: if a flush is in
// flight, the next one starts when it completes) and returns the number of
// the flush that covers the writes submitted until now.
//
// Its syncs run in the background lane: appends, reads and checkpoints
// submitted later do not queue behind them (a rolled segment's fdatasync
// took 211-233 ms with every disk op of the broker waiting), as Kafka
// flushes a rolled segment from a scheduler thread. A background sync
// still covers every write submitted before it, and background ops
// complete in order, so the last one's completion means the whole flush is
// done. What may happen meanwhile is a segment's deletion (retention) or
// the log's (DeleteLog): its sync then finds no file, which is no loss.
func (l *Log) flush() uint64 {
	if l.flushing {
		l.flushAgain = true
		return l.flushSeq + 1
	}
	l.flushing = true
	l.flushSeq++
	seq, target := l.flushSeq, l.leo()
	l.unflushed = 0
	act := l.active()
	if !act.queued {
		// There is always at least one op to carry the completion.
		act.queued = true
		l.toSync = append(l.toSync, act)
	}
	type flushOp struct {
		op  node.DiskOp
		seg *segment // nil: the directory
	}
	var ops []flushOp
	for _, s := range l.toSync {
		s.queued = false
		if s.deleted {
			continue
		}
		if s.dirty || s == act {
			ops = append(ops, flushOp{node.BackgroundSyncOp(l.segFile(s, logSuffix)), s})
			s.dirty = false
		}
		if s.indexDirty {
			ops = append(ops, flushOp{node.BackgroundSyncOp(l.segFile(s, indexSuffix)), s},
				flushOp{node.BackgroundSyncOp(l.segFile(s, timeIndexSuffix)), s})
			s.indexDirty = false
		}
	}
	clear(l.toSync)
	l.toSync = l.toSync[:0]
	if l.namesDirty {
		l.namesDirty = false
		ops = append(ops, flushOp{node.BackgroundSyncDirOp(l.path), nil})
	}
	for i, f := range ops {
		last := i == len(ops)-1
		l.d.do(f.op, func(ev node.Event) {
			gone := errors.Is(ev.Err, node.ErrNotExist) && (l.closed != nil || f.seg != nil && f.seg.deleted)
			if ev.Err != nil && !gone {
				l.d.fail(fmt.Errorf("%v %s: %w", f.op.Kind, f.op.Path, ev.Err))
				return
			}
			if last {
				l.flushed(seq, target)
			}
		})
	}
	return seq
}

func (l *Log) flushed(seq uint64, target int64) {
	if l.d.failed != nil || l.closed != nil {
		return
	}
	if seq != l.flushedSeq+1 {
		panic(fmt.Sprintf("partlog: flush %d completed after %d", seq, l.flushedSeq))
	}
	l.flushing = false
	l.flushedSeq = seq
	if target > l.recoveryPoint {
		l.recoveryPoint = target
		l.d.ckptDirty = true
	}
	if l.flushAgain {
		l.flushAgain = false
		l.flush()
	}
	l.advance()
	if l.d.state == dirClosing {
		l.d.closeStep()
	}
}

func (l *Log) written(ev node.Event) {
	if ev.Err != nil {
		l.d.fail(fmt.Errorf("write %s: %w", l.name(), ev.Err))
		return
	}
	if l.d.failed != nil || l.closed != nil {
		return
	}
	l.writesDone++
	if l.writesDone > l.writeSeq {
		panic("partlog: more writes completed than submitted")
	}
	l.advance()
}

// advance acknowledges, in order, the appends whose write (and required
// flush) completed, moving the high watermark to the end of the last.
func (l *Log) advance() {
	if l.qHead > 64 && l.qHead*2 > len(l.queue) {
		n := copy(l.queue, l.queue[l.qHead:])
		clear(l.queue[n:])
		l.queue, l.qHead = l.queue[:n], 0
	}
	old := l.hw
	for l.qHead < len(l.queue) && l.closed == nil && l.d.failed == nil {
		p := &l.queue[l.qHead]
		if p.writeSeq > l.writesDone || p.flushSeq > l.flushedSeq {
			break
		}
		if p.end <= l.hw || p.end > l.leo() {
			panic(fmt.Sprintf("partlog: %s acknowledging end %d with hw %d, leo %d", l.name(), p.end, l.hw, l.leo()))
		}
		done := p.done
		l.hw = p.end
		l.pendingBytes -= p.bytes
		*p = pendingAppend{}
		l.qHead++
		if done != nil {
			done(nil)
		}
	}
	if l.qHead == len(l.queue) {
		l.queue, l.qHead = l.queue[:0], 0
	}
	if l.hw != old && l.d.onHW != nil && l.closed == nil {
		l.d.onHW(l)
	}
}

// failPending answers every waiting append with err (from a completion).
func (l *Log) failPending(err error) {
	q := l.queue[l.qHead:]
	l.queue, l.qHead, l.pendingBytes = nil, 0, 0
	for _, p := range q {
		if p.done != nil {
			p.done(err)
		}
	}
}

// close stops the log: later calls fail with err, and waiting appends are
// answered with it (deferred: close runs inside the caller's DeleteLog).
func (l *Log) close(err error) {
	if l.closed != nil {
		return
	}
	l.closed = err
	q := l.queue[l.qHead:]
	l.queue, l.qHead, l.pendingBytes = nil, 0, 0
	for _, p := range q {
		if p.done != nil {
			done := p.done
			l.d.later(func() { done(err) })
		}
	}
}

// tick does a log's time-driven work.
func (l *Log) tick(now node.Time, wall int64) {
	if l.usable() != nil {
		return
	}
	if l.cfg.FlushMs > 0 && l.unflushed > 0 && int64(now.Sub(l.unflushedSince)/time.Millisecond) >= l.cfg.FlushMs {
		l.flush()
	}
	if a := l.active(); !a.empty() && a.hasOpened && int64(now.Sub(a.openedAt)/time.Millisecond) >= l.cfg.SegmentMs {
		l.roll()
	}
	l.retain(wall)
}

// retain deletes the oldest segments that retention.ms or retention.bytes
// condemn, as Kafka does: only a prefix of the log, only segments wholly
// below the high watermark; if that is every segment, a new empty one is
// rolled first so the log keeps its end offset.
func (l *Log) retain(wall int64) {
	if l.retainStart != 0 {
		return // the previous deletion is still being made durable
	}
	n := 0
	if ms := l.cfg.RetentionMs; ms >= 0 {
		for n < len(l.segs) && l.deletable(n) {
			s := l.segs[n]
			if s.maxTS < 0 || wall-s.maxTS <= ms {
				break
			}
			n++
		}
	}
	if rb := l.cfg.RetentionBytes; rb >= 0 {
		excess := l.Size() - rb
		for _, s := range l.segs[:n] {
			excess -= s.size
		}
		for n < len(l.segs) && l.deletable(n) && excess-l.segs[n].size >= 0 {
			excess -= l.segs[n].size
			n++
		}
	}
	if n == 0 {
		return
	}
	if n == len(l.segs) {
		l.roll()
	}
	// The new log start offset is made durable (in the checkpoint, which
	// recovery honours) before clients see it or any file goes: a start
	// offset that was seen must not go back after a crash (a kill -9 just
	// after retention brought the old segment back, in the compat suite).
	// Until then the segments stay readable.
	doomed := slices.Clone(l.segs[:n])
	l.retainStart = l.segs[n].base
	if l.d.h.Bug == BugStartBeforeCheckpoint {
		l.start = max(l.start, l.retainStart)
	}
	l.d.writeCheckpoints(func(err error) {
		target := l.retainStart
		l.retainStart = 0
		if err != nil || l.usable() != nil {
			return // the dir went offline
		}
		l.segs = slices.DeleteFunc(l.segs, func(s *segment) bool { return slices.Contains(doomed, s) })
		l.start = max(l.start, target, l.segs[0].base)
		var files []string
		for _, s := range doomed {
			files = append(files, l.forgetSegment(s)...)
		}
		l.d.trash.Discard(l.path, files)
		l.d.logf("%s: retention deleted %d segments; log start offset %d", l.name(), len(doomed), l.start)
	})
}

// deletable: segment i may go if it holds data and nothing at or above the
// high watermark.
func (l *Log) deletable(i int) bool {
	s := l.segs[i]
	return !s.empty() && s.next <= l.hw
}

// forgetSegment drops a segment being deleted and returns its files for the
// trash, which renames them to .deleted (durably) and empties them step by
// step. Reads that reach them later find nothing and report the offset out
// of range. A sealed segment whose index files were never written (the
// write failed, taking the dir offline) has no such files; the trash takes
// a missing file as gone.
func (l *Log) forgetSegment(s *segment) []string {
	s.deleted = true
	s.ix = nil
	l.d.cache.drop(s)
	return []string{l.segFile(s, logSuffix), l.segFile(s, indexSuffix), l.segFile(s, timeIndexSuffix)}
}

func (l *Log) checkInvariants() {
	if len(l.segs) == 0 {
		panic("partlog: log without segments")
	}
	for i, s := range l.segs {
		s.checkInvariants()
		if i > 0 && s.base != l.segs[i-1].next {
			panic(fmt.Sprintf("partlog: %s segment %d starts at %d, previous ends at %d", l.name(), i, s.base, l.segs[i-1].next))
		}
		if s.sealed == (i == len(l.segs)-1) {
			panic("partlog: only the last segment is active")
		}
	}
	if !(l.segs[0].base <= l.start && l.start <= l.hw && l.hw <= l.leo() && l.recoveryPoint <= l.leo()) {
		panic(fmt.Sprintf("partlog: %s offsets out of order: first %d start %d hw %d rp %d leo %d",
			l.name(), l.segs[0].base, l.start, l.hw, l.recoveryPoint, l.leo()))
	}
}
