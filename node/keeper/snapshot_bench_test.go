package keeper

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"herd/node/jute"
)

// benchSnapshotTree builds a tree shaped like the one `herd bench keeper`
// leaves: 32 session directories of 10,000 100-byte znodes each, created
// interleaved (so a directory's children are scattered over the heap, as
// in a server that served many sessions at once). It returns the znodes'
// paths.
func benchSnapshotTree(b *testing.B) (*benchTree, []string) {
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
	paths := make([]string, 0, dirs*perDir)
	for i := range perDir {
		for d := range dirs {
			p := fmt.Sprintf("/b/s%04d/n%010d", d, i)
			create(p, data)
			paths = append(paths, p)
		}
	}
	return t, paths
}

// BenchmarkSnapshotEncode encodes the tree of benchSnapshotTree in steps of
// 4,000 znodes. One op is one znode encoded.
func BenchmarkSnapshotEncode(b *testing.B) {
	t, _ := benchSnapshotTree(b)
	tr := t.tr
	total := tr.Count()
	b.ReportAllocs()
	b.ResetTimer()
	encoded := 0
	var spare []byte // pieces handed back once written, as raft does
	for encoded < b.N {
		enc := tr.beginSnapshot()
		for !enc.Next(4_000) {
			spare = enc.Take(spare)[:0]
		}
		spare = enc.Take(spare)[:0]
		encoded += total
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(encoded), "ns/znode")
}

// BenchmarkSnapshotEncodeWhileSetting encodes the same tree in steps of
// 1,000 znodes (raft's default) with 500 sets of random znodes applied
// between steps, as on a server taking writes while it snapshots: the sets
// make images of znodes the walk has not reached (Tree.preserve), which the
// walk must look for. Only the encoding is timed; one op is one znode
// encoded.
func BenchmarkSnapshotEncodeWhileSetting(b *testing.B) {
	t, paths := benchSnapshotTree(b)
	tr := t.tr
	total := tr.Count()
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	encoded := 0
	var spare []byte // pieces handed back once written, as raft does
	for encoded < b.N {
		enc := tr.beginSnapshot()
		for {
			done := enc.Next(1_000)
			spare = enc.Take(spare)[:0]
			if done {
				break
			}
			b.StopTimer()
			for range 500 {
				t.apply(b, t.entry(jute.OpSetData, &jute.SetDataRequest{Path: paths[rng.IntN(len(paths))], Data: data, Version: -1}))
			}
			b.StartTimer()
		}
		encoded += total
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(encoded), "ns/znode")
}
