package disk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"

	"herd/node"
)

// state serialises everything in a SimFS that a crash or a reader could ever
// observe (volatile and durable names, contents, pending mutations, sizes,
// corruption record), to prove operations change nothing when they fail.
func state(s *SimFS) string {
	var b strings.Builder
	seen := map[*inode]bool{}
	var rec func(prefix string, in *inode)
	rec = func(prefix string, in *inode) {
		if seen[in] {
			fmt.Fprintf(&b, "%s: seen\n", prefix)
			return
		}
		seen[in] = true
		if !in.dir {
			fmt.Fprintf(&b, "%s: data %x synced %x full=%t", prefix, sha256.Sum256(in.data), sha256.Sum256(in.synced), in.fullSync)
			for _, m := range in.pending {
				fmt.Fprintf(&b, " [%t %d %x]", m.trunc, m.off, sha256.Sum256(m.data))
			}
			b.WriteString("\n")
			return
		}
		for _, name := range slices.Sorted(maps.Keys(in.entries)) {
			rec(prefix+"/"+name, in.entries[name])
		}
		for _, name := range slices.Sorted(maps.Keys(in.durable)) {
			fmt.Fprintf(&b, "%s durable %s\n", prefix, name)
			rec(prefix+"/"+name, in.durable[name])
		}
	}
	rec("", s.root)
	fmt.Fprintf(&b, "total %d corruptions %v\n", s.total, s.corruptions)
	return b.String()
}

func wantErr(t *testing.T, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
}

func read(t *testing.T, fs FS, path string) []byte {
	t.Helper()
	b, err := fs.ReadAt(path, 0, node.MaxReadLen)
	must(t, err)
	return b
}

// forBoth runs fn against a fresh SimFS and a fresh OS.
func forBoth(t *testing.T, fn func(t *testing.T, fs FS)) {
	t.Run("sim", func(t *testing.T) { fn(t, NewSimFS()) })
	t.Run("os", func(t *testing.T) {
		o, err := NewOS(t.TempDir())
		must(t, err)
		defer o.Close()
		fn(t, o)
	})
}

// TestErrorCases pins the error each awkward case must report, in both
// implementations (the conformance property finds these at random; this is
// the readable list).
func TestErrorCases(t *testing.T) {
	forBoth(t, func(t *testing.T, fs FS) {
		must(t, fs.Mkdir("d"))
		must(t, fs.WriteAt("d/f", 0, []byte("hello")))
		must(t, fs.WriteAt("g", 0, nil))
		for _, c := range []struct {
			name string
			err  error
			want error
		}{
			{"write, missing parent", fs.WriteAt("x/y", 0, []byte("a")), node.ErrNotExist},
			{"write through a file", fs.WriteAt("g/y", 0, []byte("a")), node.ErrInvalid},
			{"write a directory", fs.WriteAt("d", 0, []byte("a")), node.ErrInvalid},
			{"write the root", fs.WriteAt("", 0, []byte("a")), node.ErrInvalid},
			{"write, bad path", fs.WriteAt("../a", 0, []byte("a")), node.ErrInvalid},
			{"write, negative offset", fs.WriteAt("a", -1, []byte("a")), node.ErrInvalid},
			{"read missing", func() error { _, err := fs.ReadAt("nope", 0, 1); return err }(), node.ErrNotExist},
			{"read a directory", func() error { _, err := fs.ReadAt("d", 0, 1); return err }(), node.ErrInvalid},
			{"read too much", func() error { _, err := fs.ReadAt("g", 0, node.MaxReadLen+1); return err }(), node.ErrInvalid},
			{"truncate missing", fs.Truncate("nope", 1), node.ErrNotExist},
			{"truncate a directory", fs.Truncate("d", 1), node.ErrInvalid},
			{"sync missing", fs.Sync("nope"), node.ErrNotExist},
			{"sync a directory", fs.Sync("d"), node.ErrInvalid},
			{"syncdir a file", fs.SyncDir("g"), node.ErrInvalid},
			{"syncdir missing", fs.SyncDir("nope"), node.ErrNotExist},
			{"mkdir existing dir", fs.Mkdir("d"), node.ErrExist},
			{"mkdir over a file", fs.Mkdir("g"), node.ErrExist},
			{"mkdir, missing parent", fs.Mkdir("x/y"), node.ErrNotExist},
			{"mkdir the root", fs.Mkdir(""), node.ErrInvalid},
			{"remove non-empty dir", fs.Remove("d"), node.ErrInvalid},
			{"remove missing", fs.Remove("nope"), node.ErrNotExist},
			{"rename missing", fs.Rename("nope", "nope2"), node.ErrNotExist},
			{"rename across dirs", fs.Rename("d/f", "f"), node.ErrInvalid},
			{"rename file onto dir", fs.Rename("g", "d"), node.ErrInvalid},
			{"rename dir onto file", fs.Rename("d", "g"), node.ErrInvalid},
			{"list a file", func() error { _, err := fs.List("g"); return err }(), node.ErrInvalid},
			{"list missing", func() error { _, err := fs.List("nope"); return err }(), node.ErrNotExist},
			{"stat missing", func() error { _, err := fs.Stat("d/nope"); return err }(), node.ErrNotExist},
			{"stat through a file", func() error { _, err := fs.Stat("g/x"); return err }(), node.ErrInvalid},
		} {
			if !errors.Is(c.err, c.want) {
				t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
			}
		}
		// A directory rename onto an empty directory replaces it; onto a
		// non-empty one it fails.
		must(t, fs.Mkdir("e"))
		must(t, fs.Rename("d", "e"))
		if got := read(t, fs, "e/f"); string(got) != "hello" {
			t.Fatalf("e/f = %q", got)
		}
		must(t, fs.Mkdir("d"))
		wantErr(t, fs.Rename("d", "e"), node.ErrInvalid)
		must(t, fs.Rename("e", "e"))
		// Reads past the end return what exists, without error.
		b, err := fs.ReadAt("e/f", 3, 100)
		must(t, err)
		if string(b) != "lo" {
			t.Fatalf("read past end: %q", b)
		}
		b, err = fs.ReadAt("e/f", 100, 100)
		must(t, err)
		if len(b) != 0 {
			t.Fatalf("read beyond end: %q", b)
		}
		ents, err := fs.List("")
		must(t, err)
		want := []node.DirEntry{{Name: "d", IsDir: true}, {Name: "e", IsDir: true}, {Name: "g"}}
		if !slices.Equal(ents, want) {
			t.Fatalf("List = %v, want %v", ents, want)
		}
	})
}

// TestNamespaceDurability walks through the directory-sync rules one case at a
// time (the crash property checks them at random).
func TestNamespaceDurability(t *testing.T) {
	crash := func(s *SimFS) *SimFS { return s.Crash(newNodeRand(1, 1)) }
	exists := func(s *SimFS, p string) bool {
		_, err := s.Stat(p)
		return err == nil
	}

	s := NewSimFS()
	must(t, s.Mkdir("d"))
	must(t, s.WriteAt("d/f", 0, []byte("x")))
	must(t, s.Sync("d/f"))
	must(t, s.SyncDir("d"))
	if exists(crash(s), "d") {
		t.Fatal("d survived without a SyncDir of the root")
	}
	must(t, s.SyncDir(""))
	if c := crash(s); !exists(c, "d/f") || string(read(t, c, "d/f")) != "x" {
		t.Fatal("d/f lost after Sync, SyncDir(d), SyncDir(root)")
	}

	// Sync alone does not make a new name durable.
	must(t, s.WriteAt("g", 0, []byte("y")))
	must(t, s.Sync("g"))
	if exists(crash(s), "g") {
		t.Fatal("g survived without SyncDir")
	}
	must(t, s.SyncDir(""))

	// Unsynced remove and rename are undone; synced ones stick.
	must(t, s.Remove("g"))
	must(t, s.Rename("d/f", "d/h"))
	c := crash(s)
	if !exists(c, "g") || !exists(c, "d/f") || exists(c, "d/h") {
		t.Fatalf("unsynced remove/rename survived:\n%s", c.Dump())
	}
	must(t, s.SyncDir(""))
	must(t, s.SyncDir("d"))
	c = crash(s)
	if exists(c, "g") || exists(c, "d/f") || string(read(t, c, "d/h")) != "x" {
		t.Fatalf("synced remove/rename lost:\n%s", c.Dump())
	}

	// A renamed directory keeps its children; only the parent needs a sync.
	must(t, s.Rename("d", "e"))
	must(t, s.SyncDir(""))
	if c := crash(s); string(read(t, c, "e/h")) != "x" || exists(c, "d") {
		t.Fatalf("directory rename:\n%s", c.Dump())
	}
}

func TestFailNext(t *testing.T) {
	s := NewSimFS()
	must(t, s.WriteAt("f", 0, []byte("abc")))
	boom := errors.New("boom")
	for _, k := range []node.DiskOpKind{node.OpRead, node.OpWrite, node.OpTruncate, node.OpSync,
		node.OpSyncDir, node.OpMkdir, node.OpRename, node.OpRemove, node.OpList, node.OpStat} {
		op := map[node.DiskOpKind]node.DiskOp{
			node.OpRead: node.ReadOp("f", 0, 3), node.OpWrite: node.WriteOp("f", 0, []byte("x")),
			node.OpTruncate: node.TruncateOp("f", 0), node.OpSync: node.SyncOp("f"),
			node.OpSyncDir: node.SyncDirOp(""), node.OpMkdir: node.MkdirOp("m"),
			node.OpRename: node.RenameOp("f", "f2"), node.OpRemove: node.RemoveOp("f"),
			node.OpList: node.ListOp(""), node.OpStat: node.StatOp("f"),
		}[k]
		before := state(s)
		s.FailNext(k, boom)
		if ev := Exec(s, 1, op); ev.Err != boom {
			t.Fatalf("%s: got %v, want the injected error", k, ev.Err)
		}
		if state(s) != before {
			t.Fatalf("%s: the failed operation changed the disk", k)
		}
	}
	// Queued, per kind, and nil means ErrIO.
	s.FailNext(node.OpSync, nil)
	s.FailNext(node.OpSync, boom)
	wantErr(t, s.Sync("f"), node.ErrIO)
	must(t, s.WriteAt("f", 0, []byte("z")))
	wantErr(t, s.Sync("f"), boom)
	must(t, s.Sync("f"))
}

// TestFaultRates: each probability applies to its own operations, at roughly
// its rate, and failed operations change nothing.
func TestFaultRates(t *testing.T) {
	s := NewSimFS()
	must(t, s.WriteAt("f", 0, make([]byte, 4096)))
	s.SetFaults(Faults{ReadErr: 0.3, WriteErr: 0.1, SyncErr: 0.5}, newNodeRand(42, 0))
	const n = 10000
	var reads, writes, syncs int
	for i := range n {
		if _, err := s.ReadAt("f", 0, 10); err != nil {
			wantErr(t, err, node.ErrIO)
			reads++
		}
		before := state(s)
		var err error
		if i%2 == 0 {
			err = s.WriteAt("f", int64(i%4096), []byte{byte(i)})
		} else {
			err = s.Truncate("f", 4096)
		}
		if err != nil {
			wantErr(t, err, node.ErrIO)
			if state(s) != before {
				t.Fatal("a failed write changed the disk")
			}
			writes++
		}
		before = state(s)
		if i%2 == 0 {
			err = s.Sync("f")
		} else {
			err = s.SyncDir("")
		}
		if err != nil {
			wantErr(t, err, node.ErrIO)
			if state(s) != before {
				t.Fatal("a failed sync changed durability")
			}
			syncs++
		}
		// Not subject to random faults.
		if _, err := s.Stat("f"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		what string
		got  int
		p    float64
	}{{"read", reads, 0.3}, {"write", writes, 0.1}, {"sync", syncs, 0.5}} {
		if rate := float64(c.got) / n; rate < c.p-0.03 || rate > c.p+0.03 {
			t.Errorf("%s failure rate %.3f, want about %.2f", c.what, rate, c.p)
		}
	}
	s.SetFaults(Faults{}, nil)
	for range 100 {
		must(t, s.Sync("f"))
	}
}

// TestCapacity: a write that would grow past capacity fails with ErrNoSpace
// and changes nothing; overwrites and writes after freeing space succeed.
func TestCapacity(t *testing.T) {
	s := NewSimFS()
	s.SetCapacity(1000)
	must(t, s.WriteAt("a", 0, make([]byte, 600)))
	must(t, s.WriteAt("b", 0, make([]byte, 300)))
	before := state(s)
	wantErr(t, s.WriteAt("b", 300, make([]byte, 101)), node.ErrNoSpace)
	wantErr(t, s.WriteAt("c", 0, make([]byte, 101)), node.ErrNoSpace)
	if state(s) != before {
		t.Fatal("ENOSPC write changed the disk")
	}
	if _, err := s.Stat("c"); !errors.Is(err, node.ErrNotExist) {
		t.Fatal("ENOSPC write created the file")
	}
	must(t, s.WriteAt("b", 200, make([]byte, 200))) // grows by exactly 100
	must(t, s.WriteAt("a", 0, bytes.Repeat([]byte{1}, 600)))
	if s.TotalSize() != 1000 {
		t.Fatalf("TotalSize %d", s.TotalSize())
	}
	must(t, s.Remove("a"))
	must(t, s.WriteAt("c", 0, make([]byte, 600)))
	must(t, s.Truncate("c", 100))
	must(t, s.Rename("b", "c")) // replaces c, freeing its 100 bytes
	if s.TotalSize() != 400 {
		t.Fatalf("TotalSize %d, want 400", s.TotalSize())
	}
	if err := checkSimInvariants(s); err != nil {
		t.Fatal(err)
	}
}

// TestCorrupt: one bit flips, in the page cache and durably, and is recorded.
func TestCorrupt(t *testing.T) {
	s := NewSimFS()
	data := bytes.Repeat([]byte{0x55}, 2000)
	must(t, s.WriteAt("f", 0, data))
	must(t, s.Sync("f"))
	must(t, s.SyncDir(""))
	must(t, s.Corrupt("f", 1234, 6))
	got := read(t, s, "f")
	crashed := read(t, s.Crash(newNodeRand(5, 5)), "f")
	for _, img := range [][]byte{got, crashed} {
		if len(img) != len(data) {
			t.Fatalf("size changed: %d", len(img))
		}
		for i := range img {
			want := data[i]
			if i == 1234 {
				want ^= 1 << 6
			}
			if img[i] != want {
				t.Fatalf("byte %d = %#x, want %#x", i, img[i], want)
			}
		}
	}
	want := []Corruption{{Kind: BitFlip, Path: "f", Off: 1234, Len: 1, Bit: 6}}
	if !slices.Equal(s.Corruptions(), want) {
		t.Fatalf("Corruptions() = %v", s.Corruptions())
	}
	if c := s.Crash(newNodeRand(5, 5)).Corruptions(); !slices.Equal(c, want) {
		t.Fatalf("the record did not survive the crash: %v", c)
	}
	wantErr(t, s.Corrupt("f", 2000, 0), node.ErrInvalid)
	wantErr(t, s.Corrupt("f", 0, 8), node.ErrInvalid)
	wantErr(t, s.Corrupt("nope", 0, 0), node.ErrNotExist)
	wantErr(t, s.Corrupt("", 0, 0), node.ErrInvalid)

	// A flip in unsynced bytes past the synced end still reaches the disk at
	// the next Sync.
	must(t, s.WriteAt("f", 3000, []byte{0xAA}))
	must(t, s.Corrupt("f", 2500, 0))
	must(t, s.Sync("f"))
	if b := read(t, s.Crash(newNodeRand(1, 1)), "f"); b[2500] != 1 || b[3000] != 0xAA {
		t.Fatalf("after sync: byte 2500 = %#x, 3000 = %#x", b[2500], b[3000])
	}
}

func TestCorruptRandom(t *testing.T) {
	s := NewSimFS()
	if _, _, ok := s.CorruptRandom(newNodeRand(1, 1)); ok {
		t.Fatal("corrupted an empty disk")
	}
	must(t, s.Mkdir("d"))
	must(t, s.WriteAt("d/a", 0, make([]byte, 100)))
	must(t, s.WriteAt("b", 0, nil))
	must(t, s.WriteAt("c", 0, make([]byte, 50)))
	r := newNodeRand(7, 7)
	hit := map[string]bool{}
	for i := range 50 {
		before := map[string][]byte{"d/a": read(t, s, "d/a"), "c": read(t, s, "c")}
		path, off, ok := s.CorruptRandom(r)
		if !ok || path == "b" {
			t.Fatalf("CorruptRandom picked %q, %v", path, ok)
		}
		hit[path] = true
		after := read(t, s, path)
		diff := 0
		for j := range after {
			if after[j] != before[path][j] {
				diff++
				if int64(j) != off {
					t.Fatalf("changed byte %d, reported %d", j, off)
				}
			}
		}
		if diff != 1 {
			t.Fatalf("%d bytes changed", diff)
		}
		if c := s.Corruptions(); len(c) != i+1 || c[i].Path != path || c[i].Off != off {
			t.Fatalf("record %v", c)
		}
	}
	if !hit["d/a"] || !hit["c"] {
		t.Fatalf("only hit %v", hit)
	}
	// The same seed makes the same choices.
	a, b := s.Clone(), s.Clone()
	pa, oa, _ := a.CorruptRandom(newNodeRand(3, 3))
	pb, ob, _ := b.CorruptRandom(newNodeRand(3, 3))
	if pa != pb || oa != ob || state(a) != state(b) {
		t.Fatal("CorruptRandom is not deterministic")
	}
}

// TestMisdirect: the write lands on another aligned sector inside the file,
// the target keeps its old bytes, and the record says where.
func TestMisdirect(t *testing.T) {
	base := bytes.Repeat([]byte{'A'}, 8*SectorSize)
	payload := bytes.Repeat([]byte{'B'}, 100)
	for _, withRand := range []bool{true, false} {
		for seed := uint64(0); seed < 20; seed++ {
			s := NewSimFS()
			must(t, s.WriteAt("f", 0, base))
			if withRand {
				s.SetFaults(Faults{}, newNodeRand(seed, 0))
			}
			s.MisdirectNextWrite()
			const target = 3 * SectorSize
			must(t, s.WriteAt("f", target, payload))
			c := s.Corruptions()
			if len(c) != 1 || c[0].Kind != Misdirected || c[0].Target != target || c[0].Len != 100 {
				t.Fatalf("record %v", c)
			}
			at := c[0].Off
			if at == target || at%SectorSize != 0 || at < 0 || at >= int64(len(base)) {
				t.Fatalf("landed at %d", at)
			}
			if !withRand && at != 0 {
				t.Fatalf("without a Rand it landed at %d, want 0", at)
			}
			want := slices.Clone(base)
			copy(want[at:], payload)
			if got := read(t, s, "f"); !bytes.Equal(got, want) {
				t.Fatalf("content wrong after misdirect to %d", at)
			}
			// Consumed: the next write goes where it should.
			must(t, s.WriteAt("f", target, payload))
			if got := read(t, s, "f"); !bytes.Equal(got[target:target+100], payload) {
				t.Fatal("second write misdirected too")
			}
			if !withRand {
				break
			}
		}
	}
	// Impossible (empty or new file): the write goes where it was meant to,
	// and nothing is recorded.
	s := NewSimFS()
	s.MisdirectNextWrite()
	must(t, s.WriteAt("g", 10, payload))
	if got := read(t, s, "g"); !bytes.Equal(got[10:], payload) || len(s.Corruptions()) != 0 {
		t.Fatal("misdirect of a new file")
	}
	// One-sector file, aligned target inside it: no other sector.
	s = NewSimFS()
	must(t, s.WriteAt("h", 0, make([]byte, 10)))
	s.SetFaults(Faults{}, newNodeRand(1, 1))
	s.MisdirectNextWrite()
	must(t, s.WriteAt("h", 0, payload))
	if got := read(t, s, "h"); !bytes.Equal(got, payload) || len(s.Corruptions()) != 0 {
		t.Fatal("misdirect with nowhere else to go")
	}
}

// TestClone: a clone is a deep copy; changing either leaves the other alone.
func TestClone(t *testing.T) {
	p := newRandPicker(99)
	s, m := NewSimFS(), newModel()
	if err := genOps(p, false, s, m, 200); err != nil {
		t.Fatal(err)
	}
	before := state(s)
	c := s.Clone()
	if state(c) != before {
		t.Fatal("clone differs")
	}
	if err := genOps(p, false, c, m, 200); err != nil {
		t.Fatal(err)
	}
	_ = c.Crash(newNodeRand(1, 1))
	if state(s) != before {
		t.Fatal("changing the clone changed the original")
	}
}

// TestAppendAmortized: appending and syncing costs memory in proportion to
// what is written, not to the file size per operation (which would be
// quadratic for a log).
func TestAppendAmortized(t *testing.T) {
	s := NewSimFS()
	chunk := bytes.Repeat([]byte{7}, 64)
	const n = 20000
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	start := ms.TotalAlloc
	for i := range n {
		must(t, s.WriteAt("log", int64(i*len(chunk)), chunk))
		if i%10 == 9 {
			must(t, s.Sync("log"))
		}
	}
	runtime.ReadMemStats(&ms)
	written := uint64(n * len(chunk))
	// Linear costs about 14x here (append grows big slices by 1.25x, so each
	// of content and synced copy is allocated about 5x over, plus the pending
	// copies); copying the file per write or per Sync costs over 1000x.
	if got := ms.TotalAlloc - start; got > 40*written {
		t.Fatalf("allocated %d bytes to append %d", got, written)
	}
	if b := read(t, s, "log"); len(b) != int(written) {
		t.Fatalf("log is %d bytes", len(b))
	}
}

func TestDump(t *testing.T) {
	s := NewSimFS()
	must(t, s.Mkdir("d"))
	must(t, s.WriteAt("d/f", 0, []byte("abc")))
	must(t, s.WriteAt("g", 0, []byte("x")))
	must(t, s.SyncDir(""))
	must(t, s.Remove("g"))
	want := "d/\nd/f 3 bytes (durable 0, 1 pending) [name not durable]\ng (removed; the name is still durable)\n"
	if got := s.String(); got != want {
		t.Fatalf("Dump:\n%s\nwant:\n%s", got, want)
	}
}
