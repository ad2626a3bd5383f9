package keeper

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"herd/node/jute"
	"herd/node/raft"
)

// TestTreeMemoryMillion reports the heap a million 100-byte znodes take
// (run with -run TreeMemory -v; skipped in -short).
func TestTreeMemoryMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("memory measurement")
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	tr := NewTree(1)
	c := &caller{session: 0, time: 1}
	cfg := &treeConfig{}
	var ev []event
	data := make([]byte, 100)
	open := []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
	for s := 0; s < 32; s++ {
		c.zxid++
		tr.create(c, cfg, &createOp{path: fmt.Sprintf("/b%d", s), acl: open, ttl: -1}, &ev, nil)
	}
	for i := 0; i < 1_000_000; i++ {
		c.zxid++
		ev = ev[:0]
		if _, _, code := tr.create(c, cfg, &createOp{path: fmt.Sprintf("/b%d/n%07d", i%32, i), data: data, acl: open, ttl: -1}, &ev, nil); code != 0 {
			t.Fatal(code)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	used := after.HeapAlloc - before.HeapAlloc
	t.Logf("1M znodes: heap %d MiB (%d bytes per znode)", used>>20, used/1_000_000)
	t0 := time.Now()
	snap := tr.Snapshot()
	enc := time.Since(t0)
	t0 = time.Now()
	back, err := RestoreTree(snap, 2)
	dec := time.Since(t0)
	if err != nil || back.Count() != tr.Count() {
		t.Fatalf("reload: %v, %d znodes, want %d", err, back.Count(), tr.Count())
	}
	t.Logf("snapshot: %d MiB, encoded in %s, decoded in %s", len(snap)>>20, enc, dec)
	runtime.KeepAlive(tr)
	_ = raft.Index(0)
}
