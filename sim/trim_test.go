package sim

import "testing"

// TestTrimming checks that servers empty the old snapshots and segments
// they discard step by step (raft storage.discard) rather than removing
// them whole: fault-free runs must trim some files in more than one step.
func TestTrimming(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		r := faultFreeConsensus(t, seed, nil, nil)
		t.Logf("seed %d: %d files trimmed", seed, r.Counters["trimmed"])
		if r.Counters["trimmed"] == 0 {
			t.Errorf("seed %d: no discarded file was emptied in steps", seed)
		}
	}
}
