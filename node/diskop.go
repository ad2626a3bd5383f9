package node

import (
	"fmt"
	"strings"
)

// DiskOpKind is the kind of a disk operation.
type DiskOpKind uint8

const (
	// OpRead reads up to Len bytes of Path at Off into Event.Data. Reading past
	// the end returns the bytes that exist (possibly none) and no error.
	OpRead DiskOpKind = iota + 1
	// OpWrite writes Data to Path at Off, creating the file if it is missing
	// (its parent directory must exist). A gap past the old end reads as zeros.
	OpWrite
	// OpTruncate sets Path's size to Size.
	OpTruncate
	// OpSync makes Path's contents durable (fsync). It does not make the file's
	// name durable: that takes an OpSyncDir of its directory.
	OpSync
	// OpSyncDir makes the names in directory Path durable: creations, renames
	// and removals done in it so far survive a crash.
	OpSyncDir
	// OpMkdir creates directory Path; ErrExist if it exists.
	OpMkdir
	// OpRename renames Path to Path2, replacing Path2 if it exists (as
	// rename(2): a file replaces a file, a directory an empty directory).
	// Both must be in the same directory (the only case that is atomic on
	// every file system we care about).
	OpRename
	// OpRemove removes a file or an empty directory.
	OpRemove
	// OpList lists directory Path into Event.Entries, sorted by name.
	OpList
	// OpStat reports Path's size in Event.Size and its entry in
	// Event.Entries[0] (ErrNotExist if missing). Directories have size 0.
	OpStat
)

var diskOpKindNames = [...]string{
	OpRead: "read", OpWrite: "write", OpTruncate: "truncate", OpSync: "sync",
	OpSyncDir: "syncdir", OpMkdir: "mkdir", OpRename: "rename", OpRemove: "remove",
	OpList: "list", OpStat: "stat",
}

func (k DiskOpKind) String() string {
	if int(k) < len(diskOpKindNames) && diskOpKindNames[k] != "" {
		return diskOpKindNames[k]
	}
	return "op?"
}

// IsDurabilityBarrier reports whether completing an operation of this kind
// makes something durable, so that SendAfter may wait on it.
func (k DiskOpKind) IsDurabilityBarrier() bool { return k == OpSync || k == OpSyncDir }

// DiskOp is one disk operation. Paths are slash-separated and relative to the
// node's data directory; "" names the data directory itself.
type DiskOp struct {
	Kind  DiskOpKind
	Path  string
	Path2 string // OpRename's target
	Off   int64  // OpRead, OpWrite
	Len   int    // OpRead
	Size  int64  // OpTruncate
	// Data is OpWrite's bytes: the shell's from submission until the op
	// completes (its event is delivered); the core may then reuse them.
	Data []byte
	// Background (OpSync and OpSyncDir only) lets ops submitted later run
	// before this one completes: Kafka's flush of a rolled segment, which
	// appends to the next segment must not queue behind. See Env.Disk.
	Background bool
}

// InBackground reports whether op runs in the background lane: a sync or
// syncdir with Background set (Validate rejects Background on anything else).
func (op DiskOp) InBackground() bool { return op.Background && op.Kind.IsDurabilityBarrier() }

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name  string
	IsDir bool
	Size  int64
}

// Constructors keep call sites short and make the fields each kind uses
// obvious.

func ReadOp(path string, off int64, n int) DiskOp {
	return DiskOp{Kind: OpRead, Path: path, Off: off, Len: n}
}
func WriteOp(path string, off int64, data []byte) DiskOp {
	return DiskOp{Kind: OpWrite, Path: path, Off: off, Data: data}
}
func TruncateOp(path string, size int64) DiskOp {
	return DiskOp{Kind: OpTruncate, Path: path, Size: size}
}
func SyncOp(path string) DiskOp   { return DiskOp{Kind: OpSync, Path: path} }
func SyncDirOp(dir string) DiskOp { return DiskOp{Kind: OpSyncDir, Path: dir} }

// BackgroundSyncOp and BackgroundSyncDirOp are SyncOp and SyncDirOp that
// later ops do not wait for.
func BackgroundSyncOp(path string) DiskOp {
	return DiskOp{Kind: OpSync, Path: path, Background: true}
}
func BackgroundSyncDirOp(dir string) DiskOp {
	return DiskOp{Kind: OpSyncDir, Path: dir, Background: true}
}
func MkdirOp(path string) DiskOp      { return DiskOp{Kind: OpMkdir, Path: path} }
func RemoveOp(path string) DiskOp     { return DiskOp{Kind: OpRemove, Path: path} }
func ListOp(dir string) DiskOp        { return DiskOp{Kind: OpList, Path: dir} }
func StatOp(path string) DiskOp       { return DiskOp{Kind: OpStat, Path: path} }
func RenameOp(from, to string) DiskOp { return DiskOp{Kind: OpRename, Path: from, Path2: to} }

// MaxReadLen bounds a single OpRead so a corrupt length field cannot make a
// shell allocate without limit.
const MaxReadLen = 64 << 20

// Validate checks an operation's shape (not whether it will succeed). Shells
// reject invalid operations with ErrInvalid instead of touching the disk.
func (op DiskOp) Validate() error {
	if op.Kind < OpRead || op.Kind > OpStat {
		return fmt.Errorf("%w: unknown kind %d", ErrInvalid, op.Kind)
	}
	if err := ValidPath(op.Path); err != nil {
		return err
	}
	if op.Background && !op.Kind.IsDurabilityBarrier() {
		return fmt.Errorf("%w: %s %q in the background (only sync and syncdir)", ErrInvalid, op.Kind, op.Path)
	}
	switch op.Kind {
	case OpRead:
		if op.Off < 0 || op.Len < 0 || op.Len > MaxReadLen {
			return fmt.Errorf("%w: read %q off=%d len=%d", ErrInvalid, op.Path, op.Off, op.Len)
		}
	case OpWrite:
		if op.Off < 0 {
			return fmt.Errorf("%w: write %q at negative offset %d", ErrInvalid, op.Path, op.Off)
		}
	case OpTruncate:
		if op.Size < 0 {
			return fmt.Errorf("%w: truncate %q to %d", ErrInvalid, op.Path, op.Size)
		}
	case OpRename:
		if err := ValidPath(op.Path2); err != nil {
			return err
		}
		if op.Path == "" || op.Path2 == "" || Dir(op.Path) != Dir(op.Path2) {
			return fmt.Errorf("%w: rename %q -> %q must stay in one directory", ErrInvalid, op.Path, op.Path2)
		}
	}
	switch op.Kind {
	case OpWrite, OpTruncate, OpMkdir, OpRemove:
		if op.Path == "" {
			return fmt.Errorf("%w: %s of the data directory itself", ErrInvalid, op.Kind)
		}
	}
	return nil
}

// ValidPath accepts "" (the data directory) and clean relative slash paths
// whose elements are not "." or "..".
func ValidPath(p string) error {
	if p == "" {
		return nil
	}
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "\\") {
		return fmt.Errorf("%w: path %q", ErrInvalid, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." || strings.IndexByte(el, 0) >= 0 {
			return fmt.Errorf("%w: path %q", ErrInvalid, p)
		}
	}
	return nil
}

// Dir returns the directory part of a valid path ("" for top-level names).
func Dir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// Base returns the last element of a valid path.
func Base(p string) string {
	return p[strings.LastIndexByte(p, '/')+1:]
}
