package jepsen

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"herd/compat/ensemble"
)

// netnsEnv marks a test process that runs inside namespaces of its own
// (runInNamespaces), where it may change routing and mount file systems.
const netnsEnv = "HERD_JEPSEN_NETNS"

// packetLossHost is server id's address: one per server, so that a filter
// can drop the packets between two of them (the servers dial their peers
// from the address they listen on).
func packetLossHost(id int) string { return fmt.Sprintf("127.0.0.%d", 10+id) }

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
// but go silent, and TCP retransmits into the void at growing intervals. One round isolates a follower, the next the leader, each for
// packetLossCut, under the keeper workload (keeper_workload_test.go),
// whose history must be linearizable. After each heal every server, asked
// alone, must take a write and answer a sync + read within
// packetLossRecovery: a server must not wait for its kernel's next
// retransmission to hear its peers again. HERD_PEER_USER_TIMEOUT=0 (the
// servers without their bound on unacknowledged data) makes it fail.
func TestKeeperRecoversFromPacketLoss(t *testing.T) {
	if os.Getenv(netnsEnv) == "" {
		runInNamespaces(t, "TestKeeperRecoversFromPacketLoss")
		return
	}
	netnsSetup(t)
	e, err := ensemble.Start(ensemble.Herd, ensemble.Options{HerdBin: herdBin, Host: packetLossHost,
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
			"match", "ip", "src", packetLossHost(from)+"/32", "match", "ip", "dst", packetLossHost(to)+"/32",
			"action", "mirred", "egress", "redirect", "dev", "drop0")
	} else {
		tc(t, "filter", "del", "dev", "lo", "parent", "ffff:", "protocol", "ip", "prio", prio)
	}
}

func tc(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
		t.Fatalf("tc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// netnsSetup prepares a fresh network namespace: loopback up, with an
// ingress qdisc for blackhole's filters, and drop0, a veth whose peer is
// down, for them to send what they drop to.
func netnsSetup(t *testing.T) {
	t.Helper()
	ip(t, "link", "set", "lo", "up")
	ip(t, "link", "add", "drop0", "type", "veth", "peer", "name", "drop1")
	ip(t, "link", "set", "drop0", "up")
	tc(t, "qdisc", "add", "dev", "lo", "ingress")
}

// runInNamespaces runs test (this binary's test of that name) again in a
// network and a mount namespace of its own, where it may change routing
// and mount file systems without touching the machine's: `unshare -nm` as
// root, else `unshare -rnm` (an unprivileged user namespace). Its output is
// this test's log.
func runInNamespaces(t *testing.T, test string) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs `ip` (Debian package iproute2)")
	}
	if _, err := exec.LookPath("tc"); err != nil {
		t.Fatal("this test needs `tc` (Debian package iproute2)")
	}
	unshare := []string{"unshare", "-nm"}
	if os.Geteuid() != 0 {
		unshare = []string{"unshare", "-rnm"}
	}
	if out, err := exec.Command(unshare[0], append(unshare[1:], "true")...).CombinedOutput(); err != nil {
		t.Fatalf("this test needs namespaces of its own, and `%s true` failed: %v %s\n(run as root, or enable unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)",
			strings.Join(unshare, " "), err, bytes.TrimSpace(out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append(unshare[1:], os.Args[0], "-test.run", "^"+test+"$", "-test.count", "1", "-test.v")
	cmd := exec.CommandContext(ctx, unshare[0], args...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1", herdBinEnv+"="+herdBin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		t.Log(l)
	}
	if err != nil {
		t.Fatalf("%s in its namespaces: %v", test, err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+test+" ") {
		t.Fatalf("%s did not run in its namespaces", test)
	}
}
