package jepsen

import (
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"herd/checker"
	"herd/compat/ensemble"
	"herd/node/jute"
)

// keeperWorkload is the keeper fault tests' load: go-zookeeper clients
// setting and (sync + get) reading a few znodes, whose history must be
// linearizable, and watchers checking that a data watch fires before any
// reply that shows its node changed. The faults are the caller's.
type keeperWorkload struct {
	t        *testing.T
	e        *ensemble.Ensemble
	start    time.Time
	deadline time.Time
	wg       sync.WaitGroup

	mu      sync.Mutex
	history []checker.ZKOp

	watchMu     sync.Mutex
	watchErr    error
	watchChecks int
}

const workloadKeys = 5

func workloadKey(i int) string { return fmt.Sprintf("/j%d", i) }

// startKeeperWorkload creates the znodes and starts the clients, which run
// for d.
func startKeeperWorkload(t *testing.T, e *ensemble.Ensemble, d time.Duration) *keeperWorkload {
	w := &keeperWorkload{t: t, e: e, start: time.Now()}
	setup := w.connect()
	for i := range workloadKeys {
		call := w.now()
		_, err := setup.Create(workloadKey(i), []byte("init"), 0, zk.WorldACL(zk.PermAll))
		if err != nil {
			t.Fatalf("create %s: %v", workloadKey(i), err)
		}
		w.record(checker.ZKOp{Client: 0, Key: workloadKey(i), Kind: checker.ZKCreate, Data: "init", Version: -1,
			Call: call, Return: w.now(), FailIndex: -1})
	}
	setup.Close()
	w.deadline = time.Now().Add(d)
	for ci := 1; ci <= 5; ci++ {
		w.spawn(uint64(ci), 7, func(c *zk.Conn, rng *rand.Rand) { w.readWrite(ci, c, rng) })
	}
	for wi := 1; wi <= 2; wi++ {
		w.spawn(uint64(wi), 99, func(c *zk.Conn, rng *rand.Rand) { w.watch(c, rng) })
	}
	return w
}

func (w *keeperWorkload) now() int64 { return int64(time.Since(w.start)) }

func (w *keeperWorkload) record(op checker.ZKOp) {
	w.mu.Lock()
	w.history = append(w.history, op)
	w.mu.Unlock()
}

func (w *keeperWorkload) connect() *zk.Conn {
	c, _, err := zk.Connect(strings.Split(w.e.Hosts(), ","), 10*time.Second,
		zk.WithLogger(log.New(io.Discard, "", 0)))
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// spawn runs fn on a session of its own with its own random stream. It
// connects here, on the test goroutine, where t.Fatal may be called.
func (w *keeperWorkload) spawn(seed, stream uint64, fn func(c *zk.Conn, rng *rand.Rand)) {
	c := w.connect()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer c.Close()
		fn(c, rand.New(rand.NewPCG(seed, stream)))
	}()
}

func (w *keeperWorkload) readWrite(ci int, c *zk.Conn, rng *rand.Rand) {
	for n := 0; time.Now().Before(w.deadline); n++ {
		k := workloadKey(rng.IntN(workloadKeys))
		call := w.now()
		if rng.IntN(10) < 6 {
			data := fmt.Sprintf("c%d-%d", ci, n)
			st, err := c.Set(k, []byte(data), -1)
			op := checker.ZKOp{Client: ci, Key: k, Kind: checker.ZKSet, Data: data, Version: -1,
				Call: call, Return: w.now(), FailIndex: -1}
			if err != nil {
				op.Unknown = true // a lost connection: it may or may not have happened
			} else {
				op.OutVersion = st.Version
			}
			w.record(op)
			continue
		}
		if _, err := c.Sync(k); err != nil {
			continue // a read that failed changed nothing
		}
		data, st, err := c.Get(k)
		if err != nil {
			continue
		}
		w.record(checker.ZKOp{Client: ci, Key: k, Kind: checker.ZKRead, Version: -1, Call: call, Return: w.now(),
			FailIndex: -1, Err: jute.ErrOK, OutData: string(data), OutVersion: st.Version})
	}
}

// watch checks that a data watch fires before any reply that shows its node
// changed. go-zookeeper hands a watch event to its channel before it reads
// the next frame, so once a read returns a newer version than the one the
// watch was set at, the event must already be there.
func (w *keeperWorkload) watch(c *zk.Conn, rng *rand.Rand) {
	for time.Now().Before(w.deadline) {
		k := workloadKey(rng.IntN(workloadKeys))
		_, st, ch, err := c.GetW(k)
		if err != nil {
			continue
		}
		for time.Now().Before(w.deadline) {
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
			w.watchMu.Lock()
			select {
			case <-ch:
				w.watchChecks++
			default:
				if w.watchErr == nil {
					w.watchErr = fmt.Errorf("%s: a read returned version %d (mzxid %#x) while the data watch set at version %d (mzxid %#x) had not fired",
						k, st2.Version, st2.Mzxid, st.Version, st.Mzxid)
				}
			}
			w.watchMu.Unlock()
			break
		}
	}
}

// wait waits for the clients, failing the test if one still waits for an
// answer a minute after the workload ended.
func (w *keeperWorkload) wait() {
	w.t.Helper()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(w.deadline) + time.Minute):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var cons []string
		for i := range w.e.Addrs {
			out, err := ensemble.FourLetterWord(w.e.Addrs[i], "srvr", 2*time.Second)
			cons = append(cons, fmt.Sprintf("s%d srvr (%v):\n%s", i+1, err, out))
			out, err = ensemble.FourLetterWord(w.e.Addrs[i], "cons", 2*time.Second)
			cons = append(cons, fmt.Sprintf("s%d cons (%v):\n%s", i+1, err, out))
			cons = append(cons, fmt.Sprintf("s%d log:\n%s", i+1, w.e.LogTail(i)))
		}
		w.t.Fatalf("clients still waiting for answers a minute after the workload ended: a request hangs\n%s\ngoroutines:\n%s",
			strings.Join(cons, "\n"), buf)
	}
}

// linearizable checks the history (call after wait).
func (w *keeperWorkload) linearizable() error {
	return checker.CheckZKLinearizable(w.history, w.t.TempDir(), time.Minute)
}

// finish waits for the clients and checks what they saw: the watches, and
// the linearizability of the history, which must hold at least minSets
// acknowledged sets and minReads reads.
func (w *keeperWorkload) finish(minSets, minReads int) {
	t := w.t
	t.Helper()
	w.wait()
	var sets, reads, unknown int
	for _, op := range w.history {
		switch {
		case op.Unknown:
			unknown++
		case op.Kind == checker.ZKSet:
			sets++
		case op.Kind == checker.ZKRead:
			reads++
		}
	}
	t.Logf("%d sets acknowledged, %d linearizable reads, %d writes with unknown outcome", sets, reads, unknown)
	t.Logf("%d data watches fired before a read showed their change", w.watchChecks)
	if w.watchErr != nil {
		t.Fatal(w.watchErr)
	}
	if w.watchChecks < 20 {
		t.Fatalf("only %d watch checks: too few to mean anything", w.watchChecks)
	}
	if sets < minSets || reads < minReads {
		t.Fatalf("too little work got done under the faults (%d sets, %d reads): the check would mean nothing", sets, reads)
	}
	if err := w.linearizable(); err != nil {
		t.Fatal(err)
	}
	// The check must be able to fail on this very history: a read of a
	// value nobody wrote has to be caught.
	bad := append([]checker.ZKOp(nil), w.history...)
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
