package compat

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"herd/compat/ensemble"
)

// python is the interpreter with python3-kazoo (another python3 may come
// first on PATH).
const python = "/usr/bin/python3"

// kazooScripts run one after another against one shared ensemble; each
// uses its own unique root path.
var kazooScripts = []string{
	"crud_stat.py",
	"ephemeral_sequential.py",
	"watches.py",
	"transactions.py",
	"acl.py",
	"recipes_lock_election.py",
	"recipes_queue_counter.py",
	"recipes_barrier_watchers.py",
	"fourletter.py",
}

func TestKazoo(t *testing.T) {
	requireKazoo(t)
	e := startEnsemble(t, nil)
	for _, s := range kazooScripts {
		t.Run(strings.TrimSuffix(s, ".py"), func(t *testing.T) {
			runKazoo(t, e, s, 90*time.Second)
		})
	}
}

// TestKazooReconnect kills the server a kazoo client is connected to (the
// leader) and restarts it; see kazoo/reconnect.py.
func TestKazooReconnect(t *testing.T) {
	requireKazoo(t)
	e := startEnsemble(t, nil)
	runKazoo(t, e, "reconnect.py", 150*time.Second)
}

func requireKazoo(t *testing.T) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import kazoo, sys; print(kazoo.version.__version__ if hasattr(kazoo, 'version') else '')").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import kazoo (install python3-kazoo): %v\n%s", python, err, out)
	}
}

// runKazoo runs kazoo/<script> with ZK_HOSTS set and serves its driver
// requests ("@@KILL h:p", "@@RESTART h:p") with e.Kill / e.Restart.
func runKazoo(t *testing.T, e *ensemble.Ensemble, script string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	abs, err := filepath.Abs(filepath.Join("kazoo", script))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, python, abs)
	cmd.Dir = filepath.Dir(abs)
	cmd.Env = append(os.Environ(), "ZK_HOSTS="+e.Hosts(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	cmd.WaitDelay = 5 * time.Second
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var driverErrs []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		req, ok := strings.CutPrefix(line, "@@")
		if !ok {
			continue
		}
		answer := "ok"
		if err := serveDriver(t, e, req); err != nil {
			driverErrs = append(driverErrs, err.Error())
			answer = "error: " + strings.ReplaceAll(err.Error(), "\n", " | ")
		}
		io.WriteString(stdin, answer+"\n")
	}
	stdin.Close()
	werr := cmd.Wait()
	elapsed := time.Since(start).Round(time.Millisecond)
	if ctx.Err() != nil {
		t.Errorf("%s: timed out after %v", script, timeout)
	}
	if len(driverErrs) > 0 {
		t.Errorf("%s: driver errors:\n%s", script, strings.Join(driverErrs, "\n"))
	}
	if werr != nil || !strings.Contains(out.String(), "OK "+script) {
		t.Errorf("%s failed (%v) after %v\n--- stdout ---\n%s--- stderr ---\n%s", script, werr, elapsed, out.String(), stderr.String())
		return
	}
	t.Logf("%s passed in %v", script, elapsed)
}

func serveDriver(t *testing.T, e *ensemble.Ensemble, req string) error {
	verb, addr, _ := strings.Cut(req, " ")
	i := e.Index(addr)
	if i < 0 {
		return fmt.Errorf("driver request %q: unknown server %q", req, addr)
	}
	start := time.Now()
	var err error
	switch verb {
	case "KILL":
		err = e.Kill(i)
	case "RESTART":
		err = e.Restart(i)
	default:
		return fmt.Errorf("unknown driver request %q", req)
	}
	t.Logf("driver: %s server %d (%s): %v in %v", strings.ToLower(verb), i+1, addr, err, time.Since(start).Round(time.Millisecond))
	return err
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
