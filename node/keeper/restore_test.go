package keeper

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"herd/node/jute"
)

// restoreSample is a tree with every kind of record a snapshot holds: ACL
// lists, sessions, ephemerals, containers, TTL nodes, null and empty data,
// a value larger than the pieces below, and nesting a few levels deep.
func restoreSample(t testing.TB) *Tree {
	t.Helper()
	rnd := rand.New(rand.NewPCG(3, 5))
	tr := NewTree(1)
	c := &caller{time: 1}
	cfg := &treeConfig{ttlEnabled: true}
	open := []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
	other := []jute.ACL{{Perms: jute.PermRead, ID: jute.ID{Scheme: "digest", ID: "u:x"}}, {Perms: jute.PermAll, ID: jute.ID{Scheme: "ip", ID: "127.0.0.1"}}}
	for id := int64(1); id <= 3; id++ {
		tr.createSession(id, 4000, [16]byte{byte(id), 9})
	}
	paths := []string{""}
	var ev []event
	for i := 0; i < 300; i++ {
		c.zxid++
		c.time++
		ev = ev[:0]
		parent := paths[rnd.IntN(len(paths))]
		op := &createOp{path: fmt.Sprintf("%s/n%d", parent, i), acl: open, ttl: -1}
		switch rnd.IntN(8) {
		case 0:
			op.flags = jute.ModeEphemeral
			c.session = int64(1 + rnd.IntN(3))
		case 1:
			op.flags, op.ttl = jute.ModePersistentWithTTL, int64(1+rnd.IntN(1000))
		case 2:
			op.flags = jute.ModeContainer
		case 3:
			op.acl = other
		}
		switch rnd.IntN(4) {
		case 0: // null data
		case 1:
			op.data = []byte{}
		default:
			op.data = []byte(fmt.Sprint("v", i))
		}
		if i == 150 {
			op.data = bytes.Repeat([]byte("big"), 3000)
		}
		c.session = 0
		if op.flags == jute.ModeEphemeral {
			c.session = int64(1 + rnd.IntN(3))
		}
		if _, _, code := tr.create(c, cfg, op, &ev, nil); code == 0 && op.flags != jute.ModeEphemeral {
			paths = append(paths, op.path)
		}
	}
	return tr
}

// decodePieces restores image handed over in pieces ending at the given
// offsets.
func decodePieces(image []byte, cuts []int, seed uint64) (*Tree, error) {
	d := newTreeDecoder(seed, int64(len(image)))
	at := 0
	for _, c := range append(cuts, len(image)) {
		// A copy that is overwritten once written: the decoder must not
		// keep the caller's bytes (raft recycles its read buffers).
		piece := slices.Clone(image[at:c])
		if err := d.Write(piece); err != nil {
			return nil, err
		}
		for i := range piece {
			piece[i] = 0xEE
		}
		at = c
	}
	return d.finish()
}

// TestRestoreInPieces: an image restores to the same tree however it is
// cut into pieces: at every single offset, and into many pieces at random
// offsets, small ones included.
func TestRestoreInPieces(t *testing.T) {
	tr := restoreSample(t)
	image := tr.Snapshot()
	want := Canonical(tr)
	for cut := 0; cut <= len(image); cut++ {
		back, err := decodePieces(image, []int{cut}, 7)
		if err != nil {
			t.Fatalf("cut at %d of %d: %v", cut, len(image), err)
		}
		// The whole comparison at some cuts (it costs ten times the
		// decoding); the count at all of them.
		if back.Count() != tr.Count() || back.dataSize() != tr.dataSize() {
			t.Fatalf("cut at %d: %d znodes of %d bytes, want %d of %d", cut, back.Count(), back.dataSize(), tr.Count(), tr.dataSize())
		}
		if cut%61 == 0 {
			if got := Canonical(back); got != want {
				t.Fatalf("cut at %d: %s", cut, firstDiff(got, want))
			}
		}
	}
	rapid.Check(t, func(rt *rapid.T) {
		cuts := rapid.SliceOfN(rapid.IntRange(0, len(image)), 0, 200).Draw(rt, "cuts")
		slices.Sort(cuts)
		back, err := decodePieces(image, cuts, 8)
		if err != nil {
			rt.Fatalf("cuts %v: %v", cuts, err)
		}
		if got := Canonical(back); got != want {
			rt.Fatalf("cuts %v: %s", cuts, firstDiff(got, want))
		}
	})
}

// TestRestoreDamaged: a truncated image and one with bytes past its end
// fail, whether the decoder was told their true length or not; one with any
// byte changed fails or restores (a changed value byte is the checksum's to
// catch, in raft), and never panics.
func TestRestoreDamaged(t *testing.T) {
	tr := restoreSample(t)
	image := tr.Snapshot()
	for n := 0; n < len(image); n++ {
		// Said to be n bytes long, or said to be whole but cut short.
		if _, err := decodePieces(image[:n], []int{n / 2}, 1); !errors.Is(err, errBadTreeSnapshot) {
			t.Fatalf("image cut to %d of %d bytes: err %v", n, len(image), err)
		}
		d := newTreeDecoder(1, int64(len(image)))
		if err := d.Write(image[:n]); err != nil {
			continue
		}
		if _, err := d.finish(); !errors.Is(err, errBadTreeSnapshot) {
			t.Fatalf("finish after %d of %d bytes: err %v", n, len(image), err)
		}
	}
	d := newTreeDecoder(1, int64(len(image)))
	if err := d.Write(append(slices.Clone(image), 0)); !errors.Is(err, errBadTreeSnapshot) {
		t.Fatalf("a byte past the end: err %v", err)
	}
	if _, err := decodePieces(append(slices.Clone(image), 0), []int{len(image) - 3}, 1); !errors.Is(err, errBadTreeSnapshot) {
		t.Fatalf("a byte after the last node: err %v", err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		bad := slices.Clone(image)
		at := rapid.IntRange(0, len(bad)-1).Draw(rt, "at")
		bad[at] ^= rapid.ByteRange(1, 255).Draw(rt, "flip")
		cut := rapid.IntRange(0, len(bad)).Draw(rt, "cut")
		_, _ = decodePieces(bad, []int{cut}, 1) // must not panic
	})
}

// FuzzRestoreTree: the decoder sees a snapshot's bytes before raft has
// checked their checksum (it checks as they are decoded), and a checksum is
// no defence against a peer that computes one over garbage: no input may
// panic it, in one piece or two, and whatever it accepts encodes back to
// an image that restores to the same tree.
func FuzzRestoreTree(f *testing.F) {
	image := restoreSample(f).Snapshot()
	f.Add(image, uint16(100))
	f.Add(image[:len(image)/2], uint16(7))
	f.Add(NewTree(1).Snapshot(), uint16(20))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		at := min(int(cut), len(b))
		back, err := decodePieces(b, []int{at}, 3)
		if err != nil {
			return
		}
		again, err := RestoreTree(back.Snapshot(), 4)
		if err != nil {
			t.Fatalf("an accepted image does not round-trip: %v", err)
		}
		if Canonical(again) != Canonical(back) {
			t.Fatalf("an accepted image round-trips to another tree: %s", firstDiff(Canonical(again), Canonical(back)))
		}
	})
}
