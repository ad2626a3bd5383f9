package compat

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

type nopLogger struct{}

func (nopLogger) Printf(string, ...interface{}) {}

// testLogger sends go-zookeeper's log lines to t.Log.
type testLogger struct{ t *testing.T }

func (l testLogger) Printf(f string, a ...interface{}) { l.t.Logf("go-zk: "+f, a...) }

// connect opens a go-zookeeper session to hosts (comma separated) and
// waits for it; the connection is closed when t ends. The event channel
// is drained into the returned sessionEvents.
func connect(t *testing.T, hosts string, opts ...func(*connOpts)) (*zk.Conn, *sessionEvents) {
	t.Helper()
	o := connOpts{timeout: 10 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	var logger zk.Logger = nopLogger{}
	if o.verbose {
		logger = testLogger{t}
	}
	dialer := o.dialer
	if dialer == nil {
		dialer = net.DialTimeout
	}
	hp := o.hostProvider
	if hp == nil {
		hp = zk.NewDNSHostProvider()
	}
	c, ch, err := zk.Connect(strings.Split(hosts, ","), o.timeout, zk.WithLogger(logger), zk.WithLogInfo(o.verbose),
		zk.WithDialer(dialer), zk.WithHostProvider(hp))
	if err != nil {
		t.Fatal(err)
	}
	se := newSessionEvents(ch)
	t.Cleanup(func() {
		c.Close()
		se.wait()
	})
	if err := se.waitState(zk.StateHasSession, 30*time.Second); err != nil {
		t.Fatalf("connect to %s: %v", hosts, err)
	}
	return c, se
}

type connOpts struct {
	timeout      time.Duration
	verbose      bool
	dialer       zk.Dialer
	hostProvider zk.HostProvider
}

func withTimeout(d time.Duration) func(*connOpts) { return func(o *connOpts) { o.timeout = d } }
func withDialer(d zk.Dialer) func(*connOpts)      { return func(o *connOpts) { o.dialer = d } }
func withHostProvider(h zk.HostProvider) func(*connOpts) {
	return func(o *connOpts) { o.hostProvider = h }
}
func withVerbose() func(*connOpts) { return func(o *connOpts) { o.verbose = true } }

// sessionEvents records the session events of one connection.
type sessionEvents struct {
	ch     chan zk.Event
	done   chan struct{}
	update chan struct{}
	events []zk.Event
	mu     sync.Mutex
}

func newSessionEvents(src <-chan zk.Event) *sessionEvents {
	s := &sessionEvents{done: make(chan struct{}), update: make(chan struct{}, 1)}
	go func() {
		defer close(s.done)
		for ev := range src {
			s.mu.Lock()
			s.events = append(s.events, ev)
			s.mu.Unlock()
			select {
			case s.update <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

func (s *sessionEvents) wait() {
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}

// states returns the session states seen so far.
func (s *sessionEvents) states() []zk.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st []zk.State
	for _, ev := range s.events {
		if ev.Type == zk.EventSession {
			st = append(st, ev.State)
		}
	}
	return st
}

// waitState waits until state st was seen after the first `from` events.
func (s *sessionEvents) waitStateAfter(from int, st zk.State, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		states := s.states()
		for i := from; i < len(states); i++ {
			if states[i] == st {
				return nil
			}
		}
		select {
		case <-s.update:
		case <-deadline:
			return fmt.Errorf("no %v within %v (states %v)", st, timeout, states)
		case <-s.done:
			return fmt.Errorf("connection closed waiting for %v (states %v)", st, states)
		}
	}
}

func (s *sessionEvents) waitState(st zk.State, timeout time.Duration) error {
	return s.waitStateAfter(0, st, timeout)
}

// uniquePath returns "/<prefix>-<random hex>".
func uniquePath(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "/" + prefix + "-" + hex.EncodeToString(b)
}

// recvEvent waits for one watch event.
func recvEvent(t *testing.T, ch <-chan zk.Event, what string) zk.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("%s: watch channel closed without an event", what)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no watch event within 10s", what)
	}
	return zk.Event{}
}

// expectEvent waits for one watch event with type typ on path.
func expectEvent(t *testing.T, ch <-chan zk.Event, typ zk.EventType, path, what string) {
	t.Helper()
	ev := recvEvent(t, ch, what)
	if ev.Type != typ || ev.Path != path || ev.Err != nil {
		t.Fatalf("%s: event %v on %q (state %v, err %v), want %v on %q", what, ev.Type, ev.Path, ev.State, ev.Err, typ, path)
	}
}

// expectNoEvent checks that nothing arrives on ch for d.
func expectNoEvent(t *testing.T, ch <-chan zk.Event, d time.Duration, what string) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("%s: unexpected watch event %v on %q", what, ev.Type, ev.Path)
		}
		t.Fatalf("%s: watch channel closed unexpectedly", what)
	case <-time.After(d):
	}
}

// pending reports whether an event is already waiting on ch.
func pending(ch <-chan zk.Event) (zk.Event, bool) {
	select {
	case ev, ok := <-ch:
		return ev, ok
	default:
		return zk.Event{}, false
	}
}

func isErr(err, want error) bool { return errors.Is(err, want) }

func mustCreate(t *testing.T, c *zk.Conn, path string, data []byte, flags int32) string {
	t.Helper()
	p, err := c.Create(path, data, flags, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	return p
}

func mustStat(t *testing.T, c *zk.Conn, path string) *zk.Stat {
	t.Helper()
	ok, st, err := c.Exists(path)
	if err != nil || !ok {
		t.Fatalf("exists %s: %v %v", path, ok, err)
	}
	return st
}
