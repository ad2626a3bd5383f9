package shell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"herd/node"
)

const waitLimit = 5 * time.Second

// liveShells counts shells started by start whose Run has not been seen to
// return.
var liveShells atomic.Int32

// leakCheck fails t if goroutines started during the test outlive it. Call it
// first, so its cleanup runs after every other one.
func leakCheck(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// rec is one event as the probe saw it, with the core's clock at delivery.
type rec struct {
	ev  node.Event
	now node.Time
}

// probe is a test core: it records every event, then runs an optional
// behaviour. Tests drive it through Shell.Do.
type probe struct {
	env   node.Env
	evs   chan rec
	on    func(p *probe, ev node.Event)
	steps int    // touched only by the loop's holder: the race detector checks Do
	gid   uint64 // goroutine of the last Step
	// stepping counts Steps in progress: never more than one, and none
	// while Do runs.
	stepping atomic.Int32
}

func (p *probe) Step(ev node.Event) {
	if p.stepping.Add(1) != 1 {
		panic("probe: two Steps at once")
	}
	defer p.stepping.Add(-1)
	p.steps++
	p.gid = goid()
	select {
	case p.evs <- rec{ev: ev, now: p.env.Now()}:
	default:
		panic("probe: event buffer full")
	}
	if p.on != nil {
		p.on(p, ev)
	}
}

func goid() uint64 {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	var id uint64
	fmt.Sscanf(strings.TrimPrefix(s, "goroutine "), "%d", &id)
	return id
}

// running is a shell with a probe core, run by a goroutine of the test.
type running struct {
	sh     *Shell
	p      *probe
	cancel context.CancelFunc
	errc   chan error
	done   bool
	err    error
}

// start runs a shell with a probe core. Unset fields of cfg get test
// defaults: a fresh memFS, one loopback listener, the test's log.
func start(t *testing.T, cfg Config, on func(p *probe, ev node.Event)) *running {
	t.Helper()
	return startWith(t, cfg, on, nil)
}

// startWith is start; before, if not nil, runs between New and Run with the
// listeners' addresses.
func startWith(t *testing.T, cfg Config, on func(p *probe, ev node.Event), before func(addrs []string)) *running {
	t.Helper()
	if cfg.FS == nil {
		cfg.FS = newMemFS()
	}
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	if cfg.Name == "" {
		cfg.Name = t.Name()
	}
	if cfg.Log == nil {
		cfg.Log = tlog{t}
	}
	if os.Getenv("HERD_SHELL_NO_COMBINING") != "" {
		cfg.NoCombining = true // make race runs the suite both ways
	}
	p := &probe{evs: make(chan rec, 1<<16), on: on}
	sh, err := New(cfg, func(env node.Env) node.Machine { p.env = env; return p })
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(sh.Addrs())
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sh: sh, p: p, cancel: cancel, errc: make(chan error, 1)}
	liveShells.Add(1)
	go func() { r.errc <- sh.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	ev := r.next(t)
	if ev.ev.Kind != node.EvStart {
		t.Fatalf("first event is %v, want start", ev.ev.Kind)
	}
	return r
}

// wait waits for Run to return by itself (halt, panic).
func (r *running) wait(t *testing.T) error {
	t.Helper()
	if r.done {
		return r.err
	}
	select {
	case r.err = <-r.errc:
		r.done = true
		// Stacks do not say which shell a goroutine belongs to, so the
		// strict check runs when the last shell of a test stops.
		if liveShells.Add(-1) > 0 {
			return r.err
		}
		if busy := shellGoroutines(); len(busy) > 0 {
			t.Fatalf("Run returned while %d shell goroutines were still running:\n%s", len(busy), strings.Join(busy, "\n\n"))
		}
		return r.err
	case <-time.After(waitLimit):
		t.Fatal("Run did not return")
		return nil
	}
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

func (r *running) do(t *testing.T, fn func(p *probe)) {
	t.Helper()
	if err := r.sh.Do(func(node.Machine) { fn(r.p) }); err != nil {
		t.Fatal(err)
	}
}

func (r *running) next(t *testing.T) rec {
	t.Helper()
	select {
	case e := <-r.p.evs:
		return e
	case <-time.After(waitLimit):
		t.Fatal("no event")
		return rec{}
	}
}

// nextFor returns the next event of connection c, skipping the others.
func (r *running) nextFor(t *testing.T, c node.ConnID) rec {
	t.Helper()
	for {
		if e := r.next(t); e.ev.Conn == c && e.ev.Kind != node.EvTimer && e.ev.Kind != node.EvDiskDone {
			return e
		}
	}
}

// waitKind returns the next event of kind k, skipping the others.
func (r *running) waitKind(t *testing.T, k node.EventKind) rec {
	t.Helper()
	for {
		if e := r.next(t); e.ev.Kind == k {
			return e
		}
	}
}

// none fails if an event matching pred arrives within d.
func (r *running) none(t *testing.T, d time.Duration, pred func(node.Event) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e := <-r.p.evs:
			if pred(e.ev) {
				t.Fatalf("unexpected event %v conn=%d timer=%q err=%v", e.ev.Kind, e.ev.Conn, e.ev.Timer, e.ev.Err)
			}
		case <-deadline:
			return
		}
	}
}

// recvN collects n bytes of EvReceived on c; the first event for c must not
// be EvClosed.
func (r *running) recvN(t *testing.T, c node.ConnID, n int) []byte {
	t.Helper()
	var got []byte
	for len(got) < n {
		e := r.nextFor(t, c)
		if e.ev.Kind != node.EvReceived {
			t.Fatalf("conn %d: got %v (err %v) after %d bytes, want %d bytes", c, e.ev.Kind, e.ev.Err, len(got), n)
		}
		got = append(got, e.ev.Data...)
	}
	return got
}

// shellGoroutines returns the stacks of goroutines that are running shell
// code, checked without retrying: Run must not return before its goroutines
// are done. Frames of the thin wrappers that only remain to return after
// WaitGroup.Done are not work in progress and are ignored.
func shellGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var busy []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		for i := 1; i+1 < len(lines); i += 2 {
			fn, file := lines[i], strings.TrimSpace(lines[i+1])
			if !strings.HasPrefix(fn, "herd/node/shell.") || strings.Contains(file, "_test.go:") {
				continue
			}
			if strings.HasPrefix(fn, "herd/node/shell.(*Shell).spawn.func1(") ||
				strings.HasPrefix(fn, "herd/node/shell.(*Shell).timerFired(") ||
				strings.HasPrefix(fn, "herd/node/shell.env.SetTimer.func1(") {
				continue
			}
			busy = append(busy, g)
			break
		}
	}
	return busy
}

type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// syncBuffer is a log sink tests can read while the shell writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readAll reads from nc until an error and returns what it got and the error
// (nil if it was a clean EOF).
func readAll(nc io.Reader) ([]byte, error) {
	b, err := io.ReadAll(nc)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return b, err
}
