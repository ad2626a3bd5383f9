package jepsen

import (
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"herd/compat/ensemble"
)

// TestKeeperLinearizableUnderPartitions runs three `herd keeper` processes
// whose peer traffic goes through loopback links (linkproxy_test.go), and
// the keeper workload (keeper_workload_test.go) while the links make
// partitions: the leader cut off from both followers (its clients still
// reach it), a follower cut off, the leader hearing nobody while its own
// messages still arrive, and the leader and one follower unable to reach
// each other while the third server reaches both. Each cut either holds
// the bytes (a network dropping packets: connections hang, then resume
// in order) or resets the connections. The history must stay linearizable
// and the watches timely (safety); then, with every link up again, every
// server must serve a write and a linearizable read within a bound
// (liveness: no connection left hanging, no server left out).
func TestKeeperLinearizableUnderPartitions(t *testing.T) {
	links := newLinkSet()
	t.Cleanup(links.Close) // after the servers stop (cleanups run last first)
	e, w, leaders, rounds := runPartitions(t, links, "", 24*time.Second)
	w.finish(100, 50)

	// Liveness: every link is up; each server, asked alone, must take a
	// write and answer a read after sync.
	healed := time.Now()
	for i, addr := range e.Addrs {
		if err := serves(addr, fmt.Sprintf("/live-%d", i+1), healed.Add(20*time.Second)); err != nil {
			t.Fatalf("s%d (%s) did not serve within 20 s: %v\n%s", i+1, addr, err, e.LogTail(i))
		}
	}
	t.Logf("every server served %.1f s after the check began", time.Since(healed).Seconds())
	// Idle, no server may still hold requests: what connections closed by
	// the partitions waited for (entries lost with a leader) is forgotten.
	for i, addr := range e.Addrs {
		var out string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out, _ = ensemble.FourLetterWord(addr, "srvr", 2*time.Second)
			if strings.Contains(out, "\nOutstanding: 0\n") || time.Now().After(deadline) {
				break
			}
		}
		if !strings.Contains(out, "\nOutstanding: 0\n") {
			t.Fatalf("s%d still holds requests 10 s after the workload ended:\n%s", i+1, out)
		}
	}

	// The faults must have done what this test is for.
	if after := e.Leader(); after >= 0 {
		leaders[after+1] = true
	}
	var accepted, resets int
	for from := 1; from <= 3; from++ {
		for to := 1; to <= 3; to++ {
			if l := links.Get(from, to); l != nil {
				a, r := l.Stats()
				accepted += a
				resets += r
			}
		}
	}
	t.Logf("%d rounds, leaders seen %v, %d peer connections accepted, %d reset by a cut", rounds, leaders, accepted, resets)
	if len(leaders) < 2 {
		t.Fatalf("the leadership never moved: the partitions did not exercise what this test is for")
	}
	if resets == 0 {
		t.Fatalf("no peer connection was reset: the partitions did not exercise what this test is for")
	}
}

// runPartitions starts the ensemble (servers started with the planted bug
// if bug is not empty, or the one HERD_JEPSEN_PLANT names: `herd keeper
// --plant-bug`, to see this test catch it) and the
// workload, makes partitions until the workload ends, and heals every
// link. It returns the leaders it saw and the number of rounds.
func runPartitions(t *testing.T, links *linkSet, bug string, d time.Duration) (*ensemble.Ensemble, *keeperWorkload, map[int]bool, int) {
	t.Helper()
	if env := os.Getenv("HERD_JEPSEN_PLANT"); env != "" && bug == "" {
		bug = env
	}
	var flags []string
	if bug != "" {
		flags = []string{"--plant-bug", bug}
	}
	if os.Getenv("HERD_JEPSEN_VERBOSE") != "" {
		flags = append(flags, "-v")
	}
	// tickTime 500 ms: elections after 0.5-1 s, so partitions of a few
	// seconds move the leadership; snapshots every 100-200 entries, so a
	// server cut off long enough is caught up by one.
	e, err := ensemble.Start(ensemble.Herd, ensemble.Options{HerdBin: herdBin, PeerPort: links.PeerPort, HerdFlags: flags,
		Extra: map[string]string{"tickTime": "500", "snapCount": "200"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop() }) // also when the workload fails to start
	w := startKeeperWorkload(t, e, d)
	rng := rand.New(rand.NewPCG(3, 4))
	leaders := map[int]bool{}
	var schedule []string
	for round := 0; time.Now().Add(5 * time.Second).Before(w.deadline); round++ {
		leader := e.Leader()
		if leader < 0 {
			time.Sleep(300 * time.Millisecond)
			continue
		}
		leaders[leader+1] = true
		l := leader + 1 // 1-based ids from here
		f1, f2 := l%3+1, (l+1)%3+1
		if rng.IntN(2) == 0 {
			f1, f2 = f2, f1
		}
		mode := linkHeld
		if rng.IntN(2) == 0 {
			mode = linkRefused
		}
		var cut [][2]int
		var what string
		switch round % 4 {
		case 0:
			what = fmt.Sprintf("leader s%d isolated", l)
			cut = [][2]int{{l, f1}, {f1, l}, {l, f2}, {f2, l}}
		case 1:
			what = fmt.Sprintf("follower s%d isolated", f1)
			cut = [][2]int{{f1, l}, {l, f1}, {f1, f2}, {f2, f1}}
		case 2:
			what = fmt.Sprintf("leader s%d hears nobody", l)
			cut = [][2]int{{f1, l}, {f2, l}}
		case 3:
			what = fmt.Sprintf("leader s%d and s%d apart, s%d reaches both", l, f1, f2)
			cut = [][2]int{{l, f1}, {f1, l}}
		}
		d := 1500*time.Millisecond + time.Duration(rng.IntN(2000))*time.Millisecond
		schedule = append(schedule, fmt.Sprintf("%.1fs: %s (%s) for %v", time.Since(w.start).Seconds(), what, mode, d))
		for _, c := range cut {
			links.Get(c[0], c[1]).Set(mode)
		}
		time.Sleep(d)
		links.HealAll()
		time.Sleep(1500 * time.Millisecond)
	}
	for _, s := range schedule {
		t.Log(s)
	}
	return e, w, leaders, len(schedule)
}

// serves reports whether the server at addr, alone, takes a write to path
// and answers a read of it after sync before the deadline; it retries
// what fails until then.
func serves(addr, path string, deadline time.Time) error {
	c, _, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogger(log.New(io.Discard, "", 0)))
	if err != nil {
		return err
	}
	defer c.Close()
	var last error
	for time.Now().Before(deadline) {
		_, err := c.Create(path, []byte("live"), 0, zk.WorldACL(zk.PermAll))
		if err == nil || errors.Is(err, zk.ErrNodeExists) {
			if _, err = c.Sync(path); err == nil {
				var data []byte
				if data, _, err = c.Get(path); err == nil {
					if string(data) != "live" {
						return fmt.Errorf("read %q from %s, want %q", data, path, "live")
					}
					return nil
				}
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("still failing at the deadline: %v", last)
}
