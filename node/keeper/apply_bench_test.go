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
	tr := NewTree(1)
	cfg := &treeConfig{}
	mine := func(txnOrigin) bool { return true }
	zxid := raft.Zxid(0)
	apply := func(x *txn) outcome {
		zxid++
		return tr.apply(&raft.Entry{Index: raft.Index(zxid), Zxid: zxid, Type: raft.EntryNormal, Data: x.encode()}, cfg, mine)
	}
	apply(&txn{kind: txnCreateSession, timeout: 30000})
	var session int64
	for id := range tr.sessions {
		session = id
	}
	open := []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
	seq := uint64(0) // the connection's write sequence: entries are encoded in apply order
	request := func(op int32, r interface{ Encode(*jute.Encoder) }) []byte {
		e := &jute.Encoder{}
		r.Encode(e)
		seq++
		return (&txn{kind: txnRequest, session: session, conn: 1, seq: seq, time: 1, op: op, body: e.B}).encode()
	}
	step := func(data []byte) {
		zxid++
		if out := tr.apply(&raft.Entry{Index: raft.Index(zxid), Zxid: zxid, Type: raft.EntryNormal, Data: data}, cfg, mine); out.err != jute.ErrOK {
			b.Fatal(out.err)
		}
	}
	step(request(jute.OpCreate, &jute.CreateRequest{Path: "/b", ACL: open}))
	const live = 10000 // znodes created and not yet deleted
	data := make([]byte, 100)
	path := func(i int) string { return fmt.Sprintf("/b/n%010d", i) }
	for i := range live {
		step(request(jute.OpCreate, &jute.CreateRequest{Path: path(i), Data: data, ACL: open}))
	}
	entries := make([][]byte, 0, 2*b.N)
	for i := range b.N {
		entries = append(entries, request(jute.OpCreate, &jute.CreateRequest{Path: path(live + i), Data: data, ACL: open}))
		entries = append(entries, request(jute.OpDelete, &jute.DeleteRequest{Path: path(i), Version: -1}))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, data := range entries {
		step(data)
	}
}
