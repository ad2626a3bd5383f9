package keeper

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
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
	if canonical(back) != canonical(tr) || back.Count() != tr.Count() {
		t.Fatalf("restored tree differs: %d znodes, want %d", back.Count(), tr.Count())
	}
}

// canonical prints a tree in name order with every field a snapshot keeps:
// trees print alike exactly when they hold the same state, whatever their
// children sets' seeds and slot layouts.
func canonical(t *Tree) string {
	var b strings.Builder
	var walk func(n *znode, path string)
	walk = func(n *znode, path string) {
		fmt.Fprintf(&b, "%s %q null=%v %+v acl=%d creates=%d ttl=%d\n", path, n.data(), n.data() == nil, n.stat(), n.acl, n.creates, t.timed[n])
		kids := n.children.appendTo(nil)
		slices.SortFunc(kids, func(a, b *znode) int { return strings.Compare(a.name(), b.name()) })
		for _, c := range kids {
			walk(c, strings.TrimSuffix(path, "/")+"/"+c.name())
		}
	}
	walk(t.root, "/")
	ids := make([]int64, 0, len(t.sessions))
	for id := range t.sessions { // order-independent: sorted below
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := t.sessions[id]
		fmt.Fprintf(&b, "session %x %d %x %d %d %v %d\n", s.id, s.timeout, s.passwd, s.conn, s.next, s.broken, len(s.ephemerals))
	}
	fmt.Fprintf(&b, "zxid %x acls %v\n", t.zxid, t.acls.lists)
	return b.String()
}
