package sim

import (
	"testing"

	"herd/node/raft"
)

// TestPeerAcks checks that followers commit from each other's
// acknowledgements (raft.Raft.peerAcked) in fault-free runs, and only when
// that is switched on; the planted bug peer-ack-leader shows that the
// consensus checks catch a follower that counts the leader's copy.
func TestPeerAcks(t *testing.T) {
	run := func(seed uint64, off bool) Result {
		return faultFreeConsensus(t, seed, nil, func(c *raft.Config) { c.NoPeerAcks = off })
	}
	for seed := uint64(1); seed <= 3; seed++ {
		on, off := run(seed, false), run(seed, true)
		t.Logf("seed %d: %d commits from peer acknowledgements (%d with them off)", seed, on.Counters["peer-commits"], off.Counters["peer-commits"])
		if on.Counters["peer-commits"] == 0 {
			t.Errorf("seed %d: no follower committed from its fellow followers' acknowledgements", seed)
		}
		if n := off.Counters["peer-commits"]; n != 0 {
			t.Errorf("seed %d: %d peer commits with peer acknowledgements switched off", seed, n)
		}
	}
}
