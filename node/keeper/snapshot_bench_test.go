package keeper

import (
	"fmt"
	"testing"

	"herd/node/jute"
	"herd/node/raft"
)

// BenchmarkSnapshotEncode encodes, in raft's default steps, a tree shaped
// like the one `herd bench keeper` leaves: 32 session directories of 100-byte
// znodes, created interleaved (so a directory's children are scattered over
// the heap, as in a server that served many sessions at once). One op is
// one znode encoded.
func BenchmarkSnapshotEncode(b *testing.B) {
	const dirs, perDir = 32, 10_000
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
	seq := uint64(0)
	create := func(path string, data []byte) {
		e := &jute.Encoder{}
		(&jute.CreateRequest{Path: path, Data: data, ACL: open}).Encode(e)
		seq++
		if out := apply(&txn{kind: txnRequest, session: session, conn: 1, seq: seq, time: 1, op: jute.OpCreate, body: e.B}); out.err != jute.ErrOK {
			b.Fatal(out.err)
		}
	}
	create("/b", nil)
	for d := range dirs {
		create(fmt.Sprintf("/b/s%04d", d), nil)
	}
	data := make([]byte, 100)
	for i := range perDir {
		for d := range dirs {
			create(fmt.Sprintf("/b/s%04d/n%010d", d, i), data)
		}
	}
	total := tr.Count()
	b.ReportAllocs()
	b.ResetTimer()
	encoded := 0
	for encoded < b.N {
		enc := tr.beginSnapshot()
		for !enc.Next(4_000) {
			enc.Take()
		}
		enc.Take()
		encoded += total
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(encoded), "ns/znode")
}
