package jepsen

import (
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"herd/compat/ensemble"
)

// lineCounter counts log lines containing a phrase (the servers' logs go
// through it).
type lineCounter struct {
	mu     sync.Mutex
	phrase string
	n      int
	buf    []byte
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	for {
		i := strings.IndexByte(string(c.buf), '\n')
		if i < 0 {
			break
		}
		if strings.Contains(string(c.buf[:i]), c.phrase) {
			c.n++
		}
		c.buf = c.buf[i+1:]
	}
	return len(p), nil
}

func (c *lineCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestKeeperLinearizableUnderFaults runs three `herd keeper` processes with
// snapshots every 50 entries, so that a follower stopped for a while is
// caught up by a snapshot rather than by entries, and go-zookeeper clients
// setting and (sync + get) reading five znodes while followers are stopped
// (SIGSTOP/SIGCONT) and leaders killed (SIGKILL) and restarted. The history
// of every write and linearizable read must be linearizable (Porcupine, the
// simulator's model).
func TestKeeperLinearizableUnderFaults(t *testing.T) {
	installs := &lineCounter{phrase: "installed snapshot"}
	e, err := ensemble.Start(ensemble.Herd, ensemble.Options{HerdBin: herdBin, Log: installs, HerdFlags: []string{"-v"},
		Extra: map[string]string{"snapCount": "50"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()

	const workload = 20 * time.Second
	w := startKeeperWorkload(t, e, workload)
	deadline := w.deadline

	// Faults: stop a follower for 2.5 s, kill the leader and restart it.
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; time.Now().Add(4 * time.Second).Before(deadline); round++ {
		leader := e.Leader()
		if leader < 0 {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if round%2 == 0 {
			f := (leader + 1 + rng.IntN(2)) % 3
			pid := e.PIDs()[f]
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2500 * time.Millisecond)
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := e.Kill(leader); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			if err := e.Restart(leader); err != nil {
				t.Fatalf("restarting s%d: %v", leader+1, err)
			}
		}
		time.Sleep(time.Second)
	}
	w.finish(100, 50)
	t.Logf("%d snapshot installs logged", installs.count())
	if installs.count() == 0 {
		t.Fatalf("no follower was caught up by a snapshot: the faults did not exercise what this test is for")
	}
}
