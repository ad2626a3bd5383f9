// Package disk is herd's file-system seam, in the spirit of pebble's vfs: a
// small synchronous interface (FS) with two implementations, the real one on
// os files (OS) and a simulated one (SimFS) that distinguishes the page cache
// from what is durable, so a crash can lose exactly what a real machine could
// lose.
//
// Cores never call an FS: they submit node.DiskOp values through their Env,
// and the shell runs them here with Exec, one at a time, in submission order.
package disk

import (
	"fmt"

	"herd/node"
)

// FS is a node's data directory. Paths are node paths: slash-separated,
// relative, "" for the root (see node.ValidPath). Errors wrap the node.Err*
// sentinels (ErrNotExist, ErrExist, ErrIO, ErrNoSpace, ErrInvalid).
type FS interface {
	// ReadAt returns up to n bytes at off; fewer (possibly none) at the end of
	// the file, without error.
	ReadAt(path string, off int64, n int) ([]byte, error)
	// WriteAt writes p at off, creating the file if needed (the parent
	// directory must exist). The write is in the page cache until Sync.
	WriteAt(path string, off int64, p []byte) error
	// Truncate sets the file's size.
	Truncate(path string, size int64) error
	// Sync makes the file's contents durable. Not its name: see SyncDir.
	Sync(path string) error
	// SyncDir makes the directory's entries durable.
	SyncDir(dir string) error
	// Mkdir creates a directory.
	Mkdir(path string) error
	// Rename atomically renames within one directory, replacing the target.
	Rename(from, to string) error
	// Remove removes a file or an empty directory.
	Remove(path string) error
	// List returns the directory's entries sorted by name.
	List(dir string) ([]node.DirEntry, error)
	// Stat returns a file's size.
	Stat(path string) (node.DirEntry, error)
}

// BackgroundSyncer is an FS that can run a background sync or syncdir
// (node.DiskOp.Background) on a goroutine of its own while the node's other
// operations go on. Both methods act on the path as it is when they run, as
// Sync and SyncDir do, and must not touch state the other operations use.
// An FS without them runs background ops in line, in submission order,
// which the contract allows.
type BackgroundSyncer interface {
	FS
	BackgroundSync(path string) error
	BackgroundSyncDir(dir string) error
}

// ReaderInto is an FS that can read into a buffer its caller supplies, so
// that a shell can reuse the buffers its core handed back (Env.Recycle)
// instead of allocating one per read.
type ReaderInto interface {
	FS
	// ReadAtInto is ReadAt reading into get(size), a buffer of length
	// size, where size is the most it will read (n, or less at the end of
	// the file). The result is a prefix of that buffer.
	ReadAtInto(path string, off int64, n int, get func(size int) []byte) ([]byte, error)
}

// ExecBackground runs a background op on fs's concurrent path.
func ExecBackground(fs BackgroundSyncer, id node.OpID, op node.DiskOp) node.Event {
	ev := node.Event{Kind: node.EvDiskDone, Op: id, OpKind: op.Kind}
	if err := op.Validate(); err != nil {
		ev.Err = err
		return ev
	}
	switch {
	case !op.Background:
		ev.Err = fmt.Errorf("%w: %s %q is not a background op", node.ErrInvalid, op.Kind, op.Path)
	case op.Kind == node.OpSync:
		ev.Err = fs.BackgroundSync(op.Path)
	default:
		ev.Err = fs.BackgroundSyncDir(op.Path)
	}
	return ev
}

// Exec runs op against fs and returns the completion event a core receives.
// Both shells use it, so a core sees identical results from a real disk and a
// simulated one.
func Exec(fs FS, id node.OpID, op node.DiskOp) node.Event {
	return ExecInto(fs, id, op, nil)
}

// ExecInto is Exec that reads into buffers from get, if fs can (ReaderInto)
// and get is not nil.
func ExecInto(fs FS, id node.OpID, op node.DiskOp, get func(size int) []byte) node.Event {
	ev := node.Event{Kind: node.EvDiskDone, Op: id, OpKind: op.Kind}
	if err := op.Validate(); err != nil {
		ev.Err = err
		return ev
	}
	switch op.Kind {
	case node.OpRead:
		if ri, ok := fs.(ReaderInto); ok && get != nil {
			ev.Data, ev.Err = ri.ReadAtInto(op.Path, op.Off, op.Len, get)
		} else {
			ev.Data, ev.Err = fs.ReadAt(op.Path, op.Off, op.Len)
		}
	case node.OpWrite:
		ev.Err = fs.WriteAt(op.Path, op.Off, op.Data)
	case node.OpTruncate:
		ev.Err = fs.Truncate(op.Path, op.Size)
	case node.OpSync:
		ev.Err = fs.Sync(op.Path)
	case node.OpSyncDir:
		ev.Err = fs.SyncDir(op.Path)
	case node.OpMkdir:
		ev.Err = fs.Mkdir(op.Path)
	case node.OpRename:
		ev.Err = fs.Rename(op.Path, op.Path2)
	case node.OpRemove:
		ev.Err = fs.Remove(op.Path)
	case node.OpList:
		ev.Entries, ev.Err = fs.List(op.Path)
	case node.OpStat:
		var e node.DirEntry
		if e, ev.Err = fs.Stat(op.Path); ev.Err == nil {
			ev.Size = e.Size
			ev.Entries = []node.DirEntry{e}
		}
	}
	return ev
}
