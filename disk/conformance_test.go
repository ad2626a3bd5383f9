package disk

import (
	"maps"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestConformance runs one random sequence of operations (valid and invalid,
// on a small set of colliding names) against a SimFS, an OS rooted in a
// temporary directory and the reference model, and requires identical results
// from all three: the same bytes, the same listings and stats, and errors
// wrapping the same node sentinel. A core therefore sees the same disk in the
// simulator and in production. The OS gets a tiny handle cache so that
// evictions, reopenings and renames of cached files are exercised too.
func TestConformance(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		o, err := NewOS(t.TempDir())
		if err != nil {
			rt.Fatal(err)
		}
		defer o.Close()
		o.maxHandles = rapid.IntRange(1, 4).Draw(rt, "maxHandles")
		s, m := NewSimFS(), newModel()
		p := rapidPicker{rt}
		n := rapid.IntRange(20, 200).Draw(rt, "ops")
		for i := range n {
			op := gen{p: p, invalid: true, known: slices.Sorted(maps.Keys(m.tree(false)))}.op()
			want := m.apply(op)
			if err := sameResult(op, run(s, op), want); err != nil {
				rt.Fatalf("op %d, SimFS vs model: %v", i, err)
			}
			if err := sameResult(op, run(o, op), want); err != nil {
				rt.Fatalf("op %d, OS vs model: %v", i, err)
			}
			if o.lru.Len() > o.maxHandles || o.lru.Len() != len(o.handles) {
				rt.Fatalf("handle cache: %d in list, %d in map, max %d", o.lru.Len(), len(o.handles), o.maxHandles)
			}
		}
		st, err := fsTree(s)
		if err != nil {
			rt.Fatal(err)
		}
		ot, err := fsTree(o)
		if err != nil {
			rt.Fatal(err)
		}
		if err := sameTree(ot, st, true); err != nil {
			rt.Fatalf("final trees differ: %v", err)
		}
	})
}
