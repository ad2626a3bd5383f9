package disk

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// TestCrashProperties: for random workloads and crash seeds, every crash image
// satisfies checkCrashImage's (a) synced data survives, (b) unsynced data
// never reads back altered, (c) the namespace is exactly the durable one; and
// this holds across several crash/recover rounds on the same disk.
func TestCrashProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		p := rapidPicker{rt}
		s, m := NewSimFS(), newModel()
		rounds := rapid.IntRange(1, 3).Draw(rt, "rounds")
		for round := range rounds {
			n := rapid.IntRange(10, 100).Draw(rt, "ops")
			var err error
			if s, m, err = crashRound(p, s, m, n, rapid.Uint64().Draw(rt, "crashSeed")); err != nil {
				rt.Fatalf("round %d: %v", round, err)
			}
		}
	})
}

// seededWorkload is the deterministic workload the planted-bug test uses:
// two rounds of 60 operations, each ended by a crash.
func seededWorkload(seed uint64) error {
	p := newRandPicker(seed)
	s, m := NewSimFS(), newModel()
	for round := range 2 {
		var err error
		if s, m, err = crashRound(p, s, m, 60, seed*31+uint64(round)); err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
	}
	return nil
}

const plantedBugSeeds = 200

// TestPlantedBugs proves the crash checks bite: with each plausible SimFS bug
// switched on, the same seeded workloads that pass without it produce a
// violation within the first plantedBugSeeds seeds.
func TestPlantedBugs(t *testing.T) {
	for seed := uint64(1); seed <= plantedBugSeeds; seed++ {
		if err := seededWorkload(seed); err != nil {
			t.Fatalf("without a planted bug, seed %d: %v", seed, err)
		}
	}
	for _, bug := range []struct {
		bug  simBug
		name string
	}{
		{bugSyncNoop, "Sync makes nothing durable"},
		{bugCrashVolatileNames, "Crash keeps unsynced directory entries"},
		{bugRemoveDurable, "Remove is durable without SyncDir"},
		{bugTornShift, "torn write slices data by write-relative sector"},
	} {
		t.Run(bug.name, func(t *testing.T) {
			plantedBug = bug.bug
			defer func() { plantedBug = bugNone }()
			for seed := uint64(1); seed <= plantedBugSeeds; seed++ {
				if err := seededWorkload(seed); err != nil {
					t.Logf("caught at seed %d: %v", seed, err)
					return
				}
			}
			t.Fatalf("no violation in %d seeds", plantedBugSeeds)
		})
	}
}

// TestCrashDeterminism: the crash image is a function of the disk and the
// seed alone, and different seeds do explore different images.
func TestCrashDeterminism(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		p := newRandPicker(seed)
		s, m := NewSimFS(), newModel()
		if err := genOps(p, false, s, m, 80); err != nil {
			t.Fatal(err)
		}
		dump := s.Dump()
		a := s.Crash(newNodeRand(seed, 9)).Fingerprint()
		b := s.Clone().Crash(newNodeRand(seed, 9)).Fingerprint()
		c := s.Crash(newNodeRand(seed, 9)).Fingerprint()
		if a != b || a != c {
			t.Fatalf("seed %d: same crash seed gave images %x, %x, %x", seed, a, b, c)
		}
		if s.Dump() != dump {
			t.Fatalf("seed %d: Crash changed the old disk", seed)
		}
	}

	// Twenty unsynced writes to a synced name: nearly every seed differs.
	s := NewSimFS()
	must(t, s.WriteAt("f", 0, nil))
	must(t, s.SyncDir(""))
	for i := range 20 {
		must(t, s.WriteAt("f", int64(i)*700, fill(byte(i+1), 1000)))
	}
	seen := map[uint64]bool{}
	for seed := uint64(0); seed < 10; seed++ {
		seen[s.Crash(newNodeRand(seed, 3)).Fingerprint()] = true
	}
	if len(seen) < 5 {
		t.Fatalf("10 crash seeds gave only %d distinct images", len(seen))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func fill(b byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}
