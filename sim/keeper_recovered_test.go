package sim

import (
	"testing"
	"time"

	"herd/node/keeper"
	"herd/sim/sched"
)

// keeper.Config.Recovered is called once per incarnation, when recovery has
// finished: the production shell trims the heap then (cmd/herd).
func TestKeeperRecoveredHook(t *testing.T) {
	w := NewWorld(1, DefaultParams(FaultProfile{}))
	spec := keeper.ServerSpec{ID: 1, Host: "s1", QuorumPort: 2888, ElectionPort: 3888}
	calls := 0
	cfg := keeper.Config{
		ID: 1, ClientAddr: "s1:2181", Servers: []keeper.ServerSpec{spec}, DataDir: "/data",
		TickTime: 200 * time.Millisecond, SyncLimit: 5, ContainerCheck: time.Second,
		RaftTick: 50 * time.Millisecond, ElectionTicks: 10,
		Recovered: func() { calls++ },
	}
	n := w.AddNode(NodeSpec{Name: "s1", Listen: []string{spec.PeerAddr(), "s1:2181"}, Factory: keeper.New(cfg)})
	w.runUntil(sched.Time(time.Second))
	if calls != 1 {
		t.Fatalf("after the first start: %d calls, want 1", calls)
	}
	n.Kill()
	n.Restart()
	w.runUntil(sched.Time(2 * time.Second))
	if calls != 2 || n.LastHalt() != "" {
		t.Fatalf("after a restart: %d calls, want 2 (halt %q)", calls, n.LastHalt())
	}
}
