package sim

import "testing"

// TestBrokerRetention checks that the broker scenario exercises retention:
// fault-free runs see the retained topic's log start move, and where the
// run draws small trash steps, deleted segments emptied in several steps.
func TestBrokerRetention(t *testing.T) {
	stepped := 0
	for seed := uint64(1); seed <= 6; seed++ {
		r := Run(Options{Seed: seed, Scenario: "broker", Tune: func(p *Params) { p.Faults = FaultRates{} }})
		if !r.OK() {
			t.Fatalf("seed %d failed: %v", seed, r.Failure)
		}
		t.Logf("seed %d: log start %d, %d files emptied in steps (step %d)", seed, r.Counters["log-start"], r.Counters["trash-emptied"], drawTrashStep(seed))
		if r.Counters["log-start"] == 0 {
			t.Errorf("seed %d: retention never moved the log start", seed)
		}
		if drawTrashStep(seed) > 0 {
			stepped++
			if r.Counters["trash-emptied"] == 0 {
				t.Errorf("seed %d: no deleted segment was emptied in steps", seed)
			}
		}
	}
	if stepped == 0 {
		t.Fatal("no seed drew small trash steps")
	}
}
