// Package procutil holds what the compatibility suites' process launchers
// (compat/ensemble for ZooKeeper ensembles, compat/kafka/broker for brokers)
// share: free loopback ports, the tail of a server's output, line-prefixed
// output, and closed-channel checks.
package procutil

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
)

// FreePorts returns n distinct loopback ports that were free a moment ago
// (held open together, so they differ from each other).
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// IsClosed reports whether c is closed (a nil channel counts as closed).
func IsClosed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// TailBuffer keeps the last Max bytes written to it. A nil *TailBuffer
// discards writes.
type TailBuffer struct {
	Max int
	mu  sync.Mutex
	buf []byte
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	if t == nil {
		return len(p), nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.Max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.Max:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// PrefixWriter writes whole lines to W, each prefixed with Prefix. Writers
// sharing one W should share one Mu, so their lines do not interleave; a
// nil Mu uses the writer's own.
type PrefixWriter struct {
	Mu      *sync.Mutex
	W       io.Writer
	Prefix  string
	own     sync.Mutex
	partial []byte
}

func (p *PrefixWriter) Write(b []byte) (int, error) {
	mu := p.Mu
	if mu == nil {
		mu = &p.own
	}
	mu.Lock()
	defer mu.Unlock()
	p.partial = append(p.partial, b...)
	var out bytes.Buffer
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		out.WriteString(p.Prefix)
		out.Write(p.partial[:i+1])
		p.partial = p.partial[i+1:]
	}
	if out.Len() > 0 {
		p.W.Write(out.Bytes())
	}
	return len(b), nil
}
