package disk

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"herd/node"
)

// defaultMaxHandles bounds the open files an OS keeps, well under the usual
// 1024 descriptor limit so that sockets have room.
const defaultMaxHandles = 512

// OS is the production FS: a data directory on the real file system, with
// Sync and SyncDir really durable (fdatasync of the file, fsync of the
// directory).
//
// OS is not safe for concurrent use. The shell runs a node's disk operations
// one at a time, in submission order, on a single worker goroutine, so the
// handle cache needs no lock.
type OS struct {
	root       string
	maxHandles int
	handles    map[string]*list.Element // node path -> element of lru
	lru        list.List                // of *handle, most recently used first
	closed     bool
	reaping    atomic.Int32 // descriptors of removed files being closed (reap)
}

// handle is an open file. rw is false for files opened read-only by ReadAt; a
// write through such a path reopens it.
type handle struct {
	path string
	f    *os.File
	rw   bool
	// [wbLo, wbHi) covers what was written through this handle since the
	// last Sync or writeback hint (WriteAt).
	wbLo, wbHi int64
}

// writebackBytes is how much a file may have written and not synced before
// WriteAt asks the kernel to start writing it back (without waiting, and
// promising nothing: only Sync does).
const writebackBytes = 8 << 20

var _ FS = (*OS)(nil)

// NewOS opens (creating it if needed) the data directory root.
func NewOS(root string) (*OS, error) {
	if root == "" {
		return nil, fmt.Errorf("%w: empty data directory", node.ErrInvalid)
	}
	root = filepath.Clean(root)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, mapErr("open", "", err)
	}
	// Every level of the path must be durable in its parent, or a crash
	// soon after first boot could lose the data directory and everything
	// synced inside it. Sync them all, not only the levels this call
	// created: a process killed between creating and syncing them leaves
	// directories that exist (in the page cache) but are not durable.
	for d := root; filepath.Dir(d) != d; d = filepath.Dir(d) {
		if err := syncDirPath(filepath.Dir(d)); err != nil {
			return nil, mapErr("open", "", err)
		}
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, mapErr("open", "", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: data directory %s is not a directory", node.ErrInvalid, root)
	}
	return &OS{root: root, maxHandles: defaultMaxHandles, handles: map[string]*list.Element{}}, nil
}

// Close closes every cached file. The OS must not be used afterwards.
func (o *OS) Close() error {
	var first error
	for e := o.lru.Front(); e != nil; e = e.Next() {
		if err := e.Value.(*handle).f.Close(); err != nil && first == nil {
			first = mapErr("close", e.Value.(*handle).path, err)
		}
	}
	o.lru.Init()
	clear(o.handles)
	o.closed = true
	return first
}

// mapErr turns a platform error into one wrapping the node sentinel a core
// tests for. The platform error is kept as text only: wrapping it as well
// would let a core match fs.ErrNotExist or an errno, which works here and
// never in the simulator.
func mapErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s %q: %v", classify(err), op, path, err)
}

func classify(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT:
			return node.ErrNoSpace
		// Before the fs.ErrExist test: ENOTEMPTY counts as "exists" there.
		case syscall.ENOTEMPTY, syscall.EISDIR, syscall.ENOTDIR, syscall.EINVAL:
			return node.ErrInvalid
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return node.ErrNotExist
	case errors.Is(err, fs.ErrExist):
		return node.ErrExist
	}
	return node.ErrIO
}

// begin validates op exactly as Exec does, so direct callers and cores get the
// same answers from OS and SimFS.
func (o *OS) begin(op node.DiskOp) error {
	if o.closed {
		return fmt.Errorf("%w: %s %q: disk closed", node.ErrInvalid, op.Kind, op.Path)
	}
	return op.Validate()
}

func (o *OS) abs(p string) string {
	if p == "" {
		return o.root
	}
	return filepath.Join(o.root, filepath.FromSlash(p))
}

type openMode uint8

const (
	forRead  openMode = iota // O_RDONLY; the file must exist
	forWrite                 // O_RDWR|O_CREATE
	forSync                  // O_RDWR; the file must exist
)

// file returns a cached handle for p, opening it if needed.
func (o *OS) file(op, p string, mode openMode) (*os.File, error) {
	if e, ok := o.handles[p]; ok {
		h := e.Value.(*handle)
		if h.rw || mode == forRead {
			o.lru.MoveToFront(e)
			return h.f, nil
		}
		o.drop(p)
	}
	flag := os.O_RDWR
	switch mode {
	case forRead:
		flag = os.O_RDONLY
	case forWrite:
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(o.abs(p), flag, 0o644)
	if err != nil {
		return nil, mapErr(op, p, err)
	}
	if mode == forRead {
		// O_RDONLY opens directories too; O_RDWR fails on them with EISDIR.
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, mapErr(op, p, err)
		}
		if fi.IsDir() {
			f.Close()
			return nil, fmt.Errorf("%w: %s %q: is a directory", node.ErrInvalid, op, p)
		}
	}
	o.handles[p] = o.lru.PushFront(&handle{path: p, f: f, rw: mode != forRead})
	for o.lru.Len() > o.maxHandles {
		o.drop(o.lru.Back().Value.(*handle).path)
	}
	return f, nil
}

// drop closes p's cached handle, if any. A close error is dropped: on local
// file systems close reports nothing about writeback, and durability is only
// ever promised by Sync, whose errors are returned. (Dirty pages outlive the
// descriptor; a later fsync through a new one flushes them.)
func (o *OS) drop(p string) {
	e, ok := o.handles[p]
	if !ok {
		return
	}
	delete(o.handles, p)
	o.lru.Remove(e)
	e.Value.(*handle).f.Close()
}

// ReadAt returns up to n bytes at off; fewer at the end of the file.
func (o *OS) ReadAt(path string, off int64, n int) ([]byte, error) {
	return o.ReadAtInto(path, off, n, nil)
}

// ReadAtInto is ReadAt into a buffer from get (nil: a new one).
func (o *OS) ReadAtInto(path string, off int64, n int, get func(size int) []byte) ([]byte, error) {
	const op = "read"
	if err := o.begin(node.ReadOp(path, off, n)); err != nil {
		return nil, err
	}
	f, err := o.file(op, path, forRead)
	if err != nil {
		return nil, err
	}
	// Size the buffer by what exists, so a large n on a small file does not
	// allocate n.
	fi, err := f.Stat()
	if err != nil {
		return nil, mapErr(op, path, err)
	}
	avail := fi.Size() - off
	if avail <= 0 || n == 0 {
		return []byte{}, nil
	}
	size := int(min(int64(n), avail))
	var buf []byte
	if get != nil {
		buf = get(size)[:size]
	} else {
		buf = make([]byte, size)
	}
	k, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, mapErr(op, path, err)
	}
	return buf[:k], nil
}

// WriteAt writes p at off, creating the file but not its directory.
func (o *OS) WriteAt(path string, off int64, p []byte) error {
	const op = "write"
	if err := o.begin(node.WriteOp(path, off, p)); err != nil {
		return err
	}
	f, err := o.file(op, path, forWrite)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(p, off); err != nil {
		return mapErr(op, path, err)
	}
	// A file written for long without a sync (a broker's segment, synced
	// when it rolls) would otherwise leave that sync up to a segment's worth
	// of dirty pages to write: the sync at each roll of a 256 MB segment took
	// 211-233 ms under 1-KiB produce, 50-160 ms with this hint (p99 of
	// produce 267-276 -> 227-241 ms while every disk operation of the node
	// queued behind that sync; since the broker flushes in the background
	// lane, produce measured the same with and without the hint).
	h := o.handles[path].Value.(*handle)
	if h.wbHi == h.wbLo {
		h.wbLo, h.wbHi = off, off+int64(len(p))
	} else {
		h.wbLo, h.wbHi = min(h.wbLo, off), max(h.wbHi, off+int64(len(p)))
	}
	if h.wbHi-h.wbLo >= writebackBytes {
		startWriteback(f, h.wbLo, h.wbHi-h.wbLo)
		h.wbLo, h.wbHi = 0, 0
	}
	return nil
}

// Truncate sets the file's size.
func (o *OS) Truncate(path string, size int64) error {
	const op = "truncate"
	if err := o.begin(node.TruncateOp(path, size)); err != nil {
		return err
	}
	if e, ok := o.handles[path]; ok && e.Value.(*handle).rw {
		o.lru.MoveToFront(e)
		return mapErr(op, path, e.Value.(*handle).f.Truncate(size))
	}
	return mapErr(op, path, os.Truncate(o.abs(path), size))
}

// Sync makes the file's content durable with fdatasync (fsync where there is
// none).
func (o *OS) Sync(path string) error {
	const op = "sync"
	if err := o.begin(node.SyncOp(path)); err != nil {
		return err
	}
	f, err := o.file(op, path, forSync)
	if err != nil {
		return err
	}
	h := o.handles[path].Value.(*handle)
	h.wbLo, h.wbHi = 0, 0
	return mapErr(op, path, fdatasync(f))
}

// BackgroundSync is Sync on a descriptor of its own, opened by name and
// closed again, so that it can run on another goroutine while the handle
// cache serves the node's other operations (disk.BackgroundSyncer). Any
// descriptor of a file flushes all of its dirty pages.
func (o *OS) BackgroundSync(path string) error {
	const op = "sync"
	if err := o.begin(node.SyncOp(path)); err != nil {
		return err
	}
	f, err := os.OpenFile(o.abs(path), os.O_RDONLY, 0)
	if err != nil {
		return mapErr(op, path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return mapErr(op, path, err)
	} else if fi.IsDir() {
		return fmt.Errorf("%w: %s %q: is a directory", node.ErrInvalid, op, path)
	}
	return mapErr(op, path, fdatasync(f))
}

// BackgroundSyncDir is SyncDir, which holds no shared state.
func (o *OS) BackgroundSyncDir(dir string) error { return o.SyncDir(dir) }

// SyncDir fsyncs the directory, making its entries durable.
func (o *OS) SyncDir(dir string) error {
	const op = "syncdir"
	if err := o.begin(node.SyncDirOp(dir)); err != nil {
		return err
	}
	return mapErr(op, dir, syncDirPath(o.abs(dir)))
}

func syncDirPath(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return &os.PathError{Op: "fsync", Path: dir, Err: syscall.ENOTDIR}
	}
	return f.Sync()
}

// Mkdir creates a directory; its parent must exist.
func (o *OS) Mkdir(path string) error {
	const op = "mkdir"
	if err := o.begin(node.MkdirOp(path)); err != nil {
		return err
	}
	return mapErr(op, path, os.Mkdir(o.abs(path), 0o755))
}

// Rename renames within one directory with rename(2), replacing a file or an
// empty directory. (os.Rename refuses every existing directory target, which
// SimFS and the contract allow when it is empty.)
func (o *OS) Rename(from, to string) error {
	const op = "rename"
	if err := o.begin(node.RenameOp(from, to)); err != nil {
		return err
	}
	a, b := o.abs(from), o.abs(to)
	if err := syscall.Rename(a, b); err != nil {
		if err == syscall.EEXIST {
			// Some systems report a non-empty target directory as EEXIST.
			err = syscall.ENOTEMPTY
		}
		return mapErr(op, from, &os.LinkError{Op: "rename", Old: a, New: b, Err: err})
	}
	if from == to {
		return nil
	}
	// The handle for to is the replaced file's; from's (and, for a directory,
	// its descendants') now belong to the new name.
	o.drop(to)
	o.dropUnder(to + "/")
	if e, ok := o.handles[from]; ok {
		delete(o.handles, from)
		e.Value.(*handle).path = to
		o.handles[to] = e
	}
	prefix := from + "/"
	for e := o.lru.Front(); e != nil; e = e.Next() {
		h := e.Value.(*handle)
		if rest, ok := strings.CutPrefix(h.path, prefix); ok {
			delete(o.handles, h.path)
			h.path = to + "/" + rest
			o.handles[h.path] = e
		}
	}
	return nil
}

func (o *OS) dropUnder(prefix string) {
	for e := o.lru.Front(); e != nil; {
		next := e.Next()
		if h := e.Value.(*handle); strings.HasPrefix(h.path, prefix) {
			o.drop(h.path)
		}
		e = next
	}
}

// Remove removes a file or an empty directory.
func (o *OS) Remove(path string) error {
	const op = "remove"
	if err := o.begin(node.RemoveOp(path)); err != nil {
		return err
	}
	if removed, err := o.removeOpen(path); removed || err != nil {
		return mapErr(op, path, err)
	}
	// Closed first: some systems cannot remove an open file.
	o.drop(path)
	err := os.Remove(o.abs(path))
	if errors.Is(err, syscall.EEXIST) {
		// rmdir(2) may report a non-empty directory as EEXIST.
		return fmt.Errorf("%w: %s %q: directory not empty: %v", node.ErrInvalid, op, path, err)
	}
	return mapErr(op, path, err)
}

// maxReaping bounds the removed files whose last descriptor is being closed
// in the background; past it Remove closes inline.
const maxReaping = 8

// reap closes f, the last descriptor of a file whose name is gone, off the
// disk worker. The final close is what frees the file's blocks (ext4 evicts
// the inode and releases its extents, with discards on a disk mounted so),
// and it is slow: 390 ms for a 1 GiB broker segment on an idle disk here,
// 11 ms at the median for a 25 MB keeper snapshot under a loaded journal,
// against 30-90 µs for the unlink that removes the name (2026-12-04). The
// node's disk operations run one at a time, so every write queued behind a
// retention delete or a topic's removal waited that long. The name's
// removal, which is all Remove promises, has happened before Remove
// returns; if the process dies first, the file system frees the orphaned
// inode itself when it mounts.
func (o *OS) reap(f *os.File) {
	if o.reaping.Add(1) > maxReaping {
		o.reaping.Add(-1)
		f.Close()
		return
	}
	go func() {
		defer o.reaping.Add(-1)
		f.Close()
	}()
}

// List returns the directory's entries sorted by name. Directories have Size
// 0, as in SimFS, rather than whatever the file system reports for them.
func (o *OS) List(dir string) ([]node.DirEntry, error) {
	const op = "list"
	if err := o.begin(node.ListOp(dir)); err != nil {
		return nil, err
	}
	des, err := os.ReadDir(o.abs(dir))
	if err != nil {
		return nil, mapErr(op, dir, err)
	}
	out := make([]node.DirEntry, 0, len(des))
	for _, de := range des {
		e := node.DirEntry{Name: de.Name(), IsDir: de.IsDir()}
		if !e.IsDir {
			fi, err := de.Info()
			if err != nil {
				return nil, mapErr(op, dir, err)
			}
			e.Size = fi.Size()
		}
		out = append(out, e)
	}
	return out, nil
}

// Stat describes path as List would.
func (o *OS) Stat(path string) (node.DirEntry, error) {
	const op = "stat"
	if err := o.begin(node.StatOp(path)); err != nil {
		return node.DirEntry{}, err
	}
	fi, err := os.Stat(o.abs(path))
	if err != nil {
		return node.DirEntry{}, mapErr(op, path, err)
	}
	e := node.DirEntry{Name: node.Base(path), IsDir: fi.IsDir()}
	if !e.IsDir {
		e.Size = fi.Size()
	}
	return e, nil
}
