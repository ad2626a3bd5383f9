// Package jepsen holds herd's real-process fault tests: real herd binaries on
// loopback, real files with fsync, faults made with signals (SIGKILL,
// SIGSTOP), and the same checkers the simulator uses. They cannot lose power
// the way the simulator's disks do (a killed process leaves the page cache
// behind), but they exercise what the simulator cannot: the production shell,
// real sockets, real fsync and process restarts.
package jepsen

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"herd/checker"
	"herd/node/demo"
)

var herdBin string

// herdBinEnv names a herd binary already built, for a test process that
// runInNamespaces started.
const herdBinEnv = "HERD_JEPSEN_BIN"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herd-jepsen-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	herdBin = filepath.Join(dir, "herd")
	if bin := os.Getenv(herdBinEnv); bin != "" {
		herdBin = bin // a test run again by runInNamespaces: the parent built it
	} else {
		build := exec.Command("go", "build", "-o", herdBin, "herd/cmd/herd")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building herd:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs
}

type server struct {
	addr, dir string
	cmd       *exec.Cmd
	peers     []string
}

func (s *server) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(herdBin, "demo-server", "--listen", s.addr, "--peers", strings.Join(s.peers, ","), "--data", s.dir)
	s.cmd.Stderr = os.Stderr
	ready := &lineWatch{prefix: "listening", seen: make(chan struct{})}
	s.cmd.Stdout = ready
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for "listening ..." so the kill schedule starts from a live server.
	select {
	case <-ready.seen:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not start", s.addr)
	}
}

// lineWatch is a stdout that closes seen once a line starting with prefix
// has been written.
type lineWatch struct {
	mu     sync.Mutex
	buf    []byte
	prefix string
	seen   chan struct{}
	done   bool
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.buf = append(w.buf, p...)
		if bytes.HasPrefix(w.buf, []byte(w.prefix)) && bytes.IndexByte(w.buf, '\n') >= 0 {
			w.done = true
			close(w.seen)
		}
	}
	return len(p), nil
}

func (s *server) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		_ = s.cmd.Wait()
	}
}

// TestDemoSurvivesKill9: three real demo servers, a real client, and servers
// killed with SIGKILL and restarted while appends flow. Every acknowledged
// record must be in the killed server's log file afterwards, at the offset it
// was acknowledged at, and no log may hold a record nobody sent.
func TestDemoSurvivesKill9(t *testing.T) {
	addrs := freePorts(t, 3)
	servers := make([]*server, 3)
	for i := range servers {
		servers[i] = &server{addr: addrs[i], dir: filepath.Join(t.TempDir(), fmt.Sprint(i)), peers: addrs}
		servers[i].start(t)
	}
	defer func() {
		for _, s := range servers {
			if s.cmd.ProcessState == nil {
				s.signal(t, syscall.SIGKILL)
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const appends = 20000
	client := exec.CommandContext(ctx, herdBin, "demo-client", "--servers", strings.Join(addrs, ","),
		"--appends", strconv.Itoa(appends), "--window", "8", "--name", "jc")
	var out bytes.Buffer
	client.Stdout = &out
	client.Stderr = os.Stderr
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- client.Wait() }()

	// The nemesis: kill -9 a server, leave it down a moment, restart it;
	// pause another with SIGSTOP now and then.
	kills := 0
	tick := time.NewTicker(150 * time.Millisecond)
	defer tick.Stop()
	var clientErr error
loop:
	for i := 0; ; i++ {
		select {
		case clientErr = <-done:
			break loop
		case <-tick.C:
			s := servers[i%3]
			if i%4 == 3 {
				s.signal(t, syscall.SIGSTOP)
				time.Sleep(100 * time.Millisecond)
				s.signal(t, syscall.SIGCONT)
				continue
			}
			s.signal(t, syscall.SIGKILL)
			kills++
			time.Sleep(50 * time.Millisecond)
			s.start(t)
		}
	}
	if clientErr != nil {
		t.Fatalf("client: %v\n%s", clientErr, tail(out.String(), 20))
	}
	for _, s := range servers {
		s.signal(t, syscall.SIGTERM)
	}

	ledger := checker.NewLogLedger()
	acks := 0
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.SplitN(line, " ", 4)
		switch {
		case len(f) == 3 && f[0] == "sent":
			ledger.Sent(f[1], []byte(f[2]))
		case len(f) == 4 && f[0] == "ack":
			off, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatalf("bad ack line %q", line)
			}
			if err := ledger.Acked(f[1], off, []byte(f[3])); err != nil {
				t.Fatal(err)
			}
			acks++
		}
	}
	if acks != appends {
		t.Fatalf("client printed %d acks, want %d", acks, appends)
	}
	for _, s := range servers {
		data, err := os.ReadFile(filepath.Join(s.dir, "log"))
		if err != nil && !os.IsNotExist(err) { // a server no client chose has no log
			t.Fatal(err)
		}
		recs, valid := demo.ParseLog(data, true)
		es := make([]checker.Entry, len(recs))
		for i, r := range recs {
			es[i] = checker.Entry{Off: r.Off, Payload: r.Payload}
		}
		if err := ledger.Check(s.addr, es); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d records, %d valid bytes of %d, %d acknowledged", s.addr, len(recs), valid, len(data), ledger.AckedCount(s.addr))
	}
	if kills < 5 {
		t.Fatalf("only %d kills happened: the run was too short to test anything", kills)
	}
	t.Logf("%d appends acknowledged across %d kill -9s", acks, kills)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
