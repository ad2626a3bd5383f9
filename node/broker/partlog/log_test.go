package partlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"herd/disk"
	"herd/node"
)

var tp0 = TopicPartition{"orders", 0}

// TestRoundTrip appends batches across several segments and reads them back
// from every offset with several size limits.
func TestRoundTrip(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	d := dr.open("kafka-logs", smallConfig())
	l := dr.create(d, tp0, nil)
	var want [][]byte
	var bases []int64
	next := int64(0)
	for i := range 60 {
		b := simpleBatch(1000+int64(i), 1+i%4, 40+i*3%200, fmt.Sprint("b", i))
		base, last := dr.appendSync(l, b)
		if base != next || last != base+int64(1+i%4)-1 {
			t.Fatalf("append %d: got [%d,%d], want base %d", i, base, last, next)
		}
		next = last + 1
		want = append(want, bytes.Clone(b))
		bases = append(bases, base)
	}
	if l.HighWatermark() != next || l.LogEndOffset() != next {
		t.Fatalf("hw %d leo %d, want %d", l.HighWatermark(), l.LogEndOffset(), next)
	}
	if l.SegmentCount() < 3 {
		t.Fatalf("expected several segments, got %d", l.SegmentCount())
	}
	checkAll := func(l *Log) {
		t.Helper()
		for off := int64(0); off < next; off++ {
			for _, maxBytes := range []int{0, 1, 300, 1 << 20} {
				res := dr.read(l, off, maxBytes, true)
				if res.Err != nil {
					t.Fatalf("read %d: %v", off, res.Err)
				}
				hs := splitBatches(t, res.Records)
				if len(hs) == 0 {
					t.Fatalf("read %d max %d: no batches", off, maxBytes)
				}
				if hs[0].baseOffset > off || hs[0].lastOffset() < off {
					t.Fatalf("read %d: first batch [%d,%d]", off, hs[0].baseOffset, hs[0].lastOffset())
				}
				if len(hs) > 1 && len(res.Records) > max(maxBytes, 0) {
					t.Fatalf("read %d max %d: %d bytes", off, maxBytes, len(res.Records))
				}
				at := 0
				for k, h := range hs {
					if k > 0 && h.baseOffset != hs[k-1].nextOffset() {
						t.Fatalf("read %d: offsets not dense", off)
					}
					idx := indexOf(bases, h.baseOffset)
					if idx < 0 || !bytes.Equal(res.Records[at:at+h.size], want[idx]) {
						t.Fatalf("read %d: batch at %d differs from what was appended", off, h.baseOffset)
					}
					at += h.size
				}
				if !minOneOK(res, maxBytes, false) {
					t.Fatal("unreachable")
				}
			}
			// Without minOneBatch a first batch larger than maxBytes gives nothing.
			res := dr.read(l, off, 1, false)
			if res.Err != nil || len(res.Records) != 0 {
				t.Fatalf("read %d max 1 without minOneBatch: %v %d bytes", off, res.Err, len(res.Records))
			}
		}
		res := dr.read(l, next, 100, true)
		if res.Err != nil || len(res.Records) != 0 || res.HighWatermark != next {
			t.Fatalf("read at hw: %+v", res)
		}
		for _, off := range []int64{next + 1, -1, 1 << 40} {
			if res := dr.read(l, off, 100, true); !errors.Is(res.Err, ErrOffsetOutOfRange) {
				t.Fatalf("read %d: %v, want out of range", off, res.Err)
			}
		}
	}
	checkAll(l)
	// Clean restart: same answers, and nothing was rescanned.
	dr.close(d)
	dr2 := newDriver(t, fs)
	d2 := dr2.open("kafka-logs", smallConfig())
	if dr2.logged("rescanning") {
		t.Errorf("clean restart rescanned: %v", dr2.logs)
	}
	l2 := d2.Log(tp0)
	if l2 == nil || l2.LogEndOffset() != next || l2.HighWatermark() != next || l2.LogStartOffset() != 0 {
		t.Fatalf("after restart: %+v", l2)
	}
	dr = dr2
	checkAll(l2)
	// Appends continue densely after a clean restart.
	b := simpleBatch(5000, 2, 50, "after")
	if base, _ := dr.appendSync(l2, b); base != next {
		t.Fatalf("append after restart at %d, want %d", base, next)
	}
	// Crash-free but unclean restart (kill): everything is rescanned and kept.
	dr.drop()
	dr3 := newDriver(t, fs)
	d3 := dr3.open("kafka-logs", smallConfig())
	if l3 := d3.Log(tp0); l3.LogEndOffset() != next+2 {
		t.Fatalf("after kill: leo %d", l3.LogEndOffset())
	}
}

func minOneOK(ReadResult, int, bool) bool { return true }

func indexOf(xs []int64, x int64) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}

// TestValidation: every malformed batch is refused with the right error
// and nothing is written.
func TestValidation(t *testing.T) {
	dr := newDriver(t, disk.NewSimFS())
	cfg := DefaultConfig()
	cfg.MaxMessageBytes = 2000
	d := dr.open("", cfg)
	l := dr.create(d, tp0, nil)
	good := func() []byte { return simpleBatch(1, 3, 10, "x") }
	recrc := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrInvalidRecord},
		{"short", good()[:30], ErrCorrupt},
		{"truncated", good()[:len(good())-1], ErrCorrupt},
		{"trailing garbage", append(good(), 1, 2, 3), ErrCorrupt},
		{"bad crc", func() []byte { b := good(); b[len(b)-1] ^= 1; return b }(), ErrCorrupt},
		{"magic 1", func() []byte { b := good(); b[offMagic] = 1; return b }(), ErrUnsupportedMagic},
		{"magic 0", func() []byte { b := good(); b[offMagic] = 0; return b }(), ErrUnsupportedMagic},
		{"magic 3", func() []byte { b := good(); b[offMagic] = 3; return b }(), ErrCorrupt},
		{"length too small", func() []byte { b := good(); binary.BigEndian.PutUint32(b[offBatchLength:], 10); return b }(), ErrCorrupt},
		{"zero records", func() []byte {
			b := good()
			binary.BigEndian.PutUint32(b[offRecordCount:], 0)
			binary.BigEndian.PutUint32(b[offLastDelta:], 0xffffffff)
			return recrc(b)
		}(), ErrInvalidRecord},
		{"delta mismatch", func() []byte { b := good(); binary.BigEndian.PutUint32(b[offLastDelta:], 5); return recrc(b) }(), ErrInvalidRecord},
		{"count beyond bytes", func() []byte {
			b := good()
			binary.BigEndian.PutUint32(b[offRecordCount:], 1000)
			binary.BigEndian.PutUint32(b[offLastDelta:], 999)
			return recrc(b)
		}(), ErrInvalidRecord},
		{"control batch", func() []byte { b := good(); b[offAttributes+1] |= attrControl; return recrc(b) }(), ErrInvalidRecord},
		{"unknown codec", func() []byte { b := good(); b[offAttributes+1] |= 7; return recrc(b) }(), ErrInvalidRecord},
		{"too large", simpleBatch(1, 2, 1500, "big"), ErrTooLarge},
		{"second batch bad", append(good(), func() []byte { b := good(); b[70] ^= 4; return b }()...), ErrCorrupt},
	}
	for _, c := range cases {
		_, _, _, err := l.Append(c.b, 0, func(error) { t.Errorf("%s: done called for a refused append", c.name) })
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	dr.run()
	if l.LogEndOffset() != 0 || l.Size() != 0 {
		t.Fatalf("refused appends changed the log: leo %d size %d", l.LogEndOffset(), l.Size())
	}
	// Two batches in one append are fine; only the two broker fields change.
	a, b := good(), simpleBatch(7, 2, 5, "y")
	in := append(bytes.Clone(a), b...)
	dr.appendSync(l, in)
	dr.appendSync(l, bytes.Clone(in))
	res := dr.read(l, 5, 1<<20, false)
	hs := splitBatches(t, res.Records)
	if len(hs) != 2 || hs[0].baseOffset != 5 || hs[1].baseOffset != 8 {
		t.Fatalf("read back %+v", hs)
	}
	got := res.Records[:len(a)]
	if !bytes.Equal(got[offLeaderEpoch+4:], a[offLeaderEpoch+4:]) || !bytes.Equal(got[offBatchLength:offLeaderEpoch], a[offBatchLength:offLeaderEpoch]) {
		t.Fatal("bytes other than baseOffset and partitionLeaderEpoch changed")
	}
	if int32(binary.BigEndian.Uint32(got[offLeaderEpoch:])) != 3 {
		t.Fatal("leader epoch not stamped")
	}
}

// TestLogAppendTime: the broker's clock becomes maxTimestamp, the batch is
// marked LogAppendTime and its CRC stays valid.
func TestLogAppendTime(t *testing.T) {
	dr := newDriver(t, disk.NewSimFS())
	d := dr.open("", DefaultConfig())
	l := dr.create(d, tp0, map[string]string{"message.timestamp.type": "LogAppendTime"})
	if !l.Config().LogAppendTime {
		t.Fatal("override not applied")
	}
	_, _, lat, err := l.Append(simpleBatch(5, 2, 10, "t"), 0, func(error) {})
	if err != nil || lat != dr.wall {
		t.Fatalf("append: %v, logAppendTime %d want %d", err, lat, dr.wall)
	}
	dr.run()
	res := dr.read(l, 0, 1000, true)
	hs := splitBatches(t, res.Records) // checks the CRC
	if hs[0].maxTimestamp != dr.wall || hs[0].attributes&attrLogAppendTime == 0 {
		t.Fatalf("batch not stamped: %+v", hs[0])
	}
	if off, ts, err := dr.offsetForTime(l, 0); err != nil || off != 0 || ts != dr.wall {
		t.Fatalf("OffsetForTimestamp: %d %d %v", off, ts, err)
	}
	// The override survives a restart.
	dr.close(d)
	d = newDriver(t, nil).reopenOn(t, dr, "", DefaultConfig())
	if !d.Log(tp0).Config().LogAppendTime || d.Log(tp0).Overrides()["message.timestamp.type"] != "LogAppendTime" {
		t.Fatal("override lost over a restart")
	}
}

// reopenOn opens a fresh driver on prev's disk (what a restart of the
// process sees: the page cache survives).
func (dr *driver) reopenOn(t *testing.T, prev *driver, path string, cfg Config) *Dir {
	*dr = *newDriver(t, prev.fs)
	return dr.open(path, cfg)
}

// TestOffsetForTimestamp checks ListOffsets by time against a linear scan.
func TestOffsetForTimestamp(t *testing.T) {
	dr := newDriver(t, disk.NewSimFS())
	d := dr.open("", smallConfig())
	l := dr.create(d, tp0, nil)
	type rec struct{ off, ts int64 }
	var all []rec
	rng := newRand(7)
	ts := int64(10_000)
	for i := range 80 {
		n := 1 + rng.IntN(4)
		recs := make([]record, n)
		for k := range recs {
			recs[k] = record{tsDelta: int64(rng.IntN(50)) - 10, value: []byte(fmt.Sprint(i, k))}
		}
		base, _ := dr.appendSync(l, makeBatch(ts, recs))
		for k, r := range recs {
			all = append(all, rec{base + int64(k), ts + r.tsDelta})
		}
		ts += int64(rng.IntN(40))
	}
	for target := int64(9_000); target < ts+100; target += 7 {
		wantOff, wantTS := int64(-1), int64(-1)
		for _, r := range all {
			if r.ts >= target {
				wantOff, wantTS = r.off, r.ts
				break
			}
		}
		off, got, err := dr.offsetForTime(l, target)
		if err != nil || off != wantOff || got != wantTS {
			t.Fatalf("ts %d: got (%d, %d, %v), want (%d, %d)", target, off, got, err, wantOff, wantTS)
		}
	}
}

// TestFlushPolicy: with flush.messages=1 the high watermark (and done)
// wait for the fsync; with the default they follow the write.
func TestFlushPolicy(t *testing.T) {
	for _, fm := range []int64{0, 1, 3} {
		t.Run(fmt.Sprint("flush.messages=", fm), func(t *testing.T) {
			dr := newDriver(t, disk.NewSimFS())
			cfg := DefaultConfig()
			cfg.FlushMessages = fm
			d := dr.open("", cfg)
			l := dr.create(d, tp0, nil)
			hwSeen := 0
			d.OnHighWatermark(func(*Log) { dr.checkCallback(); hwSeen++ })
			for i := range 4 {
				acked := false
				_, last, _, err := l.Append(simpleBatch(1, 1, 10, "f"), 0, func(err error) {
					dr.checkCallback()
					if err != nil {
						t.Fatal(err)
					}
					acked = true
					if l.HighWatermark() != l.LogEndOffset() {
						t.Fatal("done called before the high watermark covered the append")
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				synced := false
				for dr.pending() > 0 {
					kind := dr.q[dr.head].op.Kind
					dr.step()
					if kind == node.OpSync {
						synced = true
					}
					if acked {
						break
					}
				}
				needSync := fm > 0 && int64(i+1)%fm == 0
				if !acked || l.HighWatermark() != last+1 {
					t.Fatalf("append %d not acknowledged", i)
				}
				if needSync && !synced {
					t.Fatalf("append %d acknowledged before its fsync", i)
				}
				if !needSync && synced {
					t.Fatalf("append %d waited for an fsync it did not need", i)
				}
				dr.run()
			}
			if hwSeen != 4 {
				t.Fatalf("OnHighWatermark called %d times, want 4", hwSeen)
			}
		})
	}
}

// TestFlushMs: flush.ms fsyncs from Tick and advances the recovery point.
func TestFlushMs(t *testing.T) {
	dr := newDriver(t, disk.NewSimFS())
	cfg := DefaultConfig()
	cfg.FlushMs = 1000
	d := dr.open("", cfg)
	l := dr.create(d, tp0, nil)
	dr.appendSync(l, simpleBatch(dr.wall, 5, 10, "f"))
	if l.RecoveryPoint() != 0 {
		t.Fatalf("recovery point %d before any flush", l.RecoveryPoint())
	}
	dr.tick(d, 500*time.Millisecond)
	dr.run()
	if l.RecoveryPoint() != 0 {
		t.Fatal("flushed too early")
	}
	dr.tick(d, 600*time.Millisecond)
	dr.run()
	if l.RecoveryPoint() != 5 {
		t.Fatalf("recovery point %d after flush.ms, want 5", l.RecoveryPoint())
	}
}

// syncedLogWithOneBatch opens a dir that syncs every append, with one log
// holding one synced batch.
func syncedLogWithOneBatch(t *testing.T) (*disk.SimFS, *driver, *Dir, *Log) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	cfg := DefaultConfig()
	cfg.FlushMessages = 1
	d := dr.open("", cfg)
	l := dr.create(d, tp0, nil)
	dr.appendSync(l, simpleBatch(1, 1, 10, "a"))
	return fs, dr, d, l
}

// TestFailedSyncIsFatal: a failed fsync answers the waiting append with
// ErrStorage and every later call fails.
func TestFailedSyncIsFatal(t *testing.T) {
	fs, dr, _, l := syncedLogWithOneBatch(t)
	fs.FailNext(node.OpSync, nil)
	var got error
	if _, _, _, err := l.Append(simpleBatch(1, 1, 10, "b"), 0, func(err error) { dr.checkCallback(); got = err }); err != nil {
		t.Fatal(err)
	}
	dr.run()
	if !errors.Is(got, ErrStorage) {
		t.Fatalf("append after failed fsync: %v", got)
	}
	if l.HighWatermark() != 1 {
		t.Fatalf("hw moved past an unsynced append: %d", l.HighWatermark())
	}
	if _, _, _, err := l.Append(simpleBatch(1, 1, 10, "c"), 0, func(error) {}); !errors.Is(err, ErrStorage) {
		t.Fatalf("later append: %v", err)
	}
	if res := dr.read(l, 0, 100, true); !errors.Is(res.Err, ErrStorage) {
		t.Fatalf("later read: %v", res.Err)
	}
}

// A checkpoint file whose sync failed is not renamed to its live name,
// even when the disk runs the ops queued behind the failure before the dir
// learns of it (the shell's worker does): before, the rename was queued
// with the write and ran all the same, and the live file then held data
// that no sync had made durable, which a power loss could leave malformed
// and the next start would ignore.
func TestFailedCheckpointSyncKeepsTheLiveFile(t *testing.T) {
	fs, dr, d, l := syncedLogWithOneBatch(t)
	d.writeCheckpoints(nil)
	dr.run()
	before, err := fs.ReadAt(recoveryPointFile, 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	dr.appendSync(l, simpleBatch(1, 1, 10, "b")) // the recovery point moves on
	dr.runAhead = true
	fs.FailNext(node.OpSync, nil) // the first checkpoint file's
	d.writeCheckpoints(nil)
	dr.run()
	if d.failed == nil {
		t.Fatal("a failed checkpoint sync left the dir online")
	}
	after, err := fs.ReadAt(recoveryPointFile, 0, 4096)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the live recovery-point file changed after its replacement's sync failed (%v):\n%q\n%q", err, before, after)
	}
}

// TestRetention: by size and by time, oldest segments go, the log start
// offset follows and is checkpointed, and the active segment is never
// deleted while it holds data above the high watermark.
func TestRetention(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	dr.trash.StepBytes = 512 // the deleted segments are emptied in steps
	d := dr.open("data", smallConfig())
	l := dr.create(d, tp0, map[string]string{"retention.bytes": "10000"})
	for i := range 100 {
		dr.appendSync(l, simpleBatch(dr.wall, 2, 100, fmt.Sprint(i)))
	}
	size := l.Size()
	dr.tick(d, time.Second)
	dr.run()
	// Kafka's rule: delete whole segments while the rest stays above the
	// limit, so up to one segment more than retention.bytes remains.
	if l.Size() > 10000+smallConfig().SegmentBytes || l.Size() == size || l.LogStartOffset() == 0 {
		t.Fatalf("size retention: size %d -> %d, start %d", size, l.Size(), l.LogStartOffset())
	}
	if res := dr.read(l, 0, 100, true); !errors.Is(res.Err, ErrOffsetOutOfRange) {
		t.Fatalf("read below start: %v", res.Err)
	}
	if res := dr.read(l, l.LogStartOffset(), 100, true); res.Err != nil || len(res.Records) == 0 {
		t.Fatalf("read at start: %v", res.Err)
	}
	ents, _ := fs.List("data/orders-0")
	for _, e := range ents {
		if base, ok := parseSegmentName(e.Name, logSuffix); ok && base < l.LogStartOffset() {
			t.Fatalf("deleted segment %s still there", e.Name)
		}
		if strings.HasSuffix(e.Name, deletedSuffix) {
			t.Fatalf("%s left behind", e.Name)
		}
	}
	if dr.trimmedSteps == 0 {
		t.Fatal("deleted segments were removed whole, not emptied in steps")
	}
	// Time: make everything old; all data goes, the end offset stays.
	l2 := dr.create(d, TopicPartition{"events", 3}, map[string]string{"retention.ms": "60000"})
	for i := range 30 {
		dr.appendSync(l2, simpleBatch(dr.wall, 1, 300, fmt.Sprint(i)))
	}
	leo := l2.LogEndOffset()
	dr.tick(d, 30*time.Second)
	dr.run()
	if l2.LogStartOffset() != 0 {
		t.Fatal("time retention deleted young segments")
	}
	dr.tick(d, 31*time.Second)
	dr.run()
	if l2.LogStartOffset() != leo || l2.LogEndOffset() != leo || l2.Size() != 0 {
		t.Fatalf("time retention: start %d leo %d (want %d) size %d", l2.LogStartOffset(), l2.LogEndOffset(), leo, l2.Size())
	}
	dr.tick(d, 10*time.Second) // checkpoint interval passed
	dr.run()
	ck, _ := fs.ReadAt("data/"+logStartFile, 0, 1000)
	want := fmt.Sprintf("0\n2\nevents 3 %d\norders 0 %d\n", leo, l.LogStartOffset())
	if string(ck) != want {
		t.Fatalf("log-start-offset-checkpoint:\n%q\nwant\n%q", ck, want)
	}
	// After a crash the log restarts at its end offset, not at zero.
	crashed := fs.Crash(nodeRand(1))
	dr2 := newDriver(t, crashed)
	d2 := dr2.open("data", smallConfig())
	if got := d2.Log(TopicPartition{"events", 3}); got.LogEndOffset() != leo || got.LogStartOffset() != leo {
		t.Fatalf("after crash: start %d leo %d, want %d", got.LogStartOffset(), got.LogEndOffset(), leo)
	}
}

// TestFlushInBackground: a roll's flush runs in the background lane, so
// appends after it complete while its syncs wait; the recovery point moves
// only once they ran; and a segment (or a whole log) deleted before its
// sync ran makes that sync find nothing, which must not take the directory
// offline.
func TestFlushInBackground(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	d := dr.open("data", smallConfig())
	l := dr.create(d, tp0, map[string]string{"retention.bytes": "5000"})
	dr.holdBG = true
	for i := range 40 {
		dr.appendSync(l, simpleBatch(dr.wall, 2, 100, fmt.Sprint(i)))
	}
	if l.SegmentCount() < 3 || len(dr.bg) == 0 {
		t.Fatalf("%d segments, %d background ops held: the roll's flush did not go to the background", l.SegmentCount(), len(dr.bg))
	}
	if l.RecoveryPoint() != 0 {
		t.Fatalf("recovery point %d before any flush's syncs ran", l.RecoveryPoint())
	}
	// Retention deletes the oldest segments while their syncs still wait.
	dr.tick(d, time.Second)
	dr.run()
	if l.LogStartOffset() == 0 {
		t.Fatal("retention deleted nothing")
	}
	dr.releaseBG()
	dr.run()
	if d.failed != nil {
		t.Fatalf("a sync of a deleted segment took the dir offline: %v", d.failed)
	}
	if l.RecoveryPoint() == 0 {
		t.Fatal("the flushes ran, the recovery point did not move")
	}
	// A log deleted while its flush waits.
	l2 := dr.create(d, TopicPartition{"events", 1}, nil)
	dr.holdBG = true
	for i := range 20 {
		dr.appendSync(l2, simpleBatch(dr.wall, 2, 100, fmt.Sprint(i)))
	}
	if len(dr.bg) == 0 {
		t.Fatal("no background op held")
	}
	var err error = errors.New("not called")
	d.DeleteLog(TopicPartition{"events", 1}, func(e error) { dr.checkCallback(); err = e })
	dr.run()
	dr.releaseBG()
	dr.run()
	if err != nil || d.failed != nil {
		t.Fatalf("DeleteLog: %v; dir: %v", err, d.failed)
	}
	dr.appendSync(l, simpleBatch(dr.wall, 1, 10, "after"))
	dr.close(d)
}

// TestOnDiskFormat checks the files an operator sees.
func TestOnDiskFormat(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	cfg := smallConfig()
	d := dr.open("kafka-logs", cfg)
	l := dr.create(d, TopicPartition{"my-topic.v2", 12}, map[string]string{"retention.ms": "1000000", "cleanup.policy": "delete"})
	for i := range 40 {
		dr.appendSync(l, simpleBatch(1_000_000+int64(i), 2, 100, fmt.Sprint(i)))
	}
	dr.close(d)
	ents, _ := fs.List("kafka-logs")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	wantTop := []string{".kafka_cleanshutdown", "log-start-offset-checkpoint", "my-topic.v2-12", "recovery-point-offset-checkpoint", "replication-offset-checkpoint"}
	if fmt.Sprint(names) != fmt.Sprint(wantTop) {
		t.Fatalf("dir has %v, want %v", names, wantTop)
	}
	for _, f := range []string{"recovery-point-offset-checkpoint", "replication-offset-checkpoint", "log-start-offset-checkpoint"} {
		b, _ := fs.ReadAt("kafka-logs/"+f, 0, 1000)
		want := "0\n1\nmy-topic.v2 12 80\n"
		if f == "log-start-offset-checkpoint" {
			want = "0\n1\nmy-topic.v2 12 0\n"
		}
		if string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}
	meta, _ := fs.ReadAt("kafka-logs/my-topic.v2-12/partition.metadata", 0, 1000)
	if string(meta) != "version: 0\ntopic_id: ih8DdxAiQ56xXAD_EjRWeA\n" {
		t.Errorf("partition.metadata = %q", meta)
	}
	over, _ := fs.ReadAt("kafka-logs/my-topic.v2-12/"+topicOverridesFile, 0, 1000)
	if !strings.HasSuffix(string(over), "cleanup.policy=delete\nretention.ms=1000000\n") {
		t.Errorf("overrides = %q", over)
	}
	pents, _ := fs.List("kafka-logs/my-topic.v2-12")
	var segs int
	for _, e := range pents {
		base, ok := parseSegmentName(e.Name, logSuffix)
		if !ok {
			continue
		}
		segs++
		if e.Size > cfg.SegmentBytes {
			t.Errorf("%s is %d bytes, over segment.bytes", e.Name, e.Size)
		}
		// The index files exist and agree with the log.
		ib, err1 := fs.ReadAt("kafka-logs/my-topic.v2-12/"+segmentName(base, indexSuffix), 0, 1<<20)
		tb, err2 := fs.ReadAt("kafka-logs/my-topic.v2-12/"+segmentName(base, timeIndexSuffix), 0, 1<<20)
		lb, _ := fs.ReadAt("kafka-logs/my-topic.v2-12/"+e.Name, 0, 1<<20)
		if err1 != nil || err2 != nil {
			t.Fatalf("index files of %s: %v %v", e.Name, err1, err2)
		}
		offs, ok1 := decodeOffsetIndex(ib, int64(len(lb)), 1<<31)
		times, ok2 := decodeTimeIndex(tb, 1<<31)
		if !ok1 || !ok2 || len(offs) == 0 || len(times) == 0 {
			t.Fatalf("index of %s malformed: %d %d", e.Name, len(ib), len(tb))
		}
		for _, ie := range offs {
			h, err := parseBatch(lb[ie.pos:])
			if err != nil || h.lastOffset() != base+int64(ie.rel) {
				t.Fatalf("index entry %+v of %s does not point at its batch", ie, e.Name)
			}
		}
	}
	if segs < 3 {
		t.Fatalf("only %d segments", segs)
	}
}

// TestIndexRebuild: damaged or missing index files of sealed segments are
// caches; reads rebuild them from the log.
func TestIndexRebuild(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	d := dr.open("", smallConfig())
	l := dr.create(d, tp0, nil)
	for i := range 200 {
		dr.appendSync(l, simpleBatch(1000+int64(i), 1, 100, fmt.Sprint(i)))
	}
	dr.close(d)
	// Garble one index, remove another.
	if err := fs.WriteAt("orders-0/"+segmentName(0, indexSuffix), 0, []byte{9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	ents, _ := fs.List("orders-0")
	var second int64 = -1
	for _, e := range ents {
		if b, ok := parseSegmentName(e.Name, logSuffix); ok && b > 0 && second < 0 {
			second = b
		}
	}
	if err := fs.Remove("orders-0/" + segmentName(second, timeIndexSuffix)); err != nil {
		t.Fatal(err)
	}
	dr = newDriver(t, fs)
	d = dr.open("", smallConfig())
	l = d.Log(tp0)
	for off := int64(0); off < 200; off++ {
		res := dr.read(l, off, 1, true)
		hs := splitBatches(t, res.Records)
		if res.Err != nil || len(hs) != 1 || hs[0].baseOffset != off {
			t.Fatalf("read %d after index damage: %v %+v", off, res.Err, hs)
		}
	}
	if off, _, err := dr.offsetForTime(l, 1100); err != nil || off != 100 {
		t.Fatalf("OffsetForTimestamp: %d %v", off, err)
	}
}

// TestDeleteLog: the directory goes, the checkpoints forget it, and the
// partition can be created again from scratch.
func TestDeleteLog(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	dr.trash.StepBytes = 512
	d := dr.open("", smallConfig())
	l := dr.create(d, tp0, nil)
	for i := range 20 {
		dr.appendSync(l, simpleBatch(1, 1, 300, fmt.Sprint(i)))
	}
	var pendingErr error
	if _, _, _, err := l.Append(simpleBatch(1, 1, 10, "late"), 0, func(err error) { dr.checkCallback(); pendingErr = err }); err != nil {
		t.Fatal(err)
	}
	var err error = errors.New("not called")
	d.DeleteLog(tp0, func(e error) { dr.checkCallback(); err = e })
	dr.run()
	if err != nil || !errors.Is(pendingErr, ErrClosed) {
		t.Fatalf("DeleteLog: %v, pending append: %v", err, pendingErr)
	}
	if d.Log(tp0) != nil || len(d.Logs()) != 0 {
		t.Fatal("log still listed")
	}
	ents, _ := fs.List("")
	for _, e := range ents {
		if e.IsDir {
			t.Fatalf("%s left behind", e.Name)
		}
	}
	if dr.trimmedSteps == 0 {
		t.Fatal("the deleted log's files were removed whole, not emptied in steps")
	}
	if _, _, _, err := l.Append(simpleBatch(1, 1, 10, "x"), 0, func(error) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append to a deleted log: %v", err)
	}
	l = dr.create(d, tp0, nil)
	if l.LogEndOffset() != 0 {
		t.Fatal("recreated log not empty")
	}
	// A deletion interrupted by a crash is finished once the Dir is open,
	// by the trash, step by step.
	for i := range 20 {
		dr.appendSync(l, simpleBatch(1, 1, 300, fmt.Sprint("y", i)))
	}
	d.DeleteLog(tp0, func(error) {})
	for i := 0; i < 3; i++ { // the rename and its directory sync
		dr.step()
	}
	dr.drop()
	dr2 := newDriver(t, fs.Crash(nodeRand(3)))
	dr2.trash.StepBytes = 512
	d2 := dr2.open("", smallConfig())
	if d2.Log(tp0) != nil {
		t.Fatal("deleted log came back")
	}
	if dr2.trimmedSteps == 0 {
		t.Fatal("the interrupted deletion's files were removed whole, not emptied in steps")
	}
	ents, _ = dr2.fs.List("")
	for _, e := range ents {
		if e.IsDir {
			t.Fatalf("%s left behind after recovery", e.Name)
		}
	}
}

// TestRecoveryTruncates: after an unclean stop, a damaged batch and
// everything after it is cut off (file and later segments alike), a
// zero-filled tail is ignored, and appends continue from there.
func TestRecoveryTruncates(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	d := dr.open("", smallConfig())
	l := dr.create(d, tp0, nil)
	var bases []int64
	for i := range 40 {
		b, _ := dr.appendSync(l, simpleBatch(dr.wall, 2, 150, fmt.Sprint(i)))
		bases = append(bases, b)
	}
	dr.drop() // killed: no clean-shutdown marker
	// Zeros past the end of the active segment, as a crash can leave.
	act := l.active()
	path := "orders-0/" + segmentName(act.base, logSuffix)
	if err := fs.WriteAt(path, act.size, make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	// A bit flip inside batch 25, in a sealed segment before the active one.
	victim := l.segmentFor(bases[25])
	if victim == act {
		t.Fatal("test needs batch 25 outside the active segment")
	}
	data, _ := fs.ReadAt("orders-0/"+segmentName(victim.base, logSuffix), 0, 1<<20)
	pos := 0
	for {
		h, err := parseBatch(data[pos:])
		if err != nil {
			t.Fatal(err)
		}
		if h.baseOffset == bases[25] {
			break
		}
		pos += h.size
	}
	if err := fs.Corrupt("orders-0/"+segmentName(victim.base, logSuffix), int64(pos+100), 3); err != nil {
		t.Fatal(err)
	}
	dr = newDriver(t, fs)
	d = dr.open("", smallConfig())
	l = d.Log(tp0)
	if l.LogEndOffset() != bases[25] || l.HighWatermark() != bases[25] {
		t.Fatalf("recovered to %d, want %d", l.LogEndOffset(), bases[25])
	}
	if !dr.logged("truncating the log at offset") {
		t.Errorf("no truncation logged: %v", dr.logs)
	}
	ents, _ := fs.List("orders-0")
	for _, e := range ents {
		if b, ok := parseSegmentName(e.Name, logSuffix); ok && b > victim.base {
			t.Fatalf("segment %s after the damage survived", e.Name)
		}
	}
	res := dr.read(l, bases[24], 1<<20, true)
	if hs := splitBatches(t, res.Records); res.Err != nil || len(hs) != 1 || hs[0].baseOffset != bases[24] {
		t.Fatalf("read of the last good batch: %v %+v", res.Err, hs)
	}
	if base, _ := dr.appendSync(l, simpleBatch(dr.wall, 1, 10, "new")); base != bases[25] {
		t.Fatalf("append after truncation at %d, want %d", base, bases[25])
	}
	if l.TopicID() != testTopicID {
		t.Fatal("topic id lost")
	}
}

// TestFormatsRejectGarbage: the small parsers refuse what a writer could
// not have produced.
func TestFormatsRejectGarbage(t *testing.T) {
	for _, s := range []string{"", "0\n", "1\n0\n", "0\n2\na 0 1\n", "0\n1\na b 1\n", "0\n1\na 0 -1\n", "0\n1\na/b 0 1\n", "0\n1\na 0 1 2\n"} {
		if _, ok := decodeCheckpoint([]byte(s)); ok {
			t.Errorf("checkpoint %q accepted", s)
		}
	}
	if m, ok := decodeCheckpoint(encodeCheckpoint([]checkpointEntry{{TopicPartition{"a-b", 3}, 7}})); !ok || m[TopicPartition{"a-b", 3}] != 7 {
		t.Error("checkpoint round trip")
	}
	for _, s := range []string{"t-1", "a.b_c-0", "x--2"} {
		if _, ok := parsePartitionDirName(s); !ok {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"t", "-1", "t-", "t-01", "t-x", "t/u-1", "..-1", "t-+1"} {
		if _, ok := parsePartitionDirName(s); ok {
			t.Errorf("%q accepted", s)
		}
	}
	if _, ok := decodePartitionMetadata([]byte("version: 1\ntopic_id: ih8DdxAiQ56xXAD_EjRWeA\n")); ok {
		t.Error("metadata version 1 accepted")
	}
	if id, ok := decodePartitionMetadata(encodePartitionMetadata(testTopicID)); !ok || id != testTopicID {
		t.Error("metadata round trip")
	}
	if _, err := applyOverrides(DefaultConfig(), map[string]string{"segment.bytes": "x"}); !errors.Is(err, ErrInvalidConfig) {
		t.Error("bad segment.bytes accepted")
	}
	if _, err := applyOverrides(DefaultConfig(), map[string]string{"message.timestamp.type": "Sometimes"}); !errors.Is(err, ErrInvalidConfig) {
		t.Error("bad timestamp type accepted")
	}
	cfg, err := applyOverrides(DefaultConfig(), map[string]string{"retention.ms": "-1", "flush.messages": "1", "unknown.key": "kept"})
	if err != nil || cfg.RetentionMs != -1 || cfg.FlushMessages != 1 {
		t.Errorf("overrides: %+v %v", cfg, err)
	}
	if _, ok := decodeOffsetIndex([]byte{0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 10}, 100, 100); ok {
		t.Error("offset index with a repeated offset accepted")
	}
	if _, ok := decodeOffsetIndex([]byte{0, 0, 0, 5, 0, 0, 0, 200}, 100, 100); ok {
		t.Error("offset index entry beyond the log accepted")
	}
}

// TestIndexChunks: the in-memory indexes keep every entry across chunk
// boundaries, time entries whose timestamps span more than 32 bits of
// milliseconds included, and encode to the file formats byte for byte.
func TestIndexChunks(t *testing.T) {
	var offs []indexEntry
	var times []timeEntry
	ix := &segIndex{}
	ts := int64(1_700_000_000_000)
	for i := range 3*indexChunk + 17 {
		oe := indexEntry{rel: uint32(10 * i), pos: uint32(4096 * i)}
		switch {
		case i == indexChunk+5:
			ts += 1 << 33 // a wide chunk
		case i == 2*indexChunk:
			ts = math.MaxInt64 - 1<<20 // deltas still fit from a new chunk's base
		}
		ts += int64(i % 3)
		ts++
		te := timeEntry{ts: ts, rel: uint32(10*i + 3)}
		offs, times = append(offs, oe), append(times, te)
		ix.offsets.push(oe)
		ix.times.push(te)
	}
	for _, x := range []*segIndex{ix, newSegIndex(offs, times)} {
		if x.offsets.len() != len(offs) || x.times.len() != len(times) {
			t.Fatalf("lengths %d %d", x.offsets.len(), x.times.len())
		}
		if !slices.Equal(x.offsets.all(), offs) || !slices.Equal(x.times.all(), times) {
			t.Fatal("entries differ")
		}
		ob, tb := encodeOffsetIndex(&x.offsets), encodeTimeIndex(&x.times)
		o2, ok1 := decodeOffsetIndex(ob, 1<<40, 1<<40)
		t2, ok2 := decodeTimeIndex(tb, 1<<40)
		if !ok1 || !ok2 || !slices.Equal(o2, offs) || !slices.Equal(t2, times) {
			t.Fatal("encoding does not round-trip")
		}
		if len(ob) != 8*len(offs) || len(tb) != 12*len(times) ||
			binary.BigEndian.Uint64(tb[12*(len(times)-1):]) != uint64(times[len(times)-1].ts) {
			t.Fatal("encoded sizes or bytes wrong")
		}
		for _, i := range []int{0, 1, indexChunk - 1, indexChunk, 2*indexChunk + 3, len(offs) - 1} {
			if got := x.lookup(offs[i].rel); got != int64(offs[i].pos) {
				t.Fatalf("lookup(%d) = %d", offs[i].rel, got)
			}
			if got := x.lookupTime(times[i].ts); i > 0 && got != times[i-1].rel {
				t.Fatalf("lookupTime(%d) = %d", times[i].ts, got)
			}
		}
	}
	if len(ix.times.chunks) != 4 || ix.times.chunks[1].wide == nil || ix.times.chunks[2].wide != nil {
		t.Fatal("chunk representation unexpected")
	}
}

// TestReadWindows: reads of batches of very different sizes (big ones
// skipped or stopped at from their headers, before their bodies are read)
// return exactly the batches a model says, in the process that appended
// them and after a clean reopen (where served batches' CRCs are checked).
func TestReadWindows(t *testing.T) {
	fs := disk.NewSimFS()
	dr := newDriver(t, fs)
	cfg := DefaultConfig()
	cfg.SegmentBytes = 400 << 10
	cfg.IndexIntervalBytes = 4096
	d := dr.open("", cfg)
	l := dr.create(d, tp0, nil)
	rnd := newRand(7)
	type span struct{ base, next, size int64 }
	var batches []span
	for i := range 150 {
		n, size := 1+rnd.IntN(5), 20+rnd.IntN(100)
		if rnd.IntN(4) == 0 {
			n, size = 20+rnd.IntN(60), 1000+rnd.IntN(2000) // 20 KB - 200 KB
		}
		b := simpleBatch(dr.wall, n, size, fmt.Sprint(i))
		base, last := dr.appendSync(l, b)
		batches = append(batches, span{base, last + 1, int64(len(b))})
	}
	check := func(l *Log) {
		t.Helper()
		for range 400 {
			off := rnd.Int64N(l.HighWatermark() + 1)
			maxBytes := []int{0, 100, 4096, 50 << 10, 150 << 10, 1 << 20}[rnd.IntN(6)]
			minOne := rnd.IntN(3) > 0
			res := dr.read(l, off, maxBytes, minOne)
			if res.Err != nil {
				t.Fatalf("read %d %d %v: %v", off, maxBytes, minOne, res.Err)
			}
			// The model: from the batch holding off, within its segment.
			var want []span
			total := int64(0)
			seg := l.segmentFor(off)
			for _, b := range batches {
				if b.next <= off || b.base < seg.base || b.base >= seg.next {
					continue
				}
				if total+b.size > int64(maxBytes) && !(total == 0 && minOne) {
					break
				}
				want = append(want, b)
				total += b.size
			}
			hs := splitBatches(t, res.Records)
			if len(hs) != len(want) {
				t.Fatalf("read %d %d %v: %d batches, want %d", off, maxBytes, minOne, len(hs), len(want))
			}
			for i, h := range hs {
				if h.baseOffset != want[i].base || int64(h.size) != want[i].size {
					t.Fatalf("read %d %d %v: batch %d is %d+%d, want %+v", off, maxBytes, minOne, i, h.baseOffset, h.size, want[i])
				}
			}
		}
	}
	check(l)
	dr.close(d)
	dr = newDriver(t, fs)
	d = dr.open("", cfg)
	check(d.Log(tp0))

	// After a clean shutdown nothing is scanned: a damaged batch in a
	// trusted segment is found by the read that would serve it.
	l = d.Log(tp0)
	victim := batches[len(batches)/3]
	seg := l.segmentFor(victim.base)
	pos := int64(0)
	for _, b := range batches {
		if b.base >= seg.base && b.base < victim.base {
			pos += b.size
		}
	}
	dr.close(d)
	if err := fs.Corrupt("orders-0/"+segmentName(seg.base, logSuffix), pos+70, 2); err != nil {
		t.Fatal(err)
	}
	dr = newDriver(t, fs)
	d = dr.open("", cfg)
	l = d.Log(tp0)
	if res := dr.read(l, victim.base, 1<<20, true); !errors.Is(res.Err, ErrStorage) {
		t.Fatalf("damaged batch served: %v, %d bytes", res.Err, len(res.Records))
	}
	if res := dr.read(l, victim.next, 1<<20, true); res.Err != nil || len(res.Records) == 0 {
		t.Fatalf("read after the damaged batch: %v", res.Err)
	}
}
