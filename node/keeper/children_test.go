package keeper

import (
	"fmt"
	"slices"
	"testing"
	"unsafe"

	"pgregory.net/rapid"
)

// TestChildSetMatchesMap runs random adds and removes against a map model:
// every name is found exactly while it is a member, the count agrees, the
// set shrinks back as it empties, and listing returns exactly the members.
// Names come from a small alphabet so probe runs collide and wrap.
func TestChildSetMatchesMap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.Uint64().Draw(t, "seed")
		var s *childSet
		model := map[string]*znode{}
		names := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-c]{0,3}`), 1, 40, rapid.ID[string]).Draw(t, "names")
		for step := range rapid.IntRange(1, 300).Draw(t, "steps") {
			name := names[rapid.IntRange(0, len(names)-1).Draw(t, "name")]
			if c := model[name]; c != nil {
				if s.remove(seed, c) {
					s = nil
				}
				delete(model, name)
			} else {
				c := &znode{}
				c.setNameData(name, []byte("x"))
				if s == nil {
					s = &childSet{}
				}
				s.add(seed, c)
				model[name] = c
			}
			if s != nil {
				if err := s.verify(seed); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
			}
			if s.len() != len(model) {
				t.Fatalf("step %d: set holds %d, model %d", step, s.len(), len(model))
			}
			for _, n := range names {
				if got := s.get(seed, n); got != model[n] {
					t.Fatalf("step %d: get(%q) = %p, want %p", step, n, got, model[n])
				}
				if got := s.find(seed, []byte(n)); got != model[n] {
					t.Fatalf("step %d: find(%q) = %p, want %p", step, n, got, model[n])
				}
			}
			if s != nil && len(s.slots) > minChildSlots && s.n*4 < len(s.slots)/2 {
				t.Fatalf("step %d: %d members in %d slots: not shrunk", step, s.n, len(s.slots))
			}
		}
		var got, want []string
		for _, c := range s.appendTo(nil) {
			got = append(got, c.name())
		}
		for n := range model { // order-independent: sorted below
			want = append(want, n)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("listing %v, want %v", got, want)
		}
	})
}

// TestChildSetSeedSpreadsNames: with different seeds the same names land in
// different slots (the seed reaches the slot index).
func TestChildSetSeedSpreadsNames(t *testing.T) {
	layout := func(seed uint64) string {
		s := &childSet{}
		for i := range 100 {
			c := &znode{}
			c.setNameData(fmt.Sprintf("n%07d", i), nil)
			s.add(seed, c)
		}
		out := ""
		for _, c := range s.slots {
			if c != nil {
				out += c.name() + ","
			}
		}
		return out
	}
	if layout(1) == layout(2) {
		t.Fatal("two seeds gave the same slot layout")
	}
	if layout(3) != layout(3) {
		t.Fatal("one seed gave two layouts")
	}
}

// TestZnodeSize: the znode struct fills the 112-byte size class exactly; a
// field more would cost a million-znode tree 16 MB (see znode's comments).
func TestZnodeSize(t *testing.T) {
	if s := unsafe.Sizeof(znode{}); s > 112 {
		t.Fatalf("znode is %d bytes, over the 112-byte size class", s)
	}
}

// TestChildSetLookupsDoNotAllocate: get and find run on every path lookup.
func TestChildSetLookupsDoNotAllocate(t *testing.T) {
	s := &childSet{}
	for i := range 100 {
		c := &znode{}
		c.setNameData(fmt.Sprintf("n%07d", i), nil)
		s.add(7, c)
	}
	name, nameBytes := "n0000042", []byte("n0000042")
	if n := testing.AllocsPerRun(100, func() {
		if s.get(7, name) == nil || s.find(7, nameBytes) == nil {
			t.Fatal("member not found")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per lookup", n)
	}
}
