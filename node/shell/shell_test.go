package shell

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"herd/disk"
	"herd/node"
)

func echo(p *probe, ev node.Event) {
	if ev.Kind == node.EvReceived {
		p.env.Send(ev.Conn, ev.Data)
	}
}

// Two shells: b dials a, sends before the dial completes, gets the echo,
// closes; a sees EOF and b gets no event for its own close. Connection IDs
// come from one counter per shell, shared by accepts and dials.
func TestTwoShells(t *testing.T) {
	leakCheck(t)
	a := start(t, Config{Name: "a"}, echo)
	b := start(t, Config{Name: "b"}, nil)

	var c node.ConnID
	b.do(t, func(p *probe) {
		c = p.env.Dial(a.sh.Addrs()[0])
		p.env.Send(c, []byte("hello, "))
	})
	b.do(t, func(p *probe) { p.env.Send(c, []byte("world")) })
	if c != 1 {
		t.Fatalf("first dial got ConnID %d, want 1", c)
	}
	if e := b.nextFor(t, c); e.ev.Kind != node.EvConnected {
		t.Fatalf("first event of dialed conn: %v, want connected", e.ev.Kind)
	}
	if got := b.recvN(t, c, 12); string(got) != "hello, world" {
		t.Fatalf("echo: %q", got)
	}
	acc := a.next(t).ev
	if acc.Kind != node.EvAccepted || acc.Conn != 1 || acc.Local != a.sh.Addrs()[0] || acc.Remote == "" {
		t.Fatalf("accepted: %v conn %d local %q remote %q", acc.Kind, acc.Conn, acc.Local, acc.Remote)
	}
	if got := a.recvN(t, acc.Conn, 12); string(got) != "hello, world" {
		t.Fatalf("a received %q", got)
	}

	// a now dials b: its counter continues after the accept, b's accept
	// continues after its dial.
	var c2 node.ConnID
	a.do(t, func(p *probe) { c2 = p.env.Dial(b.sh.Addrs()[0]) })
	if c2 != 2 {
		t.Fatalf("a's dial after an accept got ConnID %d, want 2", c2)
	}
	if e := a.nextFor(t, c2); e.ev.Kind != node.EvConnected {
		t.Fatalf("a's dial: %v %v", e.ev.Kind, e.ev.Err)
	}
	if e := b.waitKind(t, node.EvAccepted); e.ev.Conn != 2 {
		t.Fatalf("b's accept after a dial got ConnID %d, want 2", e.ev.Conn)
	}

	b.do(t, func(p *probe) { p.env.Close(c) })
	e := a.nextFor(t, acc.Conn)
	if e.ev.Kind != node.EvClosed || !errors.Is(e.ev.Err, node.ErrEOF) {
		t.Fatalf("a after b's close: %v %v, want closed EOF", e.ev.Kind, e.ev.Err)
	}
	// Sending and closing a closed conn are no-ops, and b hears nothing more.
	b.do(t, func(p *probe) {
		p.env.Send(c, []byte("late"))
		p.env.Close(c)
	})
	b.none(t, 100*time.Millisecond, func(ev node.Event) bool { return ev.Conn == c })
}

func TestDialRefused(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	r := start(t, Config{}, nil)
	var c node.ConnID
	r.do(t, func(p *probe) {
		c = p.env.Dial(addr)
		p.env.Send(c, []byte("dropped with the dial"))
	})
	e := r.nextFor(t, c)
	if e.ev.Kind != node.EvClosed || !errors.Is(e.ev.Err, node.ErrRefused) {
		t.Fatalf("dial to closed port: %v %v, want closed ErrRefused", e.ev.Kind, e.ev.Err)
	}
	r.none(t, 50*time.Millisecond, func(ev node.Event) bool { return ev.Conn == c })
}

func TestDialTimeout(t *testing.T) {
	leakCheck(t)
	// A deadline that has passed before connect(2) is the one timeout a
	// loopback-only test can produce reliably.
	r := start(t, Config{DialTimeout: time.Nanosecond}, nil)
	var c node.ConnID
	r.do(t, func(p *probe) { c = p.env.Dial(r.sh.Addrs()[0]) })
	e := r.nextFor(t, c)
	if e.ev.Kind != node.EvClosed || !errors.Is(e.ev.Err, node.ErrTimeout) {
		t.Fatalf("dial: %v %v, want closed ErrTimeout", e.ev.Kind, e.ev.Err)
	}
}

// A shell with DialFrom dials from that address (the peer's accept names
// it), and DialUserTimeout is on the dialed socket as TCP_USER_TIMEOUT;
// without them, neither. A DialFrom that is not an IP is refused by New.
func TestDialFromAndUserTimeout(t *testing.T) {
	leakCheck(t)
	a := start(t, Config{Name: "a"}, nil)
	for _, tc := range []struct {
		from    string
		timeout time.Duration
		wantMS  int
	}{{"127.0.0.7", 2500 * time.Millisecond, 2500}, {"", 0, 0}} {
		b := start(t, Config{Name: "b", DialFrom: tc.from, DialUserTimeout: tc.timeout}, nil)
		var c node.ConnID
		b.do(t, func(p *probe) { c = p.env.Dial(a.sh.Addrs()[0]) })
		if e := b.nextFor(t, c); e.ev.Kind != node.EvConnected {
			t.Fatalf("dial: %v %v", e.ev.Kind, e.ev.Err)
		}
		acc := a.waitKind(t, node.EvAccepted).ev
		host, _, _ := net.SplitHostPort(acc.Remote)
		if want := cmp.Or(tc.from, "127.0.0.1"); host != want {
			t.Fatalf("DialFrom %q: the peer accepted a connection from %s, want %s", tc.from, acc.Remote, want)
		}
		var ms int
		var serr error
		b.do(t, func(p *probe) {
			raw, err := b.sh.conns[c].nc.(syscall.Conn).SyscallConn()
			if err != nil {
				serr = err
				return
			}
			raw.Control(func(fd uintptr) { ms, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout) })
		})
		if serr != nil || ms != tc.wantMS {
			t.Fatalf("DialUserTimeout %v: TCP_USER_TIMEOUT is %d ms (%v), want %d", tc.timeout, ms, serr, tc.wantMS)
		}
		b.stop(t)
	}
	if _, err := New(Config{FS: newMemFS(), DialFrom: "localhost"}, func(node.Env) node.Machine { return nil }); err == nil || !strings.Contains(err.Error(), "DialFrom") {
		t.Fatalf("New with DialFrom \"localhost\": %v, want an error naming DialFrom", err)
	}
}

type fakeNetErr struct{ timeout bool }

func (e fakeNetErr) Error() string   { return "fake" }
func (e fakeNetErr) Timeout() bool   { return e.timeout }
func (e fakeNetErr) Temporary() bool { return false }

func TestDialErrMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{&net.OpError{Op: "dial", Err: fakeNetErr{timeout: true}}, node.ErrTimeout},
		{context.DeadlineExceeded, node.ErrTimeout},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, node.ErrRefused},
		{&net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}, node.ErrRefused},
	} {
		got := dialErr(tc.err)
		if !errors.Is(got, tc.want) || !strings.Contains(got.Error(), tc.err.Error()) {
			t.Errorf("dialErr(%v) = %v, want %v wrapping the OS text", tc.err, got, tc.want)
		}
	}
}

// Closing a connection that is still dialing drops its queued data and the
// core hears nothing more of it, as in the simulator.
func TestCloseWhileDialing(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := start(t, Config{}, nil)
	var c node.ConnID
	r.do(t, func(p *probe) {
		c = p.env.Dial(ln.Addr().String())
		p.env.Send(c, []byte("never"))
		p.env.Close(c)
	})
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(300 * time.Millisecond))
	if nc, err := ln.Accept(); err == nil {
		nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, _ := readAll(nc)
		nc.Close()
		if len(got) > 0 {
			t.Fatalf("peer received %q from a connection closed while dialing", got)
		}
	}
	r.none(t, 100*time.Millisecond, func(ev node.Event) bool { return ev.Conn == c })
}

func TestPeerCloseAndReset(t *testing.T) {
	leakCheck(t)
	r := start(t, Config{}, nil)
	for _, rst := range []bool{false, true} {
		nc, err := net.Dial("tcp", r.sh.Addrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte("abc"))
		acc := r.waitKind(t, node.EvAccepted).ev
		if got := r.recvN(t, acc.Conn, 3); string(got) != "abc" {
			t.Fatalf("got %q", got)
		}
		if rst {
			nc.(*net.TCPConn).SetLinger(0)
		}
		nc.Close()
		e := r.nextFor(t, acc.Conn)
		want := node.ErrEOF
		if rst {
			want = node.ErrReset
		}
		if e.ev.Kind != node.EvClosed || !errors.Is(e.ev.Err, want) {
			t.Fatalf("peer close (rst=%v): %v %v, want closed %v", rst, e.ev.Kind, e.ev.Err, want)
		}
	}
}

func TestTimers(t *testing.T) {
	leakCheck(t)
	r := start(t, Config{}, nil)
	var t0 node.Time
	r.do(t, func(p *probe) {
		t0 = p.env.Now()
		p.env.SetTimer("moved", 20*time.Millisecond)
		p.env.SetTimer("cancelled", 20*time.Millisecond)
		p.env.SetTimer("now", 0)
		p.env.SetTimer("negative", -time.Second)
		for range 1000 {
			p.env.SetTimer("rearmed", time.Millisecond)
		}
	})
	r.do(t, func(p *probe) {
		p.env.SetTimer("moved", 150*time.Millisecond)
		p.env.CancelTimer("cancelled")
		p.env.CancelTimer("never-set")
	})
	// Expiries that were already posted when the timer was cancelled or
	// re-armed must be dropped: hold the loop until they have surely fired.
	r.do(t, func(p *probe) {
		p.env.SetTimer("stale-cancel", 0)
		p.env.SetTimer("stale-rearm", 0)
		time.Sleep(30 * time.Millisecond)
		p.env.CancelTimer("stale-cancel")
		p.env.SetTimer("stale-rearm", 100*time.Millisecond)
	})

	// Wait for the timers that must fire (however slow the machine), then a
	// while longer for any that must not.
	fired := map[node.TimerName][]node.Time{}
	must := []node.TimerName{"moved", "now", "negative", "rearmed", "stale-rearm"}
	var quiet <-chan time.Time
	limit := time.After(waitLimit)
collect:
	for {
		select {
		case e := <-r.p.evs:
			if e.ev.Kind == node.EvTimer {
				fired[e.ev.Timer] = append(fired[e.ev.Timer], e.now)
			}
			if quiet == nil && func() bool {
				for _, name := range must {
					if len(fired[name]) == 0 {
						return false
					}
				}
				return true
			}() {
				quiet = time.After(100 * time.Millisecond)
			}
		case <-quiet:
			break collect
		case <-limit:
			break collect
		}
	}
	for name, n := range map[node.TimerName]int{
		"moved": 1, "cancelled": 0, "now": 1, "negative": 1, "rearmed": 1,
		"stale-cancel": 0, "stale-rearm": 1,
	} {
		if len(fired[name]) != n {
			t.Errorf("timer %q fired %d times, want %d", name, len(fired[name]), n)
		}
	}
	if at := fired["moved"]; len(at) == 1 && at[0].Sub(t0) < 150*time.Millisecond {
		t.Errorf("re-armed timer fired after %v, want >= 150ms", at[0].Sub(t0))
	}
	if at := fired["stale-rearm"]; len(at) == 1 && at[0].Sub(t0) < 130*time.Millisecond {
		t.Errorf("stale expiry delivered: fired after %v", at[0].Sub(t0))
	}
}

// SendAfter holds data until its sync completes, and later sends queue behind
// it. The gate learns of a completion before the core does: on EvDiskDone the
// op already counts as done, so SendAfter on a completed non-barrier op is
// legal (it would panic if the gate were told after Step).
func TestSendAfterWaitsForSync(t *testing.T) {
	leakCheck(t)
	fs := newMemFS()
	release := make(chan struct{})
	fs.hook = func(op, path string) {
		if op == "sync" {
			<-release
		}
	}
	var conn node.ConnID
	r := start(t, Config{FS: fs}, func(p *probe, ev node.Event) {
		switch ev.Kind {
		case node.EvAccepted:
			conn = ev.Conn
			p.env.Disk(node.WriteOp("f", 0, []byte("x")))
			s := p.env.Disk(node.SyncOp("f"))
			p.env.SendAfter(ev.Conn, []byte("held,"), s)
			p.env.Send(ev.Conn, []byte("after,"))
		case node.EvDiskDone:
			if ev.OpKind == node.OpWrite {
				p.env.SendAfter(conn, []byte("write-done"), ev.Op)
			}
		}
	})
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var buf [64]byte
	if n, err := nc.Read(buf[:]); n > 0 || err == nil {
		t.Fatalf("received %q before the sync completed", buf[:n])
	}
	close(release)
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	const want = "held,after,write-done"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(nc, got); err != nil || string(got) != want {
		t.Fatalf("got %q %v", got, err)
	}
}

// A failed sync: the held data is never sent, the connection is reset, and
// every later SendAfter resets its connection at once.
func TestSendAfterFailedSync(t *testing.T) {
	leakCheck(t)
	fs := newMemFS()
	fs.failSync.Store(true)
	var write node.OpID
	// Act on the client's first bytes, not on the accept: a reset that
	// beats the client's connect(2) to completion would fail its Dial.
	r := start(t, Config{FS: fs}, func(p *probe, ev node.Event) {
		if ev.Kind != node.EvReceived {
			return
		}
		if write == 0 {
			write = p.env.Disk(node.WriteOp("f", 0, []byte("x")))
			s := p.env.Disk(node.SyncOp("f"))
			p.env.SendAfter(ev.Conn, []byte("must not be sent"), s)
			p.env.Send(ev.Conn, []byte("nor this"))
			return
		}
		p.env.SendAfter(ev.Conn, []byte("nor this, the gate is poisoned"), write)
	})
	for i := range 2 {
		nc, err := net.Dial("tcp", r.sh.Addrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte("go"))
		acc := r.waitKind(t, node.EvAccepted).ev
		if i == 0 {
			for range 2 {
				d := r.waitKind(t, node.EvDiskDone).ev
				if (d.OpKind == node.OpSync) != (d.Err != nil) {
					t.Fatalf("disk done %v err %v", d.OpKind, d.Err)
				}
			}
		}
		e := r.nextFor(t, acc.Conn)
		for e.ev.Kind == node.EvReceived {
			e = r.nextFor(t, acc.Conn)
		}
		if e.ev.Kind != node.EvClosed || !errors.Is(e.ev.Err, node.ErrReset) {
			t.Fatalf("client %d: %v %v, want closed ErrReset", i, e.ev.Kind, e.ev.Err)
		}
		nc.SetReadDeadline(time.Now().Add(waitLimit))
		got, err := readAll(nc)
		nc.Close()
		if len(got) > 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client %d read %q, %v; want nothing and a reset", i, got, err)
		}
	}
}

// Close sends everything queued, then FIN; the peer's own data arriving after
// the close is drained rather than answered with a reset.
func TestCloseFlushes(t *testing.T) {
	leakCheck(t)
	payload := make([]byte, 4<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	r := start(t, Config{}, func(p *probe, ev node.Event) {
		if ev.Kind == node.EvAccepted {
			for b := payload; len(b) > 0; b = b[min(len(b), 60000):] {
				p.env.Send(ev.Conn, b[:min(len(b), 60000)])
			}
			p.env.Close(ev.Conn)
		}
	})
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(waitLimit))
	first := make([]byte, 1)
	if _, err := io.ReadFull(nc, first); err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := nc.Write(make([]byte, 1<<20))
		werr <- err
	}()
	rest, err := readAll(nc)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", 1+len(rest), err)
	}
	if !bytes.Equal(append(first, rest...), payload) {
		t.Fatalf("received %d bytes, not the %d sent", 1+len(rest), len(payload))
	}
	if err := <-werr; err != nil {
		t.Fatalf("peer's write to a closed connection failed: %v", err)
	}
	acc := r.waitKind(t, node.EvAccepted).ev
	r.none(t, 100*time.Millisecond, func(ev node.Event) bool { return ev.Conn == acc.Conn })
}

func TestMaxSendQueueBytes(t *testing.T) {
	leakCheck(t)
	const max = 64 << 10
	r := start(t, Config{MaxSendQueueBytes: max}, func(p *probe, ev node.Event) {
		if ev.Kind != node.EvReceived {
			return
		}
		// The writer drains concurrently, so only an empty queue filled
		// exactly, and one buffer over the limit by itself, are
		// deterministic.
		p.env.Send(ev.Conn, make([]byte, max)) // exactly the limit: fine
		if string(ev.Data) == "over" {
			p.env.Send(ev.Conn, bytes.Repeat([]byte{1}, max+1)) // reset
			p.env.Send(ev.Conn, []byte{2})                      // no-op
		}
	})
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	nc.Write([]byte("full"))
	if _, err := io.ReadFull(nc, make([]byte, max)); err != nil {
		t.Fatalf("a queue filled exactly to the limit: %v", err)
	}
	acc := r.waitKind(t, node.EvAccepted).ev
	r.recvN(t, acc.Conn, 4)

	nc.Write([]byte("over"))
	r.recvN(t, acc.Conn, 4)
	e := r.nextFor(t, acc.Conn)
	if e.ev.Kind != node.EvClosed || !errors.Is(e.ev.Err, node.ErrReset) {
		t.Fatalf("%v %v, want closed ErrReset", e.ev.Kind, e.ev.Err)
	}
	got, err := readAll(nc)
	if len(got) > max || bytes.IndexByte(got, 1) >= 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer read %d bytes, %v; want at most %d zero bytes and a reset", len(got), err, max)
	}
	r.none(t, 50*time.Millisecond, func(ev node.Event) bool { return ev.Conn == acc.Conn })
}

// A peer that never reads: sends across many Steps eventually overflow the
// queue behind the kernel's buffers.
func TestMaxSendQueueSlowPeer(t *testing.T) {
	leakCheck(t)
	chunk := make([]byte, 256<<10)
	var conn node.ConnID
	r := start(t, Config{MaxSendQueueBytes: 1 << 20}, func(p *probe, ev node.Event) {
		switch ev.Kind {
		case node.EvReceived:
			conn = ev.Conn
			p.env.SetTimer("pump", 0)
		case node.EvTimer:
			p.env.Send(conn, chunk)
			p.env.SetTimer("pump", 0)
		case node.EvClosed:
			p.env.CancelTimer("pump")
		}
	})
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("g"))
	e := r.waitKind(t, node.EvClosed)
	if !errors.Is(e.ev.Err, node.ErrReset) {
		t.Fatalf("closed %v, want ErrReset", e.ev.Err)
	}
}

func TestHalt(t *testing.T) {
	leakCheck(t)
	r := start(t, Config{}, func(p *probe, ev node.Event) {
		if ev.Kind == node.EvReceived {
			p.env.Halt("bye")
			p.env.Send(ev.Conn, []byte("after halt"))
			p.env.Disk(node.WriteOp("after-halt", 0, []byte("x")))
		}
	})
	fs := r.sh.cfg.FS.(*memFS)
	addr := r.sh.Addrs()[0]
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("halt please"))
	err = r.wait(t)
	var he *HaltError
	if !errors.As(err, &he) || he.Reason != "bye" {
		t.Fatalf("Run returned %v, want *HaltError{bye}", err)
	}
	if e := r.next(t); e.ev.Kind != node.EvAccepted {
		t.Fatalf("event after start: %v", e.ev.Kind)
	}
	if e := r.next(t); e.ev.Kind != node.EvReceived {
		t.Fatalf("event after accept: %v", e.ev.Kind)
	}
	select {
	case e := <-r.p.evs:
		t.Fatalf("event %v delivered after Halt", e.ev.Kind)
	default:
	}
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	if got, _ := readAll(nc); len(got) > 0 {
		t.Fatalf("peer got %q sent after Halt", got)
	}
	if len(fs.Ops()) > 0 {
		t.Fatalf("disk ops after Halt ran: %v", fs.Ops())
	}
	if nc2, err := net.Dial("tcp", addr); err == nil {
		nc2.Close()
		t.Fatal("listener still open after Halt")
	}
	if err := r.sh.Do(func(node.Machine) {}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Do after halt: %v", err)
	}
}

// Halt lets the disk op in progress finish (Run waits for it) and runs none of
// the queued ones.
func TestHaltWaitsForDiskOp(t *testing.T) {
	leakCheck(t)
	fs := newMemFS()
	started := make(chan struct{})
	release := make(chan struct{})
	fs.hook = func(op, path string) {
		if path == "a" {
			close(started)
			<-release
		}
	}
	r := start(t, Config{FS: fs}, func(p *probe, ev node.Event) {
		if ev.Kind == node.EvTimer {
			p.env.Halt("stop")
		}
	})
	r.do(t, func(p *probe) {
		p.env.Disk(node.WriteOp("a", 0, []byte("1")))
		p.env.Disk(node.WriteOp("b", 0, []byte("2")))
	})
	<-started
	r.do(t, func(p *probe) { p.env.SetTimer("halt", 0) })
	select {
	case err := <-r.errc:
		t.Fatalf("Run returned %v with a disk op in progress", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	var he *HaltError
	if err := r.wait(t); !errors.As(err, &he) {
		t.Fatalf("Run: %v", err)
	}
	if ops := fs.Ops(); len(ops) != 1 || ops[0] != "write a" {
		t.Fatalf("ops executed: %v, want only the one in progress", ops)
	}
}

// A panic in Step is returned with its value and stack, after the shell has
// torn down connections (open, dialing and lingering), timers and the disk
// worker; leakCheck proves nothing is left.
func TestPanicInStep(t *testing.T) {
	leakCheck(t)
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	r := start(t, Config{}, func(p *probe, ev node.Event) {
		if ev.Kind == node.EvReceived && string(ev.Data) == "boom" {
			p.env.SetTimer("pending", time.Hour)
			p.env.Dial(hang.Addr().String())
			panic("boom in Step")
		}
		if ev.Kind == node.EvReceived {
			p.env.Send(ev.Conn, []byte("bye"))
			p.env.Close(ev.Conn) // lingers: the client never closes
		}
	})
	lingering, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer lingering.Close()
	lingering.Write([]byte("x"))
	lingering.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(lingering, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r.waitKind(t, node.EvAccepted)
	r.waitKind(t, node.EvAccepted)
	nc.Write([]byte("boom"))
	err = r.wait(t)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "boom in Step" {
		t.Fatalf("Run returned %v, want *PanicError", err)
	}
	if !strings.Contains(err.Error(), "boom in Step") || !strings.Contains(string(pe.Stack), "TestPanicInStep") {
		t.Fatalf("panic error lacks value or stack:\n%v", err)
	}
}

func TestDo(t *testing.T) {
	for _, noCombining := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoCombining=%v", noCombining), func(t *testing.T) { testDo(t, noCombining) })
	}
}

func testDo(t *testing.T, noCombining bool) {
	leakCheck(t)
	r := start(t, Config{NoCombining: noCombining}, echo)
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Keep Steps coming while Do reads the core's unsynchronised state: the
	// race detector would flag Do running anywhere but on the loop.
	go func() {
		for i := 0; i < 200; i++ {
			if _, err := nc.Write([]byte("tick")); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	go io.Copy(io.Discard, nc)
	var last int
	for range 50 {
		r.do(t, func(p *probe) {
			if p.steps < last {
				t.Error("steps went backwards")
			}
			last = p.steps
			if p.stepping.Load() != 0 {
				t.Error("Do ran during a Step")
			}
			// Without combining every Step runs on the loop goroutine,
			// which also runs Do; with it, any goroutine may step.
			if noCombining && p.gid != goid() {
				t.Errorf("Do ran on goroutine %d, Step on %d", goid(), p.gid)
			}
		})
	}
	if err := r.sh.Do(func(node.Machine) { panic("in Do") }); err == nil || !strings.Contains(err.Error(), "in Do") {
		t.Fatalf("Do with a panicking fn: %v", err)
	}
	r.do(t, func(*probe) {}) // still running
	nc.Close()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if err := r.sh.Do(func(node.Machine) {}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Do after Run: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	leakCheck(t)
	if _, err := New(Config{FS: newMemFS(), Listen: []string{"127.0.0.1:bad"}}, func(node.Env) node.Machine { return nil }); err == nil {
		t.Fatal("New with a bad address succeeded")
	}
	if _, err := New(Config{Listen: []string{"127.0.0.1:0"}}, func(node.Env) node.Machine { return nil }); err == nil {
		t.Fatal("New without FS succeeded")
	}
	sh, err := New(Config{FS: newMemFS(), Listen: []string{"127.0.0.1:0", "127.0.0.1:0"}}, func(node.Env) node.Machine { return nil })
	if err != nil {
		t.Fatal(err)
	}
	addrs := sh.Addrs()
	if len(addrs) != 2 || strings.HasSuffix(addrs[0], ":0") || addrs[0] == addrs[1] {
		t.Fatalf("Addrs: %v", addrs)
	}
	if err := sh.Close(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Fatalf("port not released by Close: %v", err)
	}
	ln.Close()
	if err := sh.Run(context.Background()); err == nil {
		t.Fatal("Run after Close succeeded")
	}
	if err := sh.Do(func(node.Machine) {}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Do after Close: %v", err)
	}
}

func TestEnvClockRandLog(t *testing.T) {
	leakCheck(t)
	log := &syncBuffer{}
	a := start(t, Config{Name: "node-a", Seed: 42, Log: log}, nil)
	b := start(t, Config{Seed: 42}, nil)
	var ra, rb []uint64
	var n1, n2 node.Time
	var wall int64
	a.do(t, func(p *probe) {
		for range 5 {
			ra = append(ra, p.env.Rand().Uint64())
		}
		n1 = p.env.Now()
		wall = p.env.WallClock()
		p.env.Logf("hello %d\n", 7)
	})
	b.do(t, func(p *probe) {
		for range 5 {
			rb = append(rb, p.env.Rand().Uint64())
		}
	})
	time.Sleep(10 * time.Millisecond)
	a.do(t, func(p *probe) { n2 = p.env.Now() })
	for i := range ra {
		if ra[i] != rb[i] {
			t.Fatalf("same seed, different streams: %v vs %v", ra, rb)
		}
	}
	if n2.Sub(n1) < 10*time.Millisecond {
		t.Fatalf("Now advanced %v over a 10ms sleep", n2.Sub(n1))
	}
	if d := time.Now().UnixMilli() - wall; d < 0 || d > 5000 {
		t.Fatalf("WallClock off by %dms", d)
	}
	var line string
	for l := range strings.Lines(log.String()) {
		if strings.Contains(l, "hello 7") {
			line = l
		}
	}
	if !strings.Contains(line, " node-a: hello 7\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("log line %q", line)
	}
	if c := start(t, Config{}, nil); c.sh.Seed() == 0 {
		t.Fatal("no seed drawn")
	}
}

// The loop writes replies itself while the socket takes them and leaves the
// rest to the connection's writer, which blocks: under back-pressure both
// write, by turns, and the peer must still get every byte in order. The
// client reads slowly at first, so the socket fills and the writer takes
// over, then fast, so the loop writes again.
func TestWriteOrderUnderBackpressure(t *testing.T) {
	leakCheck(t)
	r := start(t, Config{MaxSendQueueBytes: 256 << 20}, echo)
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const total = 8 << 20
	sent := make([]byte, total)
	for i := range sent {
		sent[i] = byte(i*7 + i>>11)
	}
	werr := make(chan error, 1)
	go func() {
		for off, k := 0, 0; off < total; k++ {
			n := min(1+(k*7919)%9000, total-off)
			if _, err := nc.Write(sent[off : off+n]); err != nil {
				werr <- err
				return
			}
			off += n
		}
		werr <- nil
	}()
	got := make([]byte, 0, total)
	buf := make([]byte, 64<<10)
	for len(got) < total {
		if len(got) < total/4 {
			time.Sleep(time.Millisecond) // slow reader: the socket fills
		}
		nc.SetReadDeadline(time.Now().Add(waitLimit))
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		i := 0
		for i < total && got[i] == sent[i] {
			i++
		}
		t.Fatalf("echo differs from byte %d", i)
	}
}

// TestConnectionsBeforeRun: peers that connected and sent before Run are
// accepted as soon as it starts, and none of their events may reach the
// core before EvStart (a reader that found the loop free stepped a core
// that did not exist yet: the jepsen ensemble caught it).
func TestConnectionsBeforeRun(t *testing.T) {
	leakCheck(t)
	const peers = 16
	var ncs []net.Conn
	r := startWith(t, Config{}, nil, func(addrs []string) {
		for range peers {
			nc, err := net.Dial("tcp", addrs[0])
			if err != nil {
				t.Fatal(err)
			}
			ncs = append(ncs, nc)
			if _, err := nc.Write([]byte("early")); err != nil {
				t.Fatal(err)
			}
		}
	})
	defer func() {
		for _, nc := range ncs {
			nc.Close()
		}
	}()
	accepted, got := 0, map[node.ConnID]string{}
	for complete := 0; accepted < peers || complete < peers; {
		switch e := r.next(t); e.ev.Kind {
		case node.EvAccepted:
			accepted++
		case node.EvReceived:
			got[e.ev.Conn] += string(e.ev.Data)
			if d := got[e.ev.Conn]; d == "early" {
				complete++
			} else if !strings.HasPrefix("early", d) {
				t.Fatalf("conn %d received %q", e.ev.Conn, d)
			}
		}
	}
}

// TestOrderPerConnection: under load from many connections at once, with
// a timer firing among them (so readers find the loop both free and busy,
// and queue and combine in every interleaving), each connection's bytes
// reach the core whole and in order and none is left queued once the load
// stops (watched without Do, and with the timer stopped before the end,
// since either would handle a queued event that nobody else did). The
// windows in which combining could reorder or strand an event are too
// narrow for load to hit reliably: TestCombiningKeepsSourceOrder and
// TestReleaseLooksAtQueue build them by hand.
func TestOrderPerConnection(t *testing.T) {
	leakCheck(t)
	const peers, msgs = 8, 1000
	got := map[node.ConnID][]byte{}
	var total atomic.Int64
	var ticking atomic.Bool
	ticking.Store(true)
	r := start(t, Config{}, func(p *probe, ev node.Event) {
		switch ev.Kind {
		case node.EvReceived:
			got[ev.Conn] = append(got[ev.Conn], ev.Data...)
			total.Add(int64(len(ev.Data)))
		case node.EvTimer:
			if ticking.Load() {
				p.env.SetTimer("tick", 50*time.Microsecond)
			}
		}
	})
	r.do(t, func(p *probe) { p.env.SetTimer("tick", 0) })
	// Drain the probe's record so it never fills.
	stop := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-r.p.evs:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-drained }()
	var wg sync.WaitGroup
	for i := range peers {
		nc, err := net.Dial("tcp", r.sh.Addrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [4]byte
			for m := range msgs {
				if m == msgs/2 && i == 0 {
					ticking.Store(false) // the rest arrives with no timer to rescue it
				}
				binary.BigEndian.PutUint32(b[:], uint32(m))
				if _, err := nc.Write(b[:]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(waitLimit)
	for total.Load() < 4*peers*msgs {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes reached the core: events left queued", total.Load(), 4*peers*msgs)
		}
		time.Sleep(time.Millisecond)
	}
	r.do(t, func(p *probe) {
		for c, d := range got {
			for i := range msgs {
				if v := binary.BigEndian.Uint32(d[4*i:]); v != uint32(i) {
					t.Fatalf("conn %d: message %d is %d: out of order", c, i, v)
				}
			}
		}
	})
}

// TestCombiningKeepsSourceOrder sets up, by hand, the one interleaving in
// which a source's event could overtake its earlier one: the earlier one was
// queued because the loop was busy, and the holder let go without looking
// at the queue again (the instant between its Unlock and its second look),
// so the next event of the same source finds the loop free. Stepping it
// must first step what is queued.
func TestCombiningKeepsSourceOrder(t *testing.T) {
	leakCheck(t)
	r := start(t, Config{}, nil)
	if r.sh.cfg.NoCombining {
		t.Skip("HERD_SHELL_NO_COMBINING: this run checks the loop goroutine; the other checks combining")
	}
	var gens [2]uint64
	names := [2]node.TimerName{"first", "second"}
	r.do(t, func(p *probe) {
		for i, n := range names {
			p.env.SetTimer(n, time.Hour)
			gens[i] = r.sh.timers[n].gen
		}
	})
	sh := r.sh
	sh.core.Lock() // the loop is busy
	queued := make(chan bool)
	go func() { queued <- sh.post(item{kind: itTimer, name: names[0], gen: gens[0]}) }()
	if !<-queued {
		t.Fatal("post of the first expiry failed")
	}
	if len(sh.events) != 1 {
		t.Fatalf("%d events queued, want the first expiry", len(sh.events))
	}
	sh.core.Unlock() // ... and lets go without a second look
	if !sh.post(item{kind: itTimer, name: names[1], gen: gens[1]}) {
		t.Fatal("post of the second expiry failed")
	}
	for _, want := range names {
		if e := r.waitKind(t, node.EvTimer); e.ev.Timer != want {
			t.Fatalf("timer %q stepped, want %q first", e.ev.Timer, want)
		}
	}
}

// TestReleaseLooksAtQueue: an event queued while the loop was busy is
// stepped when the holder lets go, with no later event to carry it.
func TestReleaseLooksAtQueue(t *testing.T) {
	leakCheck(t)
	r := start(t, Config{}, nil)
	if r.sh.cfg.NoCombining {
		t.Skip("HERD_SHELL_NO_COMBINING: this run checks the loop goroutine; the other checks combining")
	}
	var gen uint64
	r.do(t, func(p *probe) {
		p.env.SetTimer("queued", time.Hour)
		gen = r.sh.timers["queued"].gen
	})
	sh := r.sh
	sh.core.Lock() // a holder is stepping
	queued := make(chan bool)
	go func() { queued <- sh.post(item{kind: itTimer, name: "queued", gen: gen}) }()
	if !<-queued || len(sh.events) != 1 {
		t.Fatalf("the expiry was not queued (%d events queued)", len(sh.events))
	}
	sh.release() // the holder lets go
	if e := r.waitKind(t, node.EvTimer); e.ev.Timer != "queued" {
		t.Fatalf("timer %q stepped, want the queued one", e.ev.Timer)
	}
}

// bgMemFS is a memFS that runs background syncs apart (disk.BackgroundSyncer).
type bgMemFS struct{ *memFS }

func (b bgMemFS) BackgroundSync(path string) error {
	b.enter("bgsync", path)
	b.mu.Unlock()
	return b.memFS.Sync(path)
}
func (b bgMemFS) BackgroundSyncDir(dir string) error { return b.memFS.SyncDir(dir) }

// A background sync does not hold up the ops submitted after it: they
// complete while it is blocked, and its completion comes after theirs. On
// an FS that cannot run it apart it runs in line, in submission order.
func TestBackgroundSync(t *testing.T) {
	for _, apart := range []bool{true, false} {
		t.Run(fmt.Sprintf("apart=%v", apart), func(t *testing.T) {
			leakCheck(t)
			mem := newMemFS()
			var fs disk.FS = mem
			release := make(chan struct{})
			if apart {
				fs = bgMemFS{mem}
				mem.hook = func(op, path string) {
					if op == "bgsync" {
						<-release
					}
				}
			}
			r := start(t, Config{FS: fs}, func(*probe, node.Event) {})
			var ids []node.OpID
			r.do(t, func(p *probe) {
				ids = append(ids,
					p.env.Disk(node.WriteOp("f", 0, []byte("x"))),
					p.env.Disk(node.BackgroundSyncOp("f")),
					p.env.Disk(node.WriteOp("g", 0, []byte("y"))),
					p.env.Disk(node.SyncOp("g")))
			})
			want := []node.OpID{ids[0], ids[2], ids[3], ids[1]}
			if !apart {
				want = ids
			}
			var got []node.OpID
			for len(got) < 3 {
				got = append(got, r.waitKind(t, node.EvDiskDone).ev.Op)
			}
			if apart {
				if d := mem.DurableRange("f", 0, 10); len(d) != 0 {
					t.Fatalf("f durable before its sync ran: %q", d)
				}
				close(release)
			}
			ev := r.waitKind(t, node.EvDiskDone).ev
			got = append(got, ev.Op)
			if !slices.Equal(got, want) || ev.Err != nil {
				t.Fatalf("completions %v (last err %v), want %v", got, ev.Err, want)
			}
			if d := mem.DurableRange("f", 0, 10); string(d) != "x" {
				t.Fatalf("f durable %q after its background sync", d)
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}
