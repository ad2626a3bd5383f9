package partlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"herd/disk"
	"herd/node"
	"herd/node/trash"
)

// driver plays the owner of a Dir: it queues the DiskOps partlog submits,
// runs them one at a time in order against a disk.FS with disk.Exec, and
// delivers each completion. Nothing is delivered from inside Host.Disk, so
// a callback that runs re-entrantly is caught by checkCallback.
type driver struct {
	t      testing.TB
	fs     disk.FS
	q      []queuedOp
	head   int
	nextID node.OpID
	now    node.Time
	wall   int64
	// delivering is set while a completion or Tick runs: the only times a
	// user callback may run.
	delivering bool
	executed   int
	logs       []string
	quiet      bool
	// holdBG: background ops that reach the head of the queue wait in bg,
	// while later ops run, until releaseBG (a slow background lane).
	holdBG bool
	bg     []queuedOp
	// trash paces the Dir's trash; trimmedSteps counts the truncations of
	// discarded files it made.
	trash        trash.Config
	trimmedSteps int
	bug          string // Host.Bug
	// runAhead: when an op fails, the ops queued behind it run before its
	// completion is delivered, as the shell's disk worker goes on while the
	// loop has yet to learn of the failure.
	runAhead bool
	// recycled counts the read buffers the log handed back; each is
	// overwritten at once, as the simulator does, so a buffer recycled
	// while a result still lies in it shows as garbage.
	recycled int
}

type queuedOp struct {
	id   node.OpID
	op   node.DiskOp
	done func(node.Event)
}

func newDriver(t testing.TB, fs disk.FS) *driver {
	return &driver{t: t, fs: fs, now: node.Time(1e9), wall: 1_700_000_000_000}
}

func (dr *driver) host() Host {
	return Host{
		Disk: func(op node.DiskOp, done func(node.Event)) {
			dr.nextID++
			dr.q = append(dr.q, queuedOp{id: dr.nextID, op: op, done: done})
		},
		Recycle: func(data []byte) {
			dr.recycled++
			data = data[:cap(data)]
			for i := range data {
				data[i] = 0xA5
			}
		},
		Now:       func() node.Time { return dr.now },
		WallClock: func() int64 { return dr.wall },
		Trash:     dr.trash,
		Bug:       dr.bug,
		Logf: func(format string, args ...any) {
			line := fmt.Sprintf(format, args...)
			if len(dr.logs) < 10000 {
				dr.logs = append(dr.logs, line)
			}
		},
	}
}

func (dr *driver) pending() int { return len(dr.q) - dr.head }

// step runs and delivers the oldest queued op; false if there is none.
func (dr *driver) step() bool {
	if dr.head == len(dr.q) {
		return false
	}
	qo := dr.q[dr.head]
	dr.q[dr.head] = queuedOp{}
	dr.head++
	if dr.head == len(dr.q) {
		dr.q, dr.head = dr.q[:0], 0
	}
	if dr.holdBG && qo.op.Background {
		dr.bg = append(dr.bg, qo)
		return true
	}
	dr.deliver(qo)
	return true
}

func (dr *driver) deliver(qo queuedOp) {
	ev := disk.Exec(dr.fs, qo.id, qo.op)
	if ev.Err != nil && dr.runAhead {
		// Run what is queued behind it first; the completions still come
		// in order, the failed one's first.
		ahead := slices.Clone(dr.q[dr.head:])
		dr.q, dr.head = dr.q[:0], 0
		evs := make([]node.Event, len(ahead))
		for i, a := range ahead {
			evs[i] = disk.Exec(dr.fs, a.id, a.op)
		}
		dr.complete(qo, ev)
		for i, a := range ahead {
			dr.complete(a, evs[i])
		}
		return
	}
	dr.complete(qo, ev)
}

func (dr *driver) complete(qo queuedOp, ev node.Event) {
	dr.executed++
	if qo.op.Kind == node.OpTruncate && ev.Err == nil && (strings.HasSuffix(qo.op.Path, deletedSuffix) || strings.Contains(qo.op.Path, deleteDirSuffix+"/")) {
		dr.trimmedSteps++
	}
	dr.delivering = true
	qo.done(ev)
	dr.delivering = false
}

// releaseBG stops holding background ops and runs those held, in order.
func (dr *driver) releaseBG() {
	dr.holdBG = false
	held := dr.bg
	dr.bg = nil
	for _, qo := range held {
		dr.deliver(qo)
	}
}

// run delivers until nothing is queued.
func (dr *driver) run() {
	for n := 0; dr.step(); n++ {
		if n > 2_000_000 {
			var last []string
			for _, q := range dr.q[dr.head:min(dr.head+20, len(dr.q))] {
				last = append(last, fmt.Sprintf("%v %s off=%d len=%d", q.op.Kind, q.op.Path, q.op.Off, q.op.Len))
			}
			dr.t.Fatalf("driver: ops never stop coming; next:\n%s", strings.Join(last, "\n"))
		}
	}
}

// drop forgets queued ops: the process died before running them.
func (dr *driver) drop() { dr.q, dr.head, dr.bg = nil, 0, nil }

func (dr *driver) tick(d *Dir, by time.Duration) {
	dr.now = dr.now.Add(by)
	dr.wall += by.Milliseconds()
	dr.delivering = true
	d.Tick()
	dr.delivering = false
}

func (dr *driver) checkCallback() {
	dr.t.Helper()
	if !dr.delivering {
		panic("partlog: a callback ran outside a completion or Tick (re-entrantly)")
	}
}

func (dr *driver) logged(substr string) bool {
	for _, l := range dr.logs {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

// open runs OpenDir to completion.
func (dr *driver) open(path string, cfg Config) *Dir {
	dr.t.Helper()
	var d *Dir
	var err error
	called := false
	OpenDir(dr.host(), path, cfg, func(x *Dir, e error) { dr.checkCallback(); d, err, called = x, e, true })
	dr.run()
	if !called || err != nil {
		dr.t.Fatalf("OpenDir: called=%v err=%v\nlogs:\n%s", called, err, strings.Join(dr.logs, "\n"))
	}
	return d
}

func (dr *driver) create(d *Dir, tp TopicPartition, overrides map[string]string) *Log {
	dr.t.Helper()
	var l *Log
	var err error
	d.CreateLog(tp, testTopicID, overrides, func(x *Log, e error) { dr.checkCallback(); l, err = x, e })
	dr.run()
	if err != nil || l == nil {
		dr.t.Fatalf("CreateLog: %v", err)
	}
	return l
}

func (dr *driver) close(d *Dir) {
	dr.t.Helper()
	var err error
	called := false
	d.Close(func(e error) { dr.checkCallback(); err, called = e, true })
	dr.run()
	if !called || err != nil {
		dr.t.Fatalf("Close: called=%v err=%v", called, err)
	}
}

// appendSync appends and runs the disk until done is called.
func (dr *driver) appendSync(l *Log, b []byte) (base, last int64) {
	dr.t.Helper()
	var err error
	called := false
	base, last, _, err = l.Append(b, 3, func(e error) { dr.checkCallback(); called = true; err = e })
	if err != nil {
		dr.t.Fatalf("Append: %v", err)
	}
	dr.run()
	if !called || err != nil {
		dr.t.Fatalf("Append done: called=%v err=%v", called, err)
	}
	return base, last
}

func (dr *driver) read(l *Log, offset int64, maxBytes int, minOne bool) ReadResult {
	dr.t.Helper()
	var res ReadResult
	called := false
	l.Read(offset, maxBytes, minOne, func(r ReadResult) { dr.checkCallback(); res, called = r, true })
	dr.run()
	if !called {
		dr.t.Fatalf("Read(%d) never answered", offset)
	}
	return res
}

func (dr *driver) offsetForTime(l *Log, ts int64) (int64, int64, error) {
	dr.t.Helper()
	var off, got int64
	var err error
	called := false
	l.OffsetForTimestamp(ts, func(o, t int64, e error) { dr.checkCallback(); off, got, err, called = o, t, e, true })
	dr.run()
	if !called {
		dr.t.Fatal("OffsetForTimestamp never answered")
	}
	return off, got, err
}

var testTopicID = [16]byte{0x8a, 0x1f, 0x03, 0x77, 0x10, 0x22, 0x43, 0x9e, 0xb1, 0x5c, 0x00, 0xff, 0x12, 0x34, 0x56, 0x78}

// record is one record of a test batch.
type record struct {
	tsDelta int64
	key     []byte
	value   []byte
}

// makeBatch encodes an uncompressed RecordBatch v2 as a producer would
// (baseOffset and partitionLeaderEpoch zero).
func makeBatch(firstTS int64, recs []record) []byte {
	var body []byte
	maxTS := int64(-1)
	for i, r := range recs {
		var rec []byte
		rec = append(rec, 0) // attributes
		rec = binary.AppendVarint(rec, r.tsDelta)
		rec = binary.AppendVarint(rec, int64(i))
		if r.key == nil {
			rec = binary.AppendVarint(rec, -1)
		} else {
			rec = binary.AppendVarint(rec, int64(len(r.key)))
			rec = append(rec, r.key...)
		}
		rec = binary.AppendVarint(rec, int64(len(r.value)))
		rec = append(rec, r.value...)
		rec = binary.AppendVarint(rec, 0) // headers
		body = binary.AppendVarint(body, int64(len(rec)))
		body = append(body, rec...)
		maxTS = max(maxTS, firstTS+r.tsDelta)
	}
	b := make([]byte, batchHeaderSize, batchHeaderSize+len(body))
	binary.BigEndian.PutUint32(b[offBatchLength:], uint32(batchHeaderSize-lengthPrefix+len(body)))
	b[offMagic] = 2
	binary.BigEndian.PutUint32(b[offLastDelta:], uint32(len(recs)-1))
	binary.BigEndian.PutUint64(b[offFirstTimestamp:], uint64(firstTS))
	binary.BigEndian.PutUint64(b[offMaxTimestamp:], uint64(maxTS))
	binary.BigEndian.PutUint64(b[43:], ^uint64(0)) // producerId -1
	binary.BigEndian.PutUint16(b[51:], 0xffff)     // producerEpoch -1
	binary.BigEndian.PutUint32(b[53:], 0xffffffff) // baseSequence -1
	binary.BigEndian.PutUint32(b[offRecordCount:], uint32(len(recs)))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
	return b
}

// simpleBatch has n records with values tagged by tag.
func simpleBatch(ts int64, n int, size int, tag string) []byte {
	recs := make([]record, n)
	for i := range recs {
		v := []byte(fmt.Sprintf("%s/%d/", tag, i))
		for len(v) < size {
			v = append(v, byte('a'+len(v)%26))
		}
		recs[i] = record{tsDelta: int64(i), value: v}
	}
	return makeBatch(ts, recs)
}

// splitBatches parses what a Read returned into batches, failing on
// anything that is not a sequence of whole valid batches.
func splitBatches(t testing.TB, b []byte) []batchHeader {
	t.Helper()
	var out []batchHeader
	for len(b) > 0 {
		h, err := parseBatch(b)
		if err != nil {
			t.Fatalf("served bytes are not a valid batch: %v", err)
		}
		out = append(out, h)
		b = b[h.size:]
	}
	return out
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x706c6f67)) }

func nodeRand(seed uint64) *node.Rand { return node.NewRand(rand.NewPCG(seed, 0x63726173)) }

func smallConfig() Config {
	c := DefaultConfig()
	c.SegmentBytes = 4096
	c.IndexIntervalBytes = 256
	return c
}
