package jepsen

import (
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"herd/checker"
	"herd/compat/ensemble"
	"herd/node/jute"
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

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	var history []checker.ZKOp
	record := func(op checker.ZKOp) {
		mu.Lock()
		history = append(history, op)
		mu.Unlock()
	}
	connect := func() *zk.Conn {
		c, _, err := zk.Connect(strings.Split(e.Hosts(), ","), 10*time.Second,
			zk.WithLogger(log.New(io.Discard, "", 0)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const nKeys = 5
	key := func(i int) string { return fmt.Sprintf("/j%d", i) }
	setup := connect()
	for i := range nKeys {
		call := now()
		_, err := setup.Create(key(i), []byte("init"), 0, zk.WorldACL(zk.PermAll))
		if err != nil {
			t.Fatalf("create %s: %v", key(i), err)
		}
		record(checker.ZKOp{Client: 0, Key: key(i), Kind: checker.ZKCreate, Data: "init", Version: -1,
			Call: call, Return: now(), FailIndex: -1})
	}
	setup.Close()

	const workload = 20 * time.Second
	deadline := time.Now().Add(workload)
	var wg sync.WaitGroup
	// spawn runs fn on a session of its own with its own random stream. It
	// connects here, on the test goroutine, where t.Fatal may be called.
	spawn := func(seed, stream uint64, fn func(c *zk.Conn, rng *rand.Rand)) {
		c := connect()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			fn(c, rand.New(rand.NewPCG(seed, stream)))
		}()
	}
	for ci := 1; ci <= 5; ci++ {
		spawn(uint64(ci), 7, func(c *zk.Conn, rng *rand.Rand) {
			for n := 0; time.Now().Before(deadline); n++ {
				k := key(rng.IntN(nKeys))
				call := now()
				if rng.IntN(10) < 6 {
					data := fmt.Sprintf("c%d-%d", ci, n)
					st, err := c.Set(k, []byte(data), -1)
					op := checker.ZKOp{Client: ci, Key: k, Kind: checker.ZKSet, Data: data, Version: -1,
						Call: call, Return: now(), FailIndex: -1}
					if err != nil {
						op.Unknown = true // a lost connection: it may or may not have happened
					} else {
						op.OutVersion = st.Version
					}
					record(op)
					continue
				}
				if _, err := c.Sync(k); err != nil {
					continue // a read that failed changed nothing
				}
				data, st, err := c.Get(k)
				if err != nil {
					continue
				}
				record(checker.ZKOp{Client: ci, Key: k, Kind: checker.ZKRead, Version: -1, Call: call, Return: now(),
					FailIndex: -1, Err: jute.ErrOK, OutData: string(data), OutVersion: st.Version})
			}
		})
	}
	// Watchers: a data watch must fire before any reply that shows its
	// node changed. go-zookeeper hands a watch event to its channel before
	// it reads the next frame, so once a read returns a newer version than
	// the one the watch was set at, the event must already be there.
	var watchMu sync.Mutex
	var watchErr error
	var watchChecks int
	for wi := 1; wi <= 2; wi++ {
		spawn(uint64(wi), 99, func(c *zk.Conn, rng *rand.Rand) {
			for time.Now().Before(deadline) {
				k := key(rng.IntN(nKeys))
				_, st, ch, err := c.GetW(k)
				if err != nil {
					continue
				}
				for time.Now().Before(deadline) {
					if _, err := c.Sync(k); err != nil {
						break
					}
					_, st2, err := c.Get(k)
					if err != nil {
						break
					}
					if st2.Mzxid <= st.Mzxid {
						continue
					}
					select {
					case <-ch:
						watchMu.Lock()
						watchChecks++
						watchMu.Unlock()
					default:
						watchMu.Lock()
						if watchErr == nil {
							watchErr = fmt.Errorf("%s: a read returned version %d (mzxid %#x) while the data watch set at version %d (mzxid %#x) had not fired",
								k, st2.Version, st2.Mzxid, st.Version, st.Mzxid)
						}
						watchMu.Unlock()
					}
					break
				}
			}
		})
	}

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
	wg.Wait()

	var sets, reads, unknown int
	for _, op := range history {
		switch {
		case op.Unknown:
			unknown++
		case op.Kind == checker.ZKSet:
			sets++
		case op.Kind == checker.ZKRead:
			reads++
		}
	}
	t.Logf("%d sets acknowledged, %d linearizable reads, %d writes with unknown outcome; %d snapshot installs logged",
		sets, reads, unknown, installs.count())
	t.Logf("%d data watches fired before a read showed their change", watchChecks)
	if watchErr != nil {
		t.Fatal(watchErr)
	}
	if watchChecks < 20 {
		t.Fatalf("only %d watch checks: too few to mean anything", watchChecks)
	}
	if installs.count() == 0 {
		t.Fatalf("no follower was caught up by a snapshot: the faults did not exercise what this test is for")
	}
	if sets < 100 || reads < 50 {
		t.Fatalf("too little work got done under the faults (%d sets, %d reads): the check would mean nothing", sets, reads)
	}
	if err := checker.CheckZKLinearizable(history, t.TempDir(), time.Minute); err != nil {
		t.Fatal(err)
	}
	// The check must be able to fail on this very history: a read of a
	// value nobody wrote has to be caught.
	bad := append([]checker.ZKOp(nil), history...)
	for i := range bad {
		if bad[i].Kind == checker.ZKRead && !bad[i].Unknown {
			bad[i].OutData = "never written"
			break
		}
	}
	if checker.CheckZKLinearizable(bad, "", time.Minute) == nil {
		t.Fatal("the history with a read of a value never written passed the check: the check is not looking")
	}
}
