package keeper

import (
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// childSet holds a znode's children, found by name: an open-addressing hash
// set of pointers (linear probing, at most 3/4 full). A map[string]*znode
// spends a slot on the key string as well (24 bytes a child against 8, and
// a second copy of every name); with a million znodes that was a sixth of
// the tree's heap. The name lives in the child (znode.buf).
//
// Slot order depends on the hash seed, which differs per server: nothing
// that reaches a client or a file may depend on it (listings and snapshots
// sort). The seed comes from the server's random stream so that a client
// cannot choose names that all collide.
//
// Each slot has a one-byte tag beside it (the hash's top bits, 0 for an
// empty slot), so a probe compares tags in a small dense array and follows
// a pointer to compare names only on a tag match: without tags every probe
// was a cache miss on a child (a tenth of a leader's CPU under load).
type childSet struct {
	tags  []uint8  // per slot: 0 empty, else tagOf(hash)
	slots []*znode // length a power of two, at least minChildSlots
	n     int
}

func tagOf(h uint64) uint8 { return uint8(h>>57) | 0x80 }

const minChildSlots = 4

// hashName is the slot hash of a child name. The seed is mixed in after
// xxhash by a bijective finaliser (splitmix64's), so every bit of the slot
// index depends on the seed.
func hashName(seed uint64, name []byte) uint64 {
	return mixSeed(seed, xxhash.Sum64(name))
}

func hashNameString(seed uint64, name string) uint64 {
	return mixSeed(seed, xxhash.Sum64String(name))
}

func mixSeed(seed, h uint64) uint64 {
	h ^= seed
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

func (s *childSet) len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// get returns the child called name, or nil.
func (s *childSet) get(seed uint64, name string) *znode {
	if s == nil {
		return nil
	}
	return probe(s, hashNameString(seed, name), name)
}

// find is get for a name held as bytes.
func (s *childSet) find(seed uint64, name []byte) *znode {
	if s == nil {
		return nil
	}
	return probe(s, hashName(seed, name), name)
}

// probe walks name's probe run from its hash h: a tag match is confirmed by
// comparing names (the conversions in the comparison do not allocate).
func probe[N string | []byte](s *childSet, h uint64, name N) *znode {
	mask := uint64(len(s.slots) - 1)
	tag := tagOf(h)
	for i := h & mask; ; i = (i + 1) & mask {
		switch s.tags[i] {
		case 0:
			return nil
		case tag:
			if c := s.slots[i]; string(c.nameBytes()) == string(name) {
				return c
			}
		}
	}
}

// add inserts c, whose name must not be in the set yet.
func (s *childSet) add(seed uint64, c *znode) {
	if (s.n+1)*4 > len(s.slots)*3 {
		s.resize(seed, max(minChildSlots, 2*len(s.slots)))
	}
	s.place(seed, c)
	s.n++
}

func (s *childSet) place(seed uint64, c *znode) {
	mask := uint64(len(s.slots) - 1)
	h := hashName(seed, c.nameBytes())
	i := h & mask
	for s.tags[i] != 0 {
		i = (i + 1) & mask
	}
	s.tags[i], s.slots[i] = tagOf(h), c
}

// remove deletes c (which must be in the set) and reports whether the set
// is now empty. Later members of c's probe run move back into the gap
// (backward-shift deletion: no tombstones), and a set a quarter full or
// less shrinks, so a parent whose children were deleted gives the memory
// back.
func (s *childSet) remove(seed uint64, c *znode) (empty bool) {
	mask := uint64(len(s.slots) - 1)
	i := hashName(seed, c.nameBytes()) & mask
	for s.slots[i] != c {
		if s.slots[i] == nil {
			panic("keeper: removing a child that is not in its parent's set")
		}
		i = (i + 1) & mask
	}
	for j := i; ; {
		j = (j + 1) & mask
		d := s.slots[j]
		if d == nil {
			break
		}
		home := hashName(seed, d.nameBytes()) & mask
		// d may move to the gap at i unless its home lies cyclically in (i, j].
		if (i <= j && i < home && home <= j) || (i > j && (i < home || home <= j)) {
			continue
		}
		s.tags[i], s.slots[i] = s.tags[j], d
		i = j
	}
	s.tags[i], s.slots[i] = 0, nil
	s.n--
	if s.n == 0 {
		return true
	}
	if len(s.slots) > minChildSlots && s.n*4 <= len(s.slots) {
		s.resize(seed, len(s.slots)/2)
	}
	return false
}

func (s *childSet) resize(seed uint64, size int) {
	old := s.slots
	s.tags, s.slots = make([]uint8, size), make([]*znode, size)
	for _, c := range old {
		if c != nil {
			s.place(seed, c)
		}
	}
}

// appendTo appends the children, in slot order, to dst.
func (s *childSet) appendTo(dst []*znode) []*znode {
	if s == nil {
		return dst
	}
	for _, c := range s.slots {
		if c != nil {
			dst = append(dst, c)
		}
	}
	return dst
}

// verify checks the set's own invariants: the count, tags that match their
// slots, and every member reachable from its home slot without crossing an
// empty slot (what get relies on).
func (s *childSet) verify(seed uint64) error {
	n := 0
	mask := uint64(len(s.slots) - 1)
	for i, c := range s.slots {
		if c == nil {
			if s.tags[i] != 0 {
				return fmt.Errorf("empty slot %d has tag %#x", i, s.tags[i])
			}
			continue
		}
		n++
		h := hashName(seed, c.nameBytes())
		if s.tags[i] != tagOf(h) {
			return fmt.Errorf("slot %d (%q) has tag %#x, want %#x", i, c.name(), s.tags[i], tagOf(h))
		}
		for j := h & mask; j != uint64(i); j = (j + 1) & mask {
			if s.tags[j] == 0 {
				return fmt.Errorf("%q in slot %d is cut off from its home slot %d", c.name(), i, h&mask)
			}
		}
	}
	if n != s.n || n == 0 || len(s.tags) != len(s.slots) {
		return fmt.Errorf("%d members, count %d, %d tags for %d slots", n, s.n, len(s.tags), len(s.slots))
	}
	return nil
}
