package sim

import (
	"testing"
	"time"

	"herd/node/raft"
)

// TestAppendCoalescing checks that a leader holds a partly filled append
// while another is in flight. With slow fsyncs many proposals arrive during
// one follower write; the same fault-free runs (each client makes a fixed
// number of proposals) must then need clearly fewer network chunks than
// with every flush's entries sent at once.
func TestAppendCoalescing(t *testing.T) {
	run := func(seed uint64, off bool) Result {
		return faultFreeConsensus(t, seed,
			func(p *Params) { p.Disk.Sync = Latency{Min: 30 * time.Millisecond, Mean: 40 * time.Millisecond} },
			func(c *raft.Config) { c.NoAppendCoalescing = off })
	}
	for seed := uint64(1); seed <= 3; seed++ {
		on, off := run(seed, false), run(seed, true)
		t.Logf("seed %d: %d chunks coalescing, %d not", seed, on.Net.Chunks, off.Net.Chunks)
		if float64(on.Net.Chunks) > 0.85*float64(off.Net.Chunks) {
			t.Errorf("seed %d: %d network chunks with coalescing, %d without: appends are not being held", seed, on.Net.Chunks, off.Net.Chunks)
		}
	}
}

// faultFreeConsensus runs one consensus seed with every fault rate at zero,
// after tune and with raftCfg applied to every server, and fails the test
// if the run fails.
func faultFreeConsensus(t *testing.T, seed uint64, tune func(*Params), raftCfg func(*raft.Config)) Result {
	t.Helper()
	r := Run(Options{Seed: seed, Scenario: "consensus",
		Tune: func(p *Params) {
			p.Faults = FaultRates{}
			if tune != nil {
				tune(p)
			}
		},
		Raft: raftCfg})
	if !r.OK() {
		t.Fatalf("seed %d failed: %v", seed, r.Failure)
	}
	return r
}
