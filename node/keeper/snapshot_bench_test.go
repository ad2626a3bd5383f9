package keeper

import (
	"fmt"
	"testing"

	"herd/node/jute"
)

// BenchmarkSnapshotEncode encodes, in steps of 4,000 znodes, a tree shaped
// like the one `herd bench keeper` leaves: 32 session directories of 100-byte
// znodes, created interleaved (so a directory's children are scattered over
// the heap, as in a server that served many sessions at once). One op is
// one znode encoded.
func BenchmarkSnapshotEncode(b *testing.B) {
	const dirs, perDir = 32, 10_000
	t := newBenchTree()
	create := func(path string, data []byte) {
		t.apply(b, t.entry(jute.OpCreate, &jute.CreateRequest{Path: path, Data: data, ACL: benchOpenACL}))
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
	tr := t.tr
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
