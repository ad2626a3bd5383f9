package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"herd/node"
)

// TestOSDurabilityPath goes through the full durable-write sequence (write,
// Sync, SyncDir, Rename, SyncDir, Remove) and reads the result back through a
// fresh OS on the same root and through the os package directly.
func TestOSDurabilityPath(t *testing.T) {
	root := filepath.Join(t.TempDir(), "data")
	o, err := NewOS(root)
	must(t, err)
	must(t, o.Mkdir("p"))
	must(t, o.SyncDir(""))
	must(t, o.WriteAt("p/tmp", 0, []byte("hello ")))
	must(t, o.WriteAt("p/tmp", 6, []byte("world")))
	must(t, o.Sync("p/tmp"))
	must(t, o.Rename("p/tmp", "p/final"))
	must(t, o.SyncDir("p"))
	must(t, o.WriteAt("p/junk", 0, []byte("x")))
	must(t, o.Sync("p/junk"))
	must(t, o.Remove("p/junk"))
	must(t, o.SyncDir("p"))
	must(t, o.Close())

	if b, err := os.ReadFile(filepath.Join(root, "p", "final")); err != nil || string(b) != "hello world" {
		t.Fatalf("on disk: %q, %v", b, err)
	}
	o, err = NewOS(root)
	must(t, err)
	defer o.Close()
	if b := read(t, o, "p/final"); string(b) != "hello world" {
		t.Fatalf("reopened: %q", b)
	}
	_, err = o.Stat("p/tmp")
	wantErr(t, err, node.ErrNotExist)
	_, err = o.Stat("p/junk")
	wantErr(t, err, node.ErrNotExist)
	ents, err := o.List("p")
	must(t, err)
	if len(ents) != 1 || ents[0] != (node.DirEntry{Name: "final", Size: 11}) {
		t.Fatalf("List = %v", ents)
	}
}

// TestOSHandleCache writes to more files than the cache holds, twice over, and
// reads every one back, while the cache stays within its bound.
func TestOSHandleCache(t *testing.T) {
	o, err := NewOS(t.TempDir())
	must(t, err)
	defer o.Close()
	const files = defaultMaxHandles + 100
	name := func(i int) string { return fmt.Sprintf("f%04d", i) }
	for pass := range 2 {
		for i := range files {
			must(t, o.WriteAt(name(i), int64(pass*8), []byte(fmt.Sprintf("%08d", i+pass))))
			if o.lru.Len() > defaultMaxHandles || len(o.handles) != o.lru.Len() {
				t.Fatalf("cache holds %d (map %d)", o.lru.Len(), len(o.handles))
			}
		}
	}
	for i := range files {
		if i%50 == 0 {
			must(t, o.Sync(name(i)))
		}
		if got, want := read(t, o, name(i)), fmt.Sprintf("%08d%08d", i, i+1); string(got) != want {
			t.Fatalf("%s = %q, want %q", name(i), got, want)
		}
	}
	if o.lru.Len() != defaultMaxHandles {
		t.Fatalf("cache holds %d", o.lru.Len())
	}
}

// TestOSRenameMovesHandles: cached handles follow renames of their file and of
// its directory, and never write through a name that no longer exists.
func TestOSRenameMovesHandles(t *testing.T) {
	o, err := NewOS(t.TempDir())
	must(t, err)
	defer o.Close()
	must(t, o.Mkdir("d"))
	must(t, o.WriteAt("d/a", 0, []byte("a1")))
	must(t, o.WriteAt("d/b", 0, []byte("b1")))
	must(t, o.Rename("d", "e"))
	wantErr(t, o.WriteAt("d/a", 0, []byte("zz")), node.ErrNotExist)
	must(t, o.WriteAt("e/a", 2, []byte("+")))
	if got := read(t, o, "e/a"); string(got) != "a1+" {
		t.Fatalf("e/a = %q", got)
	}
	// A file renamed over another: the replaced file's handle must go.
	must(t, o.Rename("e/a", "e/b"))
	must(t, o.WriteAt("e/b", 3, []byte("!")))
	if got := read(t, o, "e/b"); string(got) != "a1+!" {
		t.Fatalf("e/b = %q", got)
	}
	_, err = o.Stat("e/a")
	wantErr(t, err, node.ErrNotExist)
	// A read-only handle is upgraded for writing, and removal drops it.
	must(t, o.Close())
	o, err = NewOS(o.root)
	must(t, err)
	defer o.Close()
	read(t, o, "e/b")
	must(t, o.WriteAt("e/b", 0, []byte("A")))
	must(t, o.Sync("e/b"))
	must(t, o.Remove("e/b"))
	must(t, o.WriteAt("e/b", 0, []byte("new")))
	if got := read(t, o, "e/b"); string(got) != "new" {
		t.Fatalf("recreated e/b = %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(o.root, "e", "b")); err != nil || string(b) != "new" {
		t.Fatalf("recreated e/b on disk = %q, %v", b, err)
	}
}

func TestOSClosed(t *testing.T) {
	o, err := NewOS(t.TempDir())
	must(t, err)
	must(t, o.WriteAt("a", 0, []byte("x")))
	must(t, o.Close())
	wantErr(t, o.WriteAt("a", 0, []byte("y")), node.ErrInvalid)
	_, err = o.ReadAt("a", 0, 1)
	wantErr(t, err, node.ErrInvalid)
	must(t, o.Close())
	f := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(f, nil, 0o644))
	_, err = NewOS(f)
	if err == nil {
		t.Fatal("NewOS on a file")
	}
}

// TestClassify: platform errors map onto node sentinels, keeping their text.
func TestClassify(t *testing.T) {
	pe := func(e error) error { return &fs.PathError{Op: "op", Path: "/x", Err: e} }
	for _, c := range []struct {
		err  error
		want error
	}{
		{pe(syscall.ENOENT), node.ErrNotExist},
		{pe(syscall.EEXIST), node.ErrExist},
		{pe(syscall.ENOSPC), node.ErrNoSpace},
		{pe(syscall.EDQUOT), node.ErrNoSpace},
		{pe(syscall.ENOTEMPTY), node.ErrInvalid},
		{&os.LinkError{Op: "rename", Old: "a", New: "b", Err: syscall.EISDIR}, node.ErrInvalid},
		{pe(syscall.ENOTDIR), node.ErrInvalid},
		{pe(syscall.EINVAL), node.ErrInvalid},
		{pe(syscall.EIO), node.ErrIO},
		{pe(syscall.EACCES), node.ErrIO},
		{errors.New("weird"), node.ErrIO},
	} {
		got := mapErr("write", "a/b", c.err)
		if !errors.Is(got, c.want) || !bytes.Contains([]byte(got.Error()), []byte(c.err.Error())) {
			t.Errorf("%v -> %v, want %v", c.err, got, c.want)
		}
		for _, s := range sentinels {
			if s != c.want && errors.Is(got, s) {
				t.Errorf("%v also matches %v", got, s)
			}
		}
	}
	if mapErr("x", "y", nil) != nil {
		t.Fatal("nil error mapped")
	}
}

// TestOSRemove removes files with and without a cached handle, more at once
// than are reaped in the background, and checks what Remove promises: the
// name is gone when it returns, a new file of that name starts empty, and
// directories, symlinks and missing names behave as os.Remove's. The
// background closes must all finish (goleak checks that none is left).
func TestOSRemove(t *testing.T) {
	o, err := NewOS(t.TempDir())
	must(t, err)
	defer o.Close()
	const n = 3 * maxReaping
	for i := range n {
		name := fmt.Sprintf("f%02d", i)
		must(t, o.WriteAt(name, 0, bytes.Repeat([]byte{byte(i)}, 1<<16)))
		if i%2 == 0 {
			o.drop(name) // half of them without a cached handle
		}
	}
	for i := range n {
		must(t, o.Remove(fmt.Sprintf("f%02d", i)))
	}
	for i := range n {
		name := fmt.Sprintf("f%02d", i)
		_, err := o.Stat(name)
		wantErr(t, err, node.ErrNotExist)
		if _, err := os.Lstat(filepath.Join(o.root, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s still on disk: %v", name, err)
		}
	}
	must(t, o.WriteAt("f00", 4, []byte("x")))
	if b := read(t, o, "f00"); !bytes.Equal(b, []byte{0, 0, 0, 0, 'x'}) {
		t.Fatalf("recreated f00 = %q", b)
	}
	wantErr(t, o.Remove("missing"), node.ErrNotExist)
	must(t, o.Mkdir("d"))
	must(t, o.WriteAt("d/x", 0, []byte("x")))
	wantErr(t, o.Remove("d"), node.ErrInvalid)
	must(t, o.Remove("d/x"))
	must(t, o.Remove("d"))
	// A symlink is removed, not what it points to.
	must(t, os.Symlink("f00", filepath.Join(o.root, "link")))
	must(t, o.Remove("link"))
	if b := read(t, o, "f00"); len(b) != 5 {
		t.Fatalf("f00 after removing a link to it: %q", b)
	}
	for i := 0; o.reaping.Load() != 0; i++ {
		if i == 1000 {
			t.Fatalf("%d background closes still running after 10 s", o.reaping.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOSWritebackHint writes a file in pieces past writebackBytes without a
// sync: the hint is given (the range restarts) and changes nothing that can
// be read back; Sync clears the range.
func TestOSWritebackHint(t *testing.T) {
	o, err := NewOS(t.TempDir())
	must(t, err)
	defer o.Close()
	piece := bytes.Repeat([]byte{7}, writebackBytes/3+1)
	var want []byte
	for i := range 4 { // the third crosses writebackBytes
		piece[0] = byte(i)
		must(t, o.WriteAt("seg", int64(len(want)), piece))
		want = append(want, piece...)
	}
	h := o.handles["seg"].Value.(*handle)
	if h.wbLo != int64(3*len(piece)) || h.wbHi != int64(len(want)) {
		t.Fatalf("after %d bytes the range to write back is [%d, %d), want the last piece", len(want), h.wbLo, h.wbHi)
	}
	must(t, o.Sync("seg"))
	if h.wbLo != 0 || h.wbHi != 0 {
		t.Fatalf("Sync left [%d, %d) to write back", h.wbLo, h.wbHi)
	}
	if got := read(t, o, "seg"); !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, differing from the %d written", len(got), len(want))
	}
}

// TestOSBackgroundSync runs background syncs on another goroutine while the
// handle cache serves writes, renames and removals of the same files (the
// race detector checks they share nothing), and checks what they answer:
// ErrNotExist for a name that is gone, ErrInvalid for a directory.
func TestOSBackgroundSync(t *testing.T) {
	o, err := NewOS(t.TempDir())
	must(t, err)
	defer o.Close()
	o.maxHandles = 2
	must(t, o.Mkdir("p"))
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			for _, p := range []string{"p/a", "p/b"} {
				if err := o.BackgroundSync(p); err != nil && !errors.Is(err, node.ErrNotExist) {
					done <- err
					return
				}
			}
			if err := o.BackgroundSyncDir("p"); err != nil {
				done <- err
				return
			}
		}
	}()
	for i := range 300 {
		must(t, o.WriteAt("p/a", int64(i), []byte{byte(i)}))
		must(t, o.WriteAt("p/c", 0, []byte("c")))
		switch i % 3 {
		case 0:
			must(t, o.Rename("p/a", "p/b"))
		case 1:
			must(t, o.Remove("p/b"))
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := o.BackgroundSync("p/missing"); !errors.Is(err, node.ErrNotExist) {
		t.Fatalf("background sync of a missing file: %v", err)
	}
	if err := o.BackgroundSync("p"); !errors.Is(err, node.ErrInvalid) {
		t.Fatalf("background sync of a directory: %v", err)
	}
	must(t, o.BackgroundSync("p/c"))
}

// ReadAtInto reads into the buffer get returns, asking for no more than the
// file holds past off, and Exec uses it only when given a get.
func TestOSReadAtInto(t *testing.T) {
	o, err := NewOS(t.TempDir())
	must(t, err)
	defer o.Close()
	must(t, o.WriteAt("f", 0, []byte("hello world")))
	own := make([]byte, 64)
	var asked []int
	get := func(n int) []byte { asked = append(asked, n); return own[:n] }
	got, err := o.ReadAtInto("f", 6, 100, get)
	must(t, err)
	if string(got) != "world" || &got[0] != &own[0] || len(asked) != 1 || asked[0] != 5 {
		t.Fatalf("got %q (own buffer %v), asked for %v", got, len(got) > 0 && &got[0] == &own[0], asked)
	}
	if got, err := o.ReadAtInto("f", 11, 100, get); err != nil || len(got) != 0 || len(asked) != 1 {
		t.Fatalf("at the end: %q, %v, asked for %v", got, err, asked)
	}
	ev := ExecInto(o, 1, node.ReadOp("f", 0, 5), get)
	if ev.Err != nil || string(ev.Data) != "hello" || &ev.Data[0] != &own[0] {
		t.Fatalf("ExecInto: %q, %v", ev.Data, ev.Err)
	}
	ev = Exec(o, 2, node.ReadOp("f", 0, 5))
	if ev.Err != nil || string(ev.Data) != "hello" || &ev.Data[0] == &own[0] {
		t.Fatalf("Exec: %q, %v", ev.Data, ev.Err)
	}
}
