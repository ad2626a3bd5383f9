package trash

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"herd/disk"
	"herd/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// driver plays a Bin's owner: it runs the queued ops in order against a
// SimFS and delivers their completions, and fires the timer once nothing
// is queued. It records every op and timer as a line of trace.
type driver struct {
	t        *testing.T
	fs       *disk.SimFS
	q        []queued
	timer    time.Duration // pending timer (0: none)
	bin      *Bin
	trace    []string
	failures []error
	// traceAtFail is the trace's length when Fail was called.
	traceAtFail int
	inCall      bool // inside a call into the Bin: no callback may run
	// failOp makes the first op of this kind on a path with this suffix fail
	// with an I/O error.
	failKind node.DiskOpKind
	failPath string
	// crashAfter (>0) stops the run after that many ops; the caller then
	// crashes fs.
	crashAfter int
	executed   int
}

type queued struct {
	op   node.DiskOp
	done func(node.Event)
}

func newDriver(t *testing.T, cfg Config, timers bool) *driver {
	dr := &driver{t: t, fs: disk.NewSimFS()}
	if err := dr.fs.Mkdir("d"); err != nil {
		t.Fatal(err)
	}
	h := Host{
		Disk: func(op node.DiskOp, done func(node.Event)) {
			dr.q = append(dr.q, queued{op, done})
			line := fmt.Sprintf("%v %s", op.Kind, op.Path)
			if op.Kind == node.OpTruncate {
				line += fmt.Sprintf(" %d", op.Size)
			}
			if op.Background {
				line = "bg " + line
			}
			dr.trace = append(dr.trace, line)
		},
		Fail: func(err error) {
			dr.failures = append(dr.failures, err)
			dr.traceAtFail = len(dr.trace)
		},
	}
	if timers {
		h.SetTimer = func(d time.Duration) {
			dr.trace = append(dr.trace, fmt.Sprintf("timer %v", d))
			dr.timer = d
		}
	}
	dr.bin = New(h, cfg)
	return dr
}

// call runs fn (a call into the Bin) and checks nothing was delivered
// from inside it.
func (dr *driver) call(fn func()) {
	dr.inCall = true
	fn()
	dr.inCall = false
}

func (dr *driver) write(path string, size int) []byte {
	data := bytes.Repeat([]byte{byte(len(path))}, size)
	for i := range data {
		data[i] += byte(i)
	}
	if err := dr.fs.WriteAt(path, 0, data); err != nil {
		dr.t.Fatal(err)
	}
	if err := dr.fs.Sync(path); err != nil {
		dr.t.Fatal(err)
	}
	if err := dr.fs.SyncDir(node.Dir(path)); err != nil {
		dr.t.Fatal(err)
	}
	return data
}

// run delivers every op and fires timers until the Bin is idle (or
// crashAfter ops ran).
func (dr *driver) run() {
	for n := 0; ; n++ {
		if n > 100_000 {
			dr.t.Fatal("ops never stop coming")
		}
		if dr.crashAfter > 0 && dr.executed >= dr.crashAfter {
			return
		}
		if len(dr.q) == 0 {
			if dr.timer == 0 {
				return
			}
			dr.timer = 0
			dr.trace = append(dr.trace, "fire")
			dr.bin.Timer()
			continue
		}
		if dr.inCall {
			dr.t.Fatal("completion delivered from inside a call")
		}
		qo := dr.q[0]
		dr.q = dr.q[1:]
		ev := disk.Exec(dr.fs, 0, qo.op)
		if qo.op.Kind == dr.failKind && strings.HasSuffix(qo.op.Path, dr.failPath) {
			ev.Err = errors.Join(node.ErrIO, errors.New("injected"))
			dr.failKind = 0
		}
		dr.executed++
		qo.done(ev)
	}
}

func (dr *driver) exists(path string) bool {
	_, err := dr.fs.Stat(path)
	return err == nil
}

// TestDiscardInSteps: a discarded file is renamed, the rename made durable,
// then the file is truncated a step at a time, each step synced and a gap
// apart, then removed.
func TestDiscardInSteps(t *testing.T) {
	dr := newDriver(t, Config{StepBytes: 1000, Gap: 7 * time.Millisecond}, true)
	dr.write("d/a", 3500)
	dr.write("d/b", 600)
	dr.call(func() { dr.bin.Discard("d", []string{"d/a", "d/b"}) })
	if st := dr.bin.Stats(); st.Queued != 0 {
		t.Fatalf("queued before the rename is durable: %+v", st)
	}
	dr.run()
	want := []string{
		"rename d/a", "rename d/b", "bg syncdir d", "stat d/a.del", "stat d/b.del",
		"truncate d/a.del 2500", "bg sync d/a.del", "timer 7ms", "fire",
		"truncate d/a.del 1500", "bg sync d/a.del", "timer 7ms", "fire",
		"truncate d/a.del 500", "bg sync d/a.del", "timer 7ms", "fire",
		"remove d/a.del", "remove d/b.del", "timer 7ms", "fire",
	}
	if !slices.Equal(dr.trace, want) {
		t.Fatalf("trace:\n%s\nwant:\n%s", strings.Join(dr.trace, "\n"), strings.Join(want, "\n"))
	}
	if dr.exists("d/a") || dr.exists("d/a.del") || dr.exists("d/b.del") {
		t.Fatalf("files left: %v %v %v", dr.exists("d/a"), dr.exists("d/a.del"), dr.exists("d/b.del"))
	}
	st := dr.bin.Stats()
	if st.Emptied != 1 || st.Removed != 2 || st.Whole != 0 || st.Queued != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSmallFilesBackToBack: files smaller than a step are removed one after
// another until they add up to a step, then the Bin pauses.
func TestSmallFilesBackToBack(t *testing.T) {
	dr := newDriver(t, Config{StepBytes: 1000, Suffix: ".deleted"}, true)
	var paths []string
	for i := range 5 {
		p := fmt.Sprintf("d/f%d", i)
		dr.write(p, 400)
		paths = append(paths, p)
	}
	dr.call(func() { dr.bin.Discard("d", paths) })
	dr.run()
	var got []string
	for _, l := range dr.trace {
		if strings.HasPrefix(l, "remove") || strings.HasPrefix(l, "timer") {
			got = append(got, l)
		}
	}
	want := []string{"remove d/f0.deleted", "remove d/f1.deleted", "remove d/f2.deleted", "timer 20ms",
		"remove d/f3.deleted", "remove d/f4.deleted"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestBounds: past MaxFiles or MaxBytes waiting, files are removed whole.
func TestBounds(t *testing.T) {
	for _, cfg := range []Config{{StepBytes: 100, MaxFiles: 1}, {StepBytes: 100, MaxBytes: 1500}} {
		dr := newDriver(t, cfg, true)
		dr.write("d/a", 1000)
		dr.write("d/b", 1000)
		dr.call(func() { dr.bin.Discard("d", []string{"d/a", "d/b"}) })
		dr.run()
		st := dr.bin.Stats()
		if st.Whole != 1 || st.Emptied != 1 || st.Removed != 2 {
			t.Fatalf("%+v: stats %+v", cfg, st)
		}
		if !slices.Contains(dr.trace, "remove d/b.del") || slices.Contains(dr.trace, "truncate d/b.del 900") {
			t.Fatalf("%+v: b not removed whole:\n%s", cfg, strings.Join(dr.trace, "\n"))
		}
	}
}

// TestAdoptRemovesDir: adopted files are emptied in place and their
// directory removed after them.
func TestAdoptRemovesDir(t *testing.T) {
	dr := newDriver(t, Config{StepBytes: 1000}, false)
	if err := dr.fs.Mkdir("d/gone"); err != nil {
		t.Fatal(err)
	}
	dr.write("d/gone/x.log", 2500)
	dr.write("d/gone/x.index", 10)
	dr.call(func() { dr.bin.Adopt("d/gone", []string{"d/gone/x.log", "d/gone/x.index"}, true) })
	dr.run()
	if dr.exists("d/gone") {
		t.Fatalf("dir left:\n%s", strings.Join(dr.trace, "\n"))
	}
	if st := dr.bin.Stats(); st.Emptied != 1 || st.Removed != 2 {
		t.Fatalf("stats %+v", st)
	}
	// An empty directory goes too.
	if err := dr.fs.Mkdir("d/empty"); err != nil {
		t.Fatal(err)
	}
	dr.call(func() { dr.bin.Adopt("d/empty", nil, true) })
	dr.run()
	if dr.exists("d/empty") {
		t.Fatal("an adopted empty directory was left")
	}
}

// TestMissing: a file that is not there is no failure.
func TestMissing(t *testing.T) {
	dr := newDriver(t, Config{}, true)
	dr.call(func() { dr.bin.Discard("", []string{"nothing"}) })
	dr.run()
	if st := dr.bin.Stats(); len(dr.failures) > 0 || st.Removed != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v, failures %v", st, dr.failures)
	}
}

// TestFailureStops: a failed rename, truncate or sync is reported once and
// the Bin submits nothing more.
func TestFailureStops(t *testing.T) {
	for _, kind := range []node.DiskOpKind{node.OpRename, node.OpSyncDir, node.OpTruncate, node.OpSync, node.OpRemove} {
		dr := newDriver(t, Config{StepBytes: 100}, true)
		dr.write("a", 1000)
		dr.write("b", 1000)
		dr.failKind, dr.failPath = kind, ""
		dr.call(func() { dr.bin.Discard("", []string{"a", "b"}) })
		dr.run()
		if len(dr.failures) != 1 || !errors.Is(dr.failures[0], node.ErrIO) {
			t.Fatalf("%v: failures %v", kind, dr.failures)
		}
		// After the report only timers set before it may fire; the Bin
		// submits nothing and sets no timer.
		for _, l := range dr.trace[dr.traceAtFail:] {
			if l != "fire" {
				t.Fatalf("%v: ops submitted after the failure was reported: %v", kind, dr.trace[dr.traceAtFail:])
			}
		}
		last := dr.trace[len(dr.trace)-1]
		n := len(dr.trace)
		dr.call(func() { dr.bin.Discard("", []string{"b"}) })
		dr.bin.Timer()
		dr.run()
		if len(dr.trace) != n {
			t.Fatalf("%v: ops after the failure (last before: %s): %v", kind, last, dr.trace[n:])
		}
	}
}

// TestCrashNeverDamagesLiveName: whenever the process dies, a discarded
// file either still has its old name and all its bytes, or is gone from
// that name (the trash's name, or removed). Trimming before the rename is
// durable fails this (shown by planting it).
func TestCrashNeverDamagesLiveName(t *testing.T) {
	for seed := range uint64(300) {
		r := node.NewRand(rand.NewPCG(seed, 1))
		dr := newDriver(t, Config{StepBytes: 300}, r.Chance(0.5))
		want := dr.write("seg", 1000+r.IntN(2000))
		dr.write("keep", 100)
		dr.crashAfter = 1 + r.IntN(14)
		dr.call(func() { dr.bin.Discard("", []string{"seg"}) })
		dr.run()
		after := dr.fs.Crash(r)
		got, err := after.ReadAt("seg", 0, 1<<20)
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("seed %d: after %d ops and a crash, seg holds %d of its %d bytes:\n%s",
				seed, dr.crashAfter, len(got), len(want), strings.Join(dr.trace, "\n"))
		}
		if _, err := after.Stat("keep"); err != nil {
			t.Fatalf("seed %d: a file not discarded went: %v", seed, err)
		}
	}
}
