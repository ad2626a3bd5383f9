package keeper

import (
	"fmt"
	"testing"

	"herd/node/jute"
	"herd/node/raft"
)

// BenchmarkApplyCreateDelete applies what `herd bench keeper` makes every
// server apply: a create of a 100-byte znode under a session's directory,
// and later its delete, each decoded from its log entry as in production.
// One op is one create plus one delete.
func BenchmarkApplyCreateDelete(b *testing.B) {
	t := newBenchTree()
	t.apply(b, t.entry(jute.OpCreate, &jute.CreateRequest{Path: "/b", ACL: benchOpenACL}))
	const live = 10000 // znodes created and not yet deleted
	data := make([]byte, 100)
	path := func(i int) string { return fmt.Sprintf("/b/n%010d", i) }
	for i := range live {
		t.apply(b, t.entry(jute.OpCreate, &jute.CreateRequest{Path: path(i), Data: data, ACL: benchOpenACL}))
	}
	entries := make([][]byte, 0, 2*b.N)
	for i := range b.N {
		entries = append(entries, t.entry(jute.OpCreate, &jute.CreateRequest{Path: path(live + i), Data: data, ACL: benchOpenACL}))
		entries = append(entries, t.entry(jute.OpDelete, &jute.DeleteRequest{Path: path(i), Version: -1}))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, data := range entries {
		t.apply(b, data)
	}
}

// benchTree is a tree with one open session to which a benchmark applies
// requests as log entries, decoded as in production.
type benchTree struct {
	tr      *Tree
	cfg     treeConfig
	zxid    raft.Zxid
	session int64
	seq     uint64 // the connection's write sequence: entries are encoded in apply order
}

var benchOpenACL = []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}

func newBenchTree() *benchTree {
	t := &benchTree{tr: NewTree(1)}
	t.applyTxn(&txn{kind: txnCreateSession, timeout: 30000})
	for id := range t.tr.sessions {
		t.session = id
	}
	return t
}

// entry encodes a request of the session as a log entry's data.
func (t *benchTree) entry(op int32, r interface{ Encode(*jute.Encoder) }) []byte {
	e := &jute.Encoder{}
	r.Encode(e)
	t.seq++
	return (&txn{kind: txnRequest, session: t.session, conn: 1, seq: t.seq, time: 1, op: op, body: e.B}).encode()
}

// apply applies an entry made by entry; it must succeed.
func (t *benchTree) apply(b *testing.B, data []byte) {
	if out := t.applyData(data); out.err != jute.ErrOK {
		b.Fatal(out.err)
	}
}

func (t *benchTree) applyTxn(x *txn) outcome { return t.applyData(x.encode()) }

func (t *benchTree) applyData(data []byte) outcome {
	t.zxid++
	mine := func(txnOrigin) bool { return true }
	return t.tr.apply(&raft.Entry{Index: raft.Index(t.zxid), Zxid: t.zxid, Type: raft.EntryNormal, Data: data}, &t.cfg, mine)
}
