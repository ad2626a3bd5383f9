package keeper

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"herd/node/jute"
)

// TestIncrementalSnapshotMatchesWhole: encoding a snapshot a few znodes per
// step (as raft does between events), pieces taken after every step, gives
// exactly the bytes of one-shot encoding, whatever the step, and the image restores to the same tree.
func TestIncrementalSnapshotMatchesWhole(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 7))
	tr := NewTree(1)
	c := &caller{time: 1}
	cfg := &treeConfig{}
	open := []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
	paths := []string{""}
	var ev []event
	for i := 0; i < 3000; i++ {
		parent := paths[rnd.IntN(len(paths))]
		p := fmt.Sprintf("%s/n%d", parent, rnd.IntN(1000))
		c.zxid++
		ev = ev[:0]
		data := make([]byte, rnd.IntN(40))
		if _, _, code := tr.create(c, cfg, &createOp{path: p, data: data, acl: open, ttl: -1}, &ev, nil); code == 0 {
			paths = append(paths, p)
		}
	}
	whole := tr.Snapshot()
	for _, step := range []int{1, 2, 7, 100, 1 << 20} {
		enc := tr.beginSnapshot()
		steps := 1
		var got []byte
		// Hand each piece back once copied, as raft does once it is
		// written, with stale bytes in it: the encoder must write over
		// them.
		var spare []byte
		take := func() {
			piece := enc.Take(spare)
			got = append(got, piece...)
			for i := range piece {
				piece[i] = 0xEE
			}
			spare = piece[:0]
		}
		for !enc.Next(step) {
			steps++
			take()
		}
		take()
		if !bytes.Equal(got, whole) {
			t.Fatalf("step %d: image differs from the whole encoding (%d vs %d bytes)", step, len(got), len(whole))
		}
		if step == 1 && steps < tr.Count()-1 {
			t.Fatalf("step 1 took %d steps for %d znodes", steps, tr.Count())
		}
	}
	back, err := RestoreTree(whole, 99)
	if err != nil {
		t.Fatal(err)
	}
	if Canonical(back) != Canonical(tr) || back.Count() != tr.Count() {
		t.Fatalf("restored tree differs: %d znodes, want %d", back.Count(), tr.Count())
	}
}

// TestSnapshotWhileApplying: a snapshot encoded a few znodes per step while
// the tree keeps changing between steps (creates, deletes, data and ACL
// changes, multi undo, ephemerals of closing sessions, TTL nodes) restores
// to exactly the tree as it was when the snapshot began; a second snapshot
// right after sees the changes.
func TestSnapshotWhileApplying(t *testing.T) {
	for seed := uint64(0); seed < 30; seed++ {
		rnd := rand.New(rand.NewPCG(seed, 11))
		tr := NewTree(seed)
		c := &caller{time: 1}
		cfg := &treeConfig{ttlEnabled: true}
		open := []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
		other := []jute.ACL{{Perms: jute.PermAll &^ jute.PermAdmin, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
		for id := int64(1); id <= 4; id++ {
			tr.createSession(id, 4000, [16]byte{byte(id)})
		}
		paths := []string{""}
		var ev []event
		mutate := func() {
			c.zxid++
			c.time++
			ev = ev[:0]
			p := paths[rnd.IntN(len(paths))]
			switch k := rnd.IntN(10); {
			case k < 4 || p == "":
				q := fmt.Sprintf("%s/n%d", p, rnd.IntN(60))
				op := &createOp{path: q, data: []byte(fmt.Sprint(c.zxid)), acl: open, ttl: -1}
				switch rnd.IntN(4) {
				case 0:
					op.flags = jute.ModeEphemeral
					c.session = int64(1 + rnd.IntN(4))
				case 1:
					op.flags, op.ttl = jute.ModePersistentWithTTL, int64(1+rnd.IntN(1000))
				}
				var undo []func()
				if _, _, code := tr.create(c, cfg, op, &ev, &undo); code == 0 {
					if rnd.IntN(5) == 0 { // a multi that failed later
						for i := len(undo) - 1; i >= 0; i-- {
							undo[i]()
						}
					} else {
						paths = append(paths, q)
					}
				}
			case k < 6:
				var undo []func()
				if tr.delete(c, p, -1, &ev, &undo) == 0 && rnd.IntN(5) == 0 {
					for i := len(undo) - 1; i >= 0; i-- {
						undo[i]()
					}
				}
			case k < 8:
				tr.setData(c, &treeConfig{}, p, []byte(fmt.Sprint("d", c.zxid)), -1, &ev, nil)
			case k < 9:
				tr.setACL(c, p, [][]jute.ACL{open, other}[rnd.IntN(2)], -1)
			default:
				id := int64(1 + rnd.IntN(4))
				tr.closeSession(id, c.zxid, &ev, false)
				tr.createSession(id, 4000, [16]byte{byte(id)})
			}
		}
		for range 400 {
			mutate()
		}
		before := Canonical(tr)
		enc := tr.beginSnapshot()
		var image []byte
		for !enc.Next(1 + rnd.IntN(5)) {
			image = append(image, enc.Take(nil)...)
			for range rnd.IntN(6) {
				mutate()
			}
		}
		image = append(image, enc.Take(nil)...)
		if tr.enc != nil {
			t.Fatalf("seed %d: the tree still keeps images after the snapshot", seed)
		}
		back, err := RestoreTree(image, seed+1)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if got := Canonical(back); got != before {
			t.Fatalf("seed %d: the snapshot is not the tree as it began:\n%s", seed, firstDiff(got, before))
		}
		if err := tr.CheckInvariants(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		after, err := RestoreTree(tr.Snapshot(), seed)
		if err != nil || Canonical(after) != Canonical(tr) {
			t.Fatalf("seed %d: a snapshot after the changes: %v\n%s", seed, err, firstDiff(Canonical(after), Canonical(tr)))
		}
	}
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i, la[i], lb[i])
		}
	}
	return fmt.Sprintf("%d lines vs %d", len(la), len(lb))
}
