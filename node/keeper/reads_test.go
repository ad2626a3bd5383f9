package keeper

import (
	"bytes"
	"testing"

	"herd/node/jute"
)

// A body built with header room and stamped in place is the same frame
// replyFrame builds from the bare body.
func TestStampReplyMatchesReplyFrame(t *testing.T) {
	for _, data := range [][]byte{nil, {}, []byte("v"), make([]byte, 1000)} {
		resp := &jute.GetDataResponse{Data: data, Stat: jute.Stat{Czxid: 1, Mzxid: 2, Version: 3, DataLength: int32(len(data)), Pzxid: 9}}
		want := replyFrame(77, 1<<40+5, jute.ErrOK, jute.Marshal(resp))
		got := stampReply(framedBody(resp, 4+len(data)+statLen), 77, 1<<40+5)
		if !bytes.Equal(got, want) {
			t.Fatalf("data %d bytes: stamped frame\n%x\nwant\n%x", len(data), got, want)
		}
	}
	st := jute.Stat{Version: 4}
	if n := len(jute.Marshal(&st)); n != statLen {
		t.Fatalf("statLen %d, a Stat encodes to %d bytes", statLen, n)
	}
}

// lookup answers any string, as setWatches needs (it cannot validate the
// paths a reconnecting client lists): nil unless the string names a znode,
// the root for "" as for "/" (ZooKeeper's DataTree aliases the root as "").
// A fuzzed setWatches with an empty path once panicked here.
func TestLookupAnyString(t *testing.T) {
	tr := NewTree(1)
	c := &caller{session: 0, time: 1}
	var ev []event
	created := map[string]*znode{}
	for _, p := range []string{"/bc", "/bc/d"} {
		c.zxid++
		_, n, code := tr.create(c, &treeConfig{}, &createOp{path: p, acl: openACL, ttl: -1}, &ev, nil)
		if code != jute.ErrOK || n == nil {
			t.Fatalf("create %s: %d", p, code)
		}
		created[p] = n
	}
	for path, want := range map[string]*znode{
		"": tr.root, "/": tr.root, "/bc": created["/bc"], "/bc/d": created["/bc/d"],
		"abc": nil, "bc": nil, "x/bc": nil, "/bc/": nil, "//bc": nil, "/bc//d": nil, "/b": nil, "/bc/d/e": nil,
	} {
		if got := tr.lookup(path); got != want {
			t.Errorf("lookup(%q) = %p, want %p", path, got, want)
		}
	}
}
