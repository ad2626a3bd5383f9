package keeper

import (
	"testing"

	"herd/node/jute"
)

// TestTxnEncodeOneAllocation: an entry is encoded for every write, into a
// buffer sized up front (it grew once per write when the caller's ids did
// not fit a fixed guess).
func TestTxnEncodeOneAllocation(t *testing.T) {
	x := txn{kind: txnRequest, body: make([]byte, 150), ids: []jute.ID{
		{Scheme: "ip", ID: "127.0.0.1"}, {Scheme: "digest", ID: "alice:0123456789abcdefghijklmnopq="}}}
	if n := testing.AllocsPerRun(100, func() { x.encode() }); n != 1 {
		t.Fatalf("%v allocations per encode, want 1", n)
	}
	back, err := decodeTxn(x.encode())
	if err != nil || len(back.ids) != 2 || back.ids[1] != x.ids[1] || len(back.body) != 150 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}
