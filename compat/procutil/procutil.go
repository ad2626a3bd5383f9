// Package procutil holds what the compatibility suites' process launchers
// (compat/ensemble for ZooKeeper ensembles, compat/kafka/broker for brokers)
// share: free loopback ports, the tail of a server's output, line-prefixed
// output, and closed-channel checks.
package procutil

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
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

// BestEffort writes to W and reports success whatever W answers: a
// server's log file on a full disk must neither keep its output from the
// writers beside it in an io.MultiWriter (which stops at the first error)
// nor break the pipe the server writes its output to.
type BestEffort struct{ W io.Writer }

func (b BestEffort) Write(p []byte) (int, error) {
	b.W.Write(p)
	return len(p), nil
}

// KV is one key=value line of a properties file (zoo.cfg,
// server.properties): {key, value}.
type KV [2]string

// Properties renders base as key=value lines, with extra's keys replacing
// base's value of the same key or appended (in key order) after it.
func Properties(base []KV, extra map[string]string) string {
	cfg := slices.Clone(base)
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		i := slices.IndexFunc(cfg, func(c KV) bool { return c[0] == k })
		if i >= 0 {
			cfg[i][1] = extra[k]
		} else {
			cfg = append(cfg, KV{k, extra[k]})
		}
	}
	var b strings.Builder
	for _, c := range cfg {
		fmt.Fprintf(&b, "%s=%s\n", c[0], c[1])
	}
	return b.String()
}

// KillGroup SIGKILLs cmd's process group (the process leads its own,
// Setpgid) unless done is already closed, and waits up to timeout for done.
func KillGroup(cmd *exec.Cmd, done chan struct{}, timeout time.Duration) error {
	if !IsClosed(done) {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Process.Kill()
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("pid %d did not exit after SIGKILL", cmd.Process.Pid)
	}
}
