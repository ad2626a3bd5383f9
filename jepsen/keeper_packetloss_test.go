package jepsen

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"herd/compat/ensemble"
)

// Cut lengths and the bound on recovery. A socket whose data goes
// unacknowledged retransmits after 0.2, 0.6, 1.4, 3.0, 6.2, 12.6 and 25.4
// s (loopback's minimum timeout, doubling), so a cut of 14 s healed before
// a connection is reset leaves it silent for 11 s more. With the servers'
// bound on unacknowledged data (syncLimit × tickTime, 2.5 s here) the
// connection is aborted during the cut and redialed; the bound below is
// that plus a dial and an election, with room for a loaded machine.
const (
	packetLossCut      = 14 * time.Second
	packetLossRecovery = 6 * time.Second
)

// TestKeeperRecoversFromPacketLoss runs three `herd keeper` processes in a
// network namespace of the test's own, each on its own loopback address,
// and makes partitions the way a network does: the packets between two
// servers are dropped, both ways (blackhole), so connections are not reset
// but go silent, and TCP retransmits into the void at growing intervals.
// One round isolates a follower, the next the leader, each for
// packetLossCut, under the keeper workload (keeper_workload_test.go),
// whose history must be linearizable. After each heal every server, asked
// alone, must take a write and answer a sync + read within
// packetLossRecovery: a server must not wait for its kernel's next
// retransmission to hear its peers again. HERD_PEER_USER_TIMEOUT=0 (the
// servers without their bound on unacknowledged data) makes it fail.
func TestKeeperRecoversFromPacketLoss(t *testing.T) {
	if !inNamespaces(t) {
		return
	}
	e, err := ensemble.Start(ensemble.Herd, ensemble.Options{HerdBin: herdBin, Host: serverHost,
		Extra: map[string]string{"tickTime": "500", "syncLimit": "5", "snapCount": "200"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop() })
	baseline := allServe(e, "/baseline", time.Now().Add(30*time.Second))
	rounds := []string{"follower", "leader"}
	w := startKeeperWorkload(t, e, time.Duration(len(rounds))*(packetLossCut+4*time.Second))
	schedule := []string{fmt.Sprintf("before any cut every server served in %v", baseline.Round(10*time.Millisecond))}
	var slow []string
	for r, which := range rounds {
		leader := waitLeader(t, e)
		victim := leader
		if which == "follower" {
			victim = leader%3 + 1
		}
		cut := time.Now()
		for other := 1; other <= 3; other++ {
			if other != victim {
				blackhole(t, true, victim, other)
				blackhole(t, true, other, victim)
			}
		}
		// The cut must bite: the victim, alone, cannot take a write.
		time.Sleep(3 * time.Second)
		if err := serves(e.Addrs[victim-1], fmt.Sprintf("/cut-%d", r), time.Now().Add(2*time.Second)); err == nil {
			t.Fatalf("s%d took a write while cut off from its peers", victim)
		}
		time.Sleep(time.Until(cut.Add(packetLossCut)))
		for other := 1; other <= 3; other++ {
			if other != victim {
				blackhole(t, false, victim, other)
				blackhole(t, false, other, victim)
			}
		}
		healed := time.Now()
		took := allServe(e, fmt.Sprintf("/recover-%d", r), healed.Add(30*time.Second))
		line := fmt.Sprintf("%.1fs: %s s%d (leader s%d) cut off for %v; after the heal every server served in %v",
			cut.Sub(w.start).Seconds(), which, victim, leader, packetLossCut, took.Round(10*time.Millisecond))
		schedule = append(schedule, line)
		if took > packetLossRecovery {
			slow = append(slow, line)
		}
		time.Sleep(2 * time.Second)
	}
	w.finish(100, 50)
	for _, s := range schedule {
		t.Log(s)
	}
	if len(slow) > 0 {
		t.Fatalf("servers took longer than %v to serve after a heal:\n%s", packetLossRecovery, strings.Join(slow, "\n"))
	}
}

// waitLeader returns the leader's id (1-based), waiting for one.
func waitLeader(t *testing.T, e *ensemble.Ensemble) int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if l := e.Leader(); l >= 0 {
			return l + 1
		}
	}
	t.Fatal("no leader within 20 s")
	return 0
}

// allServe asks every server at once to take a write and answer a sync +
// read (serves), and returns how long the slowest took; a server that
// never did counts as the whole time to the deadline.
func allServe(e *ensemble.Ensemble, path string, deadline time.Time) time.Duration {
	start := time.Now()
	var mu sync.Mutex
	var slowest time.Duration
	var wg sync.WaitGroup
	for i, addr := range e.Addrs {
		wg.Go(func() {
			err := serves(addr, fmt.Sprintf("%s-%d", path, i+1), deadline)
			took := time.Since(start)
			if err != nil {
				took = time.Until(deadline) + took
			}
			mu.Lock()
			slowest = max(slowest, took)
			mu.Unlock()
		})
	}
	wg.Wait()
	return slowest
}

// blackhole starts (or stops) dropping every packet from server from's
// address to server to's. The packets are dropped as they arrive, after
// the sender's TCP counted them as sent, as a network loses them: a tc
// filter on loopback's ingress redirects them to a device whose peer is
// down, which drops them. (Dropping them as they leave, with an `ip rule`
// blackhole, fails the send at the sender, and TCP then sends again as
// soon as it is written to, instead of at its retransmission timeout.)
func blackhole(t *testing.T, add bool, from, to int) {
	t.Helper()
	prio := strconv.Itoa(10*from + to)
	if add {
		tc(t, "filter", "add", "dev", "lo", "parent", "ffff:", "protocol", "ip", "prio", prio, "u32",
			"match", "ip", "src", serverHost(from)+"/32", "match", "ip", "dst", serverHost(to)+"/32",
			"action", "mirred", "egress", "redirect", "dev", "drop0")
	} else {
		tc(t, "filter", "del", "dev", "lo", "parent", "ffff:", "protocol", "ip", "prio", prio)
	}
}
