package keeper

import (
	"bytes"
	"fmt"
	"math/rand/v2"
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
		for !enc.Next(step) {
			steps++
			got = append(got, enc.Take()...)
		}
		got = append(got, enc.Take()...)
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
	if !bytes.Equal(back.Snapshot(), whole) || back.Count() != tr.Count() {
		t.Fatalf("restored tree differs: %d znodes, want %d", back.Count(), tr.Count())
	}
}
