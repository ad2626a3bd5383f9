package jepsen

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// linkState is what a link does with the bytes offered to it.
type linkState uint8

const (
	// linkUp forwards bytes as they come.
	linkUp linkState = iota
	// linkHeld is a network that drops every packet: connections stay
	// open, nothing is delivered, and a new connection is accepted but not
	// carried on. What was sent is delivered in order once the link is up
	// again, as TCP retransmits it; meanwhile the link reads at most one
	// buffer ahead, so the sender's socket fills and its writes block,
	// which is what the production shell's bounded send queue is for.
	linkHeld
	// linkRefused is a network that answers with resets: open connections
	// are closed, new ones are accepted and closed at once.
	linkRefused
)

func (s linkState) String() string {
	switch s {
	case linkUp:
		return "up"
	case linkHeld:
		return "held"
	case linkRefused:
		return "refused"
	}
	return fmt.Sprintf("linkState(%d)", uint8(s))
}

// link is a one-way path from one server to another's port through a TCP
// proxy on loopback: the fault tests tell a server to reach its peer at
// the link's port and cut or hold the link to make partitions, one
// direction at a time, without root or a packet filter. Each server dials
// its peers for what it sends (raft's outbound connections), so a link
// carries exactly one direction of one pair's traffic.
type link struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	cond   *sync.Cond
	state  linkState
	closed bool
	conns  map[net.Conn]bool // both ends of every carried connection; true for the accepted end
	wg     sync.WaitGroup

	// counters, under mu
	accepted, resets int
}

// newLink listens on a fresh loopback port and carries what it accepts to
// target.
func newLink(target string) (*link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &link{target: target, ln: ln, conns: make(map[net.Conn]bool)}
	l.cond = sync.NewCond(&l.mu)
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Port is the port the link listens on.
func (l *link) Port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// Set changes what the link does. Refusing closes every open connection.
func (l *link) Set(s linkState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state = s
	if s == linkRefused {
		for c, accepted := range l.conns {
			if accepted {
				l.resets++
			}
			c.Close()
		}
	}
	l.cond.Broadcast()
}

// Stats reports connections accepted and connections closed by refusing.
func (l *link) Stats() (accepted, resets int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted, l.resets
}

// Close stops the link and waits for its goroutines.
func (l *link) Close() {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.Close()
	}
	l.cond.Broadcast()
	l.mu.Unlock()
	l.ln.Close()
	l.wg.Wait()
}

func (l *link) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		l.mu.Lock()
		if l.closed || l.state == linkRefused {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.accepted++
		l.conns[c] = true
		l.wg.Add(1)
		l.mu.Unlock()
		go l.carry(c)
	}
}

// waitUp blocks while the link is held and reports whether it may deliver.
func (l *link) waitUp() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.state == linkHeld && !l.closed {
		l.cond.Wait()
	}
	return l.state == linkUp && !l.closed
}

// carry connects an accepted connection to the target once the link lets
// it through (a held link holds the connection attempt too) and pumps
// both ways until either side ends.
func (l *link) carry(in net.Conn) {
	defer l.wg.Done()
	drop := func(cs ...net.Conn) {
		l.mu.Lock()
		for _, c := range cs {
			c.Close()
			delete(l.conns, c)
		}
		l.mu.Unlock()
	}
	if !l.waitUp() {
		drop(in)
		return
	}
	out, err := net.DialTimeout("tcp", l.target, 2*time.Second)
	if err != nil {
		drop(in)
		return
	}
	l.mu.Lock()
	if l.closed || l.state == linkRefused {
		l.mu.Unlock()
		out.Close()
		drop(in)
		return
	}
	l.conns[out] = false
	l.mu.Unlock()
	var pumps sync.WaitGroup
	pumps.Add(2)
	pump := func(src, dst net.Conn) {
		defer pumps.Done()
		// Either direction ending ends the connection, as a reset would.
		defer drop(in, out)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if !l.waitUp() {
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pump(in, out)
	go pump(out, in)
	pumps.Wait()
}

// linkSet is the links between a set of servers, one per ordered pair.
type linkSet struct {
	mu    sync.Mutex
	links map[[2]int]*link // [from, to], 1-based server ids
}

func newLinkSet() *linkSet { return &linkSet{links: make(map[[2]int]*link)} }

// PeerPort is an ensemble.Options.PeerPort: server from reaches server to's
// quorum port through a link of its own.
func (s *linkSet) PeerPort(from, to, port int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.links[[2]int{from, to}]; old != nil {
		old.Close() // a retried start picked new ports
	}
	l, err := newLink(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0, err
	}
	s.links[[2]int{from, to}] = l
	return l.Port(), nil
}

// Get returns the link from one server to another (1-based ids).
func (s *linkSet) Get(from, to int) *link {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.links[[2]int{from, to}]
}

// HealAll sets every link up.
func (s *linkSet) HealAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		l.Set(linkUp)
	}
}

// Close closes every link.
func (s *linkSet) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		l.Close()
	}
}

// TestLink shows a link forwarding, holding (and then delivering in order)
// and refusing.
func TestLink(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var echoes sync.WaitGroup
	echoes.Add(1)
	go func() {
		defer echoes.Done()
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			echoes.Add(1)
			go func() {
				defer echoes.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	defer func() {
		echo.Close()
		echoes.Wait()
	}()
	l, err := newLink(echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", l.Port()))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// expect reads want from c within d; "" expects nothing at all.
	expect := func(c net.Conn, want string, d time.Duration) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(d))
		buf := make([]byte, 64)
		got := ""
		for len(got) < len(want) || want == "" {
			n, err := c.Read(buf)
			got += string(buf[:n])
			if err != nil {
				if want == "" && errors.Is(err, os.ErrDeadlineExceeded) && got == "" {
					return
				}
				t.Fatalf("read %q, then: %v (want %q)", got, err, want)
			}
			if want == "" {
				t.Fatalf("read %q through a held link", got)
			}
		}
		if got != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	c := dial()
	defer c.Close()
	c.Write([]byte("a"))
	expect(c, "a", 5*time.Second)

	l.Set(linkHeld)
	c.Write([]byte("b"))
	c.Write([]byte("c"))
	expect(c, "", 300*time.Millisecond)
	held := dial() // a connection made while held is held too
	defer held.Close()
	held.Write([]byte("x"))
	expect(held, "", 300*time.Millisecond)
	l.Set(linkUp)
	expect(c, "bc", 5*time.Second)
	expect(held, "x", 5*time.Second)

	l.Set(linkRefused)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 8)); err == nil {
		t.Fatalf("read %d bytes from a connection a refusing link should have closed", n)
	}
	refused := dial()
	defer refused.Close()
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := refused.Read(make([]byte, 8)); err == nil {
		t.Fatalf("read %d bytes through a refusing link", n)
	}
	if _, resets := l.Stats(); resets != 2 {
		t.Fatalf("%d connections reset, want 2", resets)
	}
	l.Set(linkUp)
	again := dial()
	defer again.Close()
	again.Write([]byte("d"))
	expect(again, "d", 5*time.Second)
}
