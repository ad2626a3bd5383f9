package broker

import (
	"encoding/binary"
	"slices"

	"herd/node"
	"herd/node/broker/partlog"
	"herd/node/trash"
)

// memDir is an in-memory stand-in for partlog.Dir, for tests of the core
// that do not need real storage. It keeps partlog's rule that callbacks run
// later: each one rides on a harmless disk op (a stat of the data
// directory), so it arrives as a disk completion like partlog's would.
type memDir struct {
	h    partlog.Host
	logs map[partlog.TopicPartition]*memLog
	hw   func(partitionLog)
	cfg  partlog.Config
}

func openMemDir(h partlog.Host, _ string, defaults partlog.Config, done func(logDir, error)) {
	d := &memDir{h: h, logs: map[partlog.TopicPartition]*memLog{}, cfg: defaults}
	d.later(func() { done(d, nil) })
}

func (d *memDir) later(fn func()) { d.h.Disk(node.StatOp(""), func(node.Event) { fn() }) }

func (d *memDir) Logs() []partitionLog {
	var out []*memLog
	for _, l := range d.logs { // order-independent: sorted below
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *memLog) int {
		if a.tp.Topic != b.tp.Topic {
			if a.tp.Topic < b.tp.Topic {
				return -1
			}
			return 1
		}
		return int(a.tp.Partition - b.tp.Partition)
	})
	res := make([]partitionLog, len(out))
	for i, l := range out {
		res[i] = l
	}
	return res
}

func (d *memDir) Log(tp partlog.TopicPartition) partitionLog {
	if l := d.logs[tp]; l != nil {
		return l
	}
	return nil
}

func (d *memDir) CreateLog(tp partlog.TopicPartition, id [16]byte, overrides map[string]string, done func(partitionLog, error)) {
	l := &memLog{d: d, tp: tp, id: id, overrides: overrides, cfg: d.cfg}
	d.logs[tp] = l
	d.later(func() { done(l, nil) })
}

func (d *memDir) DeleteLog(tp partlog.TopicPartition, done func(error)) {
	if l := d.logs[tp]; l != nil {
		l.deleted = true
	}
	delete(d.logs, tp)
	d.later(func() { done(nil) })
}

func (d *memDir) OnHighWatermark(fn func(partitionLog)) { d.hw = fn }

func (d *memDir) OnFailure(fn func(error)) {}
func (d *memDir) Tick()                    {}
func (d *memDir) TrashStats() trash.Stats  { return trash.Stats{} }
func (d *memDir) Close(done func(error))   { d.later(func() { done(nil) }) }

type memBatch struct {
	base, last   int64
	maxTimestamp int64
	data         []byte
}

type memLog struct {
	d         *memDir
	tp        partlog.TopicPartition
	id        [16]byte
	overrides map[string]string
	cfg       partlog.Config
	batches   []memBatch
	next, hw  int64
	deleted   bool
}

func (l *memLog) TopicPartition() partlog.TopicPartition { return l.tp }
func (l *memLog) TopicID() [16]byte                      { return l.id }
func (l *memLog) Overrides() map[string]string           { return l.overrides }
func (l *memLog) Config() partlog.Config                 { return l.cfg }
func (l *memLog) LogStartOffset() int64                  { return 0 }
func (l *memLog) HighWatermark() int64                   { return l.hw }

func (l *memLog) Append(batches []byte, leaderEpoch int32, done func(error)) (base, last, appendTime int64, err error) {
	if l.deleted {
		return 0, 0, 0, partlog.ErrClosed
	}
	var parsed []memBatch
	next := l.next
	for rest := batches; len(rest) > 0; {
		if len(rest) < 61 {
			return 0, 0, 0, partlog.ErrCorrupt
		}
		n := 12 + int(int32(binary.BigEndian.Uint32(rest[8:])))
		if n < 61 || n > len(rest) {
			return 0, 0, 0, partlog.ErrCorrupt
		}
		if rest[16] != 2 {
			return 0, 0, 0, partlog.ErrUnsupportedMagic
		}
		if l.cfg.MaxMessageBytes > 0 && n > l.cfg.MaxMessageBytes {
			return 0, 0, 0, partlog.ErrTooLarge
		}
		count := int64(int32(binary.BigEndian.Uint32(rest[23:]))) + 1
		if count <= 0 {
			return 0, 0, 0, partlog.ErrInvalidRecord
		}
		b := rest[:n:n]
		binary.BigEndian.PutUint64(b, uint64(next))
		binary.BigEndian.PutUint32(b[12:], uint32(leaderEpoch))
		// A copy, as a store that writes it out has: the broker recycles
		// the request's buffer once the append is done.
		parsed = append(parsed, memBatch{base: next, last: next + count - 1, maxTimestamp: int64(binary.BigEndian.Uint64(b[35:])), data: append([]byte(nil), b...)})
		next += count
		rest = rest[n:]
	}
	base, last = l.next, next-1
	l.next = next
	l.batches = append(l.batches, parsed...)
	l.d.later(func() {
		if !l.deleted {
			l.hw = max(l.hw, last+1)
			if l.d.hw != nil {
				l.d.hw(l)
			}
		}
		done(nil)
	})
	return base, last, -1, nil
}

func (l *memLog) Read(offset int64, maxBytes int, minOneBatch bool, done func(partlog.ReadResult)) {
	res := partlog.ReadResult{HighWatermark: l.hw, LogStartOffset: 0}
	if offset < 0 || offset > l.hw {
		res.Err = partlog.ErrOffsetOutOfRange
	} else {
		var out []byte
		for _, b := range l.batches {
			if b.last < offset || b.base >= l.hw {
				continue
			}
			if len(out)+len(b.data) > maxBytes && !(minOneBatch && len(out) == 0) {
				break
			}
			out = append(out, b.data...)
		}
		res.Records = out
	}
	l.d.later(func() { done(res) })
}

func (l *memLog) OffsetForTimestamp(ts int64, done func(offset, timestamp int64, err error)) {
	off, at := int64(-1), int64(-1)
	for _, b := range l.batches {
		if b.maxTimestamp >= ts && b.base < l.hw {
			off, at = b.base, b.maxTimestamp
			break
		}
	}
	l.d.later(func() { done(off, at, nil) })
}
