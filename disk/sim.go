package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"herd/node"
)

// SectorSize is the unit in which a write tears: a crash keeps or loses each
// 512-byte sector of an unsynced write independently. Sectors are aligned to
// absolute file offsets, as on a real device.
const SectorSize = 512

// maxSimFileSize bounds one simulated file so that a corrupt offset from a
// core makes the operation fail instead of making the simulator allocate
// without limit.
const maxSimFileSize int64 = min(1<<32, math.MaxInt)

// Faults are per-operation failure probabilities for SetFaults. Every failure
// wraps node.ErrIO and changes nothing: a failed write or truncate leaves the
// file as it was, a failed sync leaves durability as it was.
type Faults struct {
	ReadErr  float64 // ReadAt
	WriteErr float64 // WriteAt and Truncate
	SyncErr  float64 // Sync and SyncDir
}

// CorruptionKind says how a Corruption came about.
type CorruptionKind uint8

const (
	// BitFlip: one bit at Off was flipped in place (Corrupt, CorruptRandom).
	BitFlip CorruptionKind = iota + 1
	// Misdirected: a write meant for Target landed at Off instead, Len bytes
	// long (MisdirectNextWrite). Both regions read back wrong.
	Misdirected
)

func (k CorruptionKind) String() string {
	switch k {
	case BitFlip:
		return "bitflip"
	case Misdirected:
		return "misdirected"
	}
	return "corruption?"
}

// Corruption records damage SimFS injected, so checkers can tell it from bugs.
// Path is the file's name when the damage happened; a later rename does not
// update it.
type Corruption struct {
	Kind   CorruptionKind
	Path   string
	Off    int64 // the flipped byte, or where a misdirected write landed
	Len    int64 // bytes affected at Off
	Bit    uint8 // BitFlip: which bit of the byte
	Target int64 // Misdirected: where the write should have gone
}

func (c Corruption) String() string {
	if c.Kind == Misdirected {
		return fmt.Sprintf("%s %q: %d bytes meant for %d landed at %d", c.Kind, c.Path, c.Len, c.Target, c.Off)
	}
	return fmt.Sprintf("%s %q: bit %d of byte %d", c.Kind, c.Path, c.Bit, c.Off)
}

// simBug selects a deliberately wrong behaviour. Only the package's tests set
// it, to prove that the crash checks detect each of these mistakes.
type simBug uint8

const (
	bugNone               simBug = iota
	bugSyncNoop                  // Sync reports success but makes nothing durable
	bugCrashVolatileNames        // Crash follows volatile directory entries
	bugRemoveDurable             // Remove also forgets the durable entry at once
	bugTornShift                 // a torn write slices p by write-relative sector
)

var plantedBug simBug

// mutation is one unsynced change to a file's content. The crash replays the
// list in order, choosing for each whether it reached the platter.
type mutation struct {
	trunc bool
	off   int64  // write offset, or the size a truncate set
	data  []byte // the write's own copy; never modified once stored
}

// inode is a file or a directory. A directory has two views of its names: what
// a running process sees (entries) and what a crash would leave (durable). Both
// point at the same inodes, so a name can be durable while its content is not,
// and the other way round.
type inode struct {
	dir     bool
	entries map[string]*inode
	durable map[string]*inode

	data    []byte // what reads see (the page cache)
	synced  []byte // what survives a crash for sure
	pending []mutation
	// fullSync: a bit flip hit data beyond synced, in a region no pending
	// mutation covers, so the next Sync must copy everything rather than just
	// the regions the pending list names.
	fullSync bool
}

func newDir() *inode {
	return &inode{dir: true, entries: map[string]*inode{}, durable: map[string]*inode{}}
}

// SimFS is the simulator's disk: an FS held in memory that tracks, for every
// file and directory, what a crash would keep. It is deterministic (every
// random choice comes from a node.Rand the caller passes) and single-threaded.
type SimFS struct {
	root     *inode
	total    int64 // sum of the sizes of the files in the volatile namespace
	capacity int64

	faults      Faults
	faultRand   *node.Rand
	failNext    [node.OpStat + 1][]error
	misdirect   bool
	corruptions []Corruption
}

var _ FS = (*SimFS)(nil)

// NewSimFS returns an empty disk whose root directory exists.
func NewSimFS() *SimFS { return &SimFS{root: newDir()} }

func errf(sentinel error, op, path, format string, args ...any) error {
	return fmt.Errorf("%w: %s %q: %s", sentinel, op, path, fmt.Sprintf(format, args...))
}

// begin validates op exactly as Exec does, so direct callers get the same
// answers as cores, and then consumes a FailNext injection if one is queued.
func (s *SimFS) begin(op node.DiskOp) error {
	if err := op.Validate(); err != nil {
		return err
	}
	if q := s.failNext[op.Kind]; len(q) > 0 {
		err := q[0]
		q[0] = nil
		s.failNext[op.Kind] = q[1:]
		return err
	}
	return nil
}

func (s *SimFS) fault(p float64, op, path string) error {
	if s.faultRand != nil && s.faultRand.Chance(p) {
		return errf(node.ErrIO, op, path, "injected fault")
	}
	return nil
}

// resolve walks p (a valid path) in the volatile namespace. full is the path
// the caller's operation names, for the message.
func (s *SimFS) resolve(op, full, p string) (*inode, error) {
	n := s.root
	for rest := p; rest != ""; {
		el, tail, _ := strings.Cut(rest, "/")
		if !n.dir {
			return nil, errf(node.ErrInvalid, op, full, "not a directory")
		}
		c := n.entries[el]
		if c == nil {
			return nil, errf(node.ErrNotExist, op, full, "no such file or directory")
		}
		n, rest = c, tail
	}
	return n, nil
}

func (s *SimFS) parentDir(op, p string) (*inode, error) {
	d, err := s.resolve(op, p, node.Dir(p))
	if err != nil {
		return nil, err
	}
	if !d.dir {
		return nil, errf(node.ErrInvalid, op, p, "not a directory")
	}
	return d, nil
}

func (s *SimFS) file(op, p string) (*inode, error) {
	f, err := s.resolve(op, p, p)
	if err != nil {
		return nil, err
	}
	if f.dir {
		return nil, errf(node.ErrInvalid, op, p, "is a directory")
	}
	return f, nil
}

func (s *SimFS) dir(op, p string) (*inode, error) {
	d, err := s.resolve(op, p, p)
	if err != nil {
		return nil, err
	}
	if !d.dir {
		return nil, errf(node.ErrInvalid, op, p, "not a directory")
	}
	return d, nil
}

// resize sets len(buf) to n, zero-filling growth. Growth is amortised by
// append's policy, so a file built by appends is copied O(log n) times. A big
// shrink gives the memory back.
func resize(buf []byte, n int) []byte {
	if n <= len(buf) {
		if n < cap(buf)/4 && cap(buf) > 64<<10 {
			return slices.Clone(buf[:n])
		}
		return buf[:n]
	}
	old := len(buf)
	buf = slices.Grow(buf, n-old)[:n]
	// The spare capacity may hold bytes from before a truncate.
	clear(buf[old:])
	return buf
}

func writeBytes(buf []byte, off int64, p []byte) []byte {
	if end := int(off) + len(p); end > len(buf) {
		buf = resize(buf, end)
	}
	copy(buf[off:], p)
	return buf
}

// ReadAt returns a copy of up to n bytes at off.
func (s *SimFS) ReadAt(path string, off int64, n int) ([]byte, error) {
	const op = "read"
	if err := s.begin(node.ReadOp(path, off, n)); err != nil {
		return nil, err
	}
	f, err := s.file(op, path)
	if err != nil {
		return nil, err
	}
	if err := s.fault(s.faults.ReadErr, op, path); err != nil {
		return nil, err
	}
	size := int64(len(f.data))
	if off >= size {
		return []byte{}, nil
	}
	end := off + min(int64(n), size-off)
	out := make([]byte, end-off)
	copy(out, f.data[off:end])
	return out, nil
}

// WriteAt writes p at off into the page cache, creating the file if its
// directory exists.
func (s *SimFS) WriteAt(path string, off int64, p []byte) error {
	const op = "write"
	if err := s.begin(node.WriteOp(path, off, p)); err != nil {
		return err
	}
	d, err := s.parentDir(op, path)
	if err != nil {
		return err
	}
	name := node.Base(path)
	f := d.entries[name]
	if f != nil && f.dir {
		return errf(node.ErrInvalid, op, path, "is a directory")
	}
	if err := s.fault(s.faults.WriteErr, op, path); err != nil {
		return err
	}
	var size int64
	if f != nil {
		size = int64(len(f.data))
	}
	at, misdirected := off, false
	if s.misdirect {
		s.misdirect = false
		if len(p) > 0 {
			at, misdirected = s.misdirectTo(off, size)
		}
	}
	if at > maxSimFileSize-int64(len(p)) {
		return errf(node.ErrNoSpace, op, path, "offset %d+%d beyond the simulated maximum file size", at, len(p))
	}
	var grow int64
	if len(p) > 0 {
		grow = max(0, at+int64(len(p))-size)
	}
	if s.capacity > 0 && grow > 0 && s.total+grow > s.capacity {
		return errf(node.ErrNoSpace, op, path, "%d bytes used, %d more would pass capacity %d", s.total, grow, s.capacity)
	}
	if f == nil {
		f = &inode{}
		d.entries[name] = f
	}
	if len(p) == 0 {
		return nil
	}
	f.data = writeBytes(f.data, at, p)
	f.pending = append(f.pending, mutation{off: at, data: bytes.Clone(p)})
	s.total += grow
	if misdirected {
		s.corruptions = append(s.corruptions, Corruption{
			Kind: Misdirected, Path: path, Off: at, Len: int64(len(p)), Target: off,
		})
	}
	return nil
}

// misdirectTo picks where a misdirected write lands: a sector-aligned offset
// inside the file's current extent other than the intended one. ok is false
// when there is no such offset.
func (s *SimFS) misdirectTo(off, size int64) (at int64, ok bool) {
	if size == 0 {
		return off, false
	}
	if s.faultRand == nil {
		return 0, off != 0
	}
	sectors := (size + SectorSize - 1) / SectorSize
	excluded := off%SectorSize == 0 && off/SectorSize < sectors
	n := sectors
	if excluded {
		n--
	}
	if n == 0 {
		return off, false
	}
	sec := int64(s.faultRand.Uint64N(uint64(n)))
	if excluded && sec >= off/SectorSize {
		sec++
	}
	return sec * SectorSize, true
}

// Truncate sets the file's size in the page cache; growth reads as zeros.
func (s *SimFS) Truncate(path string, size int64) error {
	const op = "truncate"
	if err := s.begin(node.TruncateOp(path, size)); err != nil {
		return err
	}
	f, err := s.file(op, path)
	if err != nil {
		return err
	}
	if err := s.fault(s.faults.WriteErr, op, path); err != nil {
		return err
	}
	if size > maxSimFileSize {
		return errf(node.ErrNoSpace, op, path, "size %d beyond the simulated maximum file size", size)
	}
	// Growth by truncate is sparse on real file systems, so it is not held
	// against the capacity, but it does count in the total.
	s.total += size - int64(len(f.data))
	f.data = resize(f.data, int(size))
	f.pending = append(f.pending, mutation{trunc: true, off: size})
	return nil
}

// Sync makes the file's content durable. Its name stays as durable as it was.
func (s *SimFS) Sync(path string) error {
	const op = "sync"
	if err := s.begin(node.SyncOp(path)); err != nil {
		return err
	}
	f, err := s.file(op, path)
	if err != nil {
		return err
	}
	if err := s.fault(s.faults.SyncErr, op, path); err != nil {
		return err
	}
	if plantedBug == bugSyncNoop {
		return nil
	}
	f.sync()
	return nil
}

// sync brings synced up to data by copying only what the pending list says
// changed, so a log that is appended to and synced in turn costs O(appended),
// not O(file), per Sync.
func (f *inode) sync() {
	n := len(f.data)
	from := n // everything at or beyond from is copied wholesale
	if f.fullSync {
		from = 0
	}
	for _, m := range f.pending {
		if m.trunc {
			// A truncate below the durable size and a later regrowth leave
			// zeros that no write covers.
			from = min(from, int(m.off))
		}
	}
	f.synced = resize(f.synced, n)
	for _, m := range f.pending {
		if m.trunc || int(m.off) >= n {
			continue
		}
		end := min(int(m.off)+len(m.data), n)
		copy(f.synced[m.off:end], f.data[m.off:end])
	}
	if from < n {
		copy(f.synced[from:], f.data[from:])
	}
	f.pending = nil
	f.fullSync = false
}

// SyncDir makes dir's current entries durable: creations, renames and removals
// in it survive a crash from now on. Only this one directory: a new
// subdirectory's own entries need a SyncDir of their own.
func (s *SimFS) SyncDir(dir string) error {
	const op = "syncdir"
	if err := s.begin(node.SyncDirOp(dir)); err != nil {
		return err
	}
	d, err := s.dir(op, dir)
	if err != nil {
		return err
	}
	if err := s.fault(s.faults.SyncErr, op, dir); err != nil {
		return err
	}
	d.durable = maps.Clone(d.entries)
	return nil
}

// Mkdir creates a directory in the volatile namespace.
func (s *SimFS) Mkdir(path string) error {
	const op = "mkdir"
	if err := s.begin(node.MkdirOp(path)); err != nil {
		return err
	}
	d, err := s.parentDir(op, path)
	if err != nil {
		return err
	}
	name := node.Base(path)
	if d.entries[name] != nil {
		return errf(node.ErrExist, op, path, "file exists")
	}
	d.entries[name] = newDir()
	return nil
}

// Rename moves from to to within one directory, replacing a file or an empty
// directory at to, as rename(2) does.
func (s *SimFS) Rename(from, to string) error {
	const op = "rename"
	if err := s.begin(node.RenameOp(from, to)); err != nil {
		return err
	}
	d, err := s.parentDir(op, from)
	if err != nil {
		return err
	}
	oldName, newName := node.Base(from), node.Base(to)
	src := d.entries[oldName]
	if src == nil {
		return errf(node.ErrNotExist, op, from, "no such file or directory")
	}
	if from == to {
		return nil
	}
	if dst := d.entries[newName]; dst != nil {
		switch {
		case src.dir && !dst.dir:
			return errf(node.ErrInvalid, op, to, "not a directory")
		case !src.dir && dst.dir:
			return errf(node.ErrInvalid, op, to, "is a directory")
		case dst.dir && len(dst.entries) > 0:
			return errf(node.ErrInvalid, op, to, "directory not empty")
		}
		s.total -= int64(len(dst.data))
	}
	d.entries[newName] = src
	delete(d.entries, oldName)
	return nil
}

// Remove unlinks a file or an empty directory from the volatile namespace. The
// name stays durable, content and all, until a SyncDir of its directory.
func (s *SimFS) Remove(path string) error {
	const op = "remove"
	if err := s.begin(node.RemoveOp(path)); err != nil {
		return err
	}
	d, err := s.parentDir(op, path)
	if err != nil {
		return err
	}
	name := node.Base(path)
	f := d.entries[name]
	if f == nil {
		return errf(node.ErrNotExist, op, path, "no such file or directory")
	}
	if f.dir && len(f.entries) > 0 {
		return errf(node.ErrInvalid, op, path, "directory not empty")
	}
	delete(d.entries, name)
	s.total -= int64(len(f.data))
	if plantedBug == bugRemoveDurable {
		delete(d.durable, name)
	}
	return nil
}

// List returns the directory's volatile entries sorted by name. Directories
// have Size 0.
func (s *SimFS) List(dir string) ([]node.DirEntry, error) {
	const op = "list"
	if err := s.begin(node.ListOp(dir)); err != nil {
		return nil, err
	}
	d, err := s.dir(op, dir)
	if err != nil {
		return nil, err
	}
	out := make([]node.DirEntry, 0, len(d.entries))
	for _, name := range slices.Sorted(maps.Keys(d.entries)) {
		c := d.entries[name]
		out = append(out, node.DirEntry{Name: name, IsDir: c.dir, Size: int64(len(c.data))})
	}
	return out, nil
}

// Stat describes path as List would. Directories have Size 0.
func (s *SimFS) Stat(path string) (node.DirEntry, error) {
	const op = "stat"
	if err := s.begin(node.StatOp(path)); err != nil {
		return node.DirEntry{}, err
	}
	f, err := s.resolve(op, path, path)
	if err != nil {
		return node.DirEntry{}, err
	}
	return node.DirEntry{Name: node.Base(path), IsDir: f.dir, Size: int64(len(f.data))}, nil
}

// Crash returns the disk as the machine finds it after losing power now. The
// namespace is what durable directory entries reach from the root; each file
// starts from its synced content, and each of its pending mutations, drawn
// independently from r, reached the disk whole, not at all, or (writes) for a
// random subset of its sectors. Everything in the result is durable. Fault
// settings, pending injections and the corruption record carry over; s itself
// is left as it was.
func (s *SimFS) Crash(r *node.Rand) *SimFS {
	out := s.settingsCopy()
	memo := map[*inode]*inode{}
	out.root = crashInode(s.root, r, memo)
	out.total = 0
	out.walk(func(_ string, in *inode) {
		out.total += int64(len(in.data))
	})
	return out
}

func crashInode(in *inode, r *node.Rand, memo map[*inode]*inode) *inode {
	if c, ok := memo[in]; ok {
		return c
	}
	if in.dir {
		out := newDir()
		memo[in] = out
		names := in.durable
		if plantedBug == bugCrashVolatileNames {
			names = in.entries
		}
		// Sorted, so that the draws happen in an order that depends only on
		// the tree, never on map layout.
		for _, name := range slices.Sorted(maps.Keys(names)) {
			out.entries[name] = crashInode(names[name], r, memo)
		}
		out.durable = maps.Clone(out.entries)
		return out
	}
	data := slices.Clone(in.synced)
	for _, m := range in.pending {
		if m.trunc {
			if r.IntN(2) == 0 {
				data = resize(data, int(m.off))
			}
			continue
		}
		end := int(m.off) + len(m.data)
		switch r.IntN(3) {
		case 0:
			data = writeBytes(data, m.off, m.data)
			continue
		case 1:
			// Never left the page cache.
		default:
			data = tearWrite(data, m, r)
		}
		// A lost or torn append may still have grown the file: file systems
		// that journal metadata ahead of data (ext4 data=writeback, XFS)
		// can persist the new size while the data blocks read as zeros.
		// Checksums, not file sizes, tell a core where valid data ends.
		if end > len(data) && r.IntN(2) == 0 {
			data = resize(data, end)
		}
	}
	out := &inode{data: data, synced: slices.Clone(data)}
	memo[in] = out
	return out
}

// tearWrite applies the sectors of m that a draw keeps. Kept sectors after a
// lost one extend the file past a gap, which reads as old bytes or zeros.
func tearWrite(data []byte, m mutation, r *node.Rand) []byte {
	end := m.off + int64(len(m.data))
	first := m.off / SectorSize
	var bits uint64
	for i, sec := 0, first; sec*SectorSize < end; i, sec = i+1, sec+1 {
		if i%64 == 0 {
			bits = r.Uint64()
		}
		keep := bits&1 == 1
		bits >>= 1
		if !keep {
			continue
		}
		lo, hi := max(m.off, sec*SectorSize), min(end, (sec+1)*SectorSize)
		src := m.data[lo-m.off : hi-m.off]
		if plantedBug == bugTornShift {
			rel := min((sec-first)*SectorSize, int64(len(m.data)))
			src = m.data[rel:min(rel+hi-lo, int64(len(m.data)))]
		}
		data = writeBytes(data, lo, src)
	}
	return data
}

// settingsCopy copies everything but the tree.
func (s *SimFS) settingsCopy() *SimFS {
	out := &SimFS{
		total:       s.total,
		capacity:    s.capacity,
		faults:      s.faults,
		faultRand:   s.faultRand,
		misdirect:   s.misdirect,
		corruptions: slices.Clone(s.corruptions),
	}
	for k, q := range s.failNext {
		out.failNext[k] = slices.Clone(q)
	}
	return out
}

// Clone returns an independent deep copy of the whole state, durable and
// volatile. The fault Rand is shared, not copied (a node.Rand cannot be
// duplicated); call SetFaults on the clone to give it a stream of its own.
func (s *SimFS) Clone() *SimFS {
	out := s.settingsCopy()
	out.root = cloneInode(s.root, map[*inode]*inode{})
	return out
}

func cloneInode(in *inode, memo map[*inode]*inode) *inode {
	if c, ok := memo[in]; ok {
		return c
	}
	c := &inode{dir: in.dir, fullSync: in.fullSync}
	memo[in] = c
	if in.dir {
		// The memo makes the copy independent of iteration order: every
		// inode is copied once whichever name reaches it first.
		c.entries = make(map[string]*inode, len(in.entries))
		for name, ch := range in.entries {
			c.entries[name] = cloneInode(ch, memo)
		}
		c.durable = make(map[string]*inode, len(in.durable))
		for name, ch := range in.durable {
			c.durable[name] = cloneInode(ch, memo)
		}
		return c
	}
	c.data = slices.Clone(in.data)
	c.synced = slices.Clone(in.synced)
	// Pending data is never modified once stored, so sharing it is safe.
	c.pending = slices.Clone(in.pending)
	return c
}

// SetFaults sets the failure probabilities; r supplies the draws and also
// picks where misdirected writes land. SetFaults(Faults{}, nil) turns faults
// off.
func (s *SimFS) SetFaults(f Faults, r *node.Rand) {
	if r == nil && (f.ReadErr > 0 || f.WriteErr > 0 || f.SyncErr > 0) {
		panic("disk: SetFaults with non-zero probabilities needs a Rand")
	}
	s.faults, s.faultRand = f, r
}

// FailNext makes the next operation of kind fail with err (node.ErrIO if err
// is nil), changing nothing. Calls queue: two FailNext of one kind fail the
// next two operations of that kind. The operation is still validated first,
// so an invalid one reports ErrInvalid and leaves the injection queued.
func (s *SimFS) FailNext(kind node.DiskOpKind, err error) {
	if kind < node.OpRead || kind > node.OpStat {
		panic(fmt.Sprintf("disk: FailNext of unknown kind %d", kind))
	}
	if err == nil {
		err = fmt.Errorf("%w: injected %s failure", node.ErrIO, kind)
	}
	s.failNext[kind] = append(s.failNext[kind], err)
}

// SetCapacity bounds the total size of the files in the namespace; 0 means
// unlimited. A WriteAt that would grow the total past it fails with
// node.ErrNoSpace and changes nothing. Writes within existing extents always
// succeed.
func (s *SimFS) SetCapacity(bytes int64) { s.capacity = bytes }

// TotalSize is the sum of the sizes of the files in the volatile namespace.
func (s *SimFS) TotalSize() int64 { return s.total }

// Corrupt flips one bit of byte off of path, in the page cache and on the
// platter alike (bit rot, or a latent sector error a scrubber rewrote), and
// records it. A pending write over the byte may still overwrite it at a crash,
// as a rewrite of the sector would.
func (s *SimFS) Corrupt(path string, off int64, bit uint8) error {
	const op = "corrupt"
	if err := node.ValidPath(path); err != nil {
		return err
	}
	f, err := s.file(op, path)
	if err != nil {
		return err
	}
	if bit > 7 {
		return errf(node.ErrInvalid, op, path, "bit %d", bit)
	}
	if off < 0 || off >= int64(max(len(f.data), len(f.synced))) {
		return errf(node.ErrInvalid, op, path, "offset %d outside the file", off)
	}
	mask := byte(1) << bit
	if off < int64(len(f.data)) {
		f.data[off] ^= mask
	}
	if off < int64(len(f.synced)) {
		f.synced[off] ^= mask
	} else {
		f.fullSync = true
	}
	s.corruptions = append(s.corruptions, Corruption{Kind: BitFlip, Path: path, Off: off, Len: 1, Bit: bit})
	return nil
}

// CorruptRandom flips a random bit of a random non-empty file (files taken in
// path order, so the choice depends only on r and the tree). ok is false if
// every file is empty.
func (s *SimFS) CorruptRandom(r *node.Rand) (path string, off int64, ok bool) {
	var paths []string
	s.walk(func(p string, in *inode) {
		if !in.dir && len(in.data) > 0 {
			paths = append(paths, p)
		}
	})
	if len(paths) == 0 {
		return "", 0, false
	}
	path = paths[r.IntN(len(paths))]
	f, _ := s.file("corrupt", path)
	off = int64(r.Uint64N(uint64(len(f.data))))
	if err := s.Corrupt(path, off, uint8(r.IntN(8))); err != nil {
		panic(err) // path and offset were just taken from the tree
	}
	return path, off, true
}

// Corruptions lists the damage injected so far, oldest first.
func (s *SimFS) Corruptions() []Corruption { return slices.Clone(s.corruptions) }

// MisdirectNextWrite makes the next WriteAt land at another sector-aligned
// offset inside the file's current extent, chosen with the Rand given to
// SetFaults (offset 0 without one), leaving its target untouched. The next
// WriteAt that reaches the device (past validation, lookup and injected
// faults) consumes the injection, even if it then fails for lack of space; if
// it is empty or the file has no other sector, it goes where it was meant to
// and nothing is recorded.
func (s *SimFS) MisdirectNextWrite() { s.misdirect = true }

// MisdirectPending reports whether a misdirect is armed and not yet used.
func (s *SimFS) MisdirectPending() bool { return s.misdirect }

// walk visits the volatile namespace depth-first in path order, root excluded.
func (s *SimFS) walk(fn func(path string, in *inode)) {
	var rec func(prefix string, d *inode)
	rec = func(prefix string, d *inode) {
		for _, name := range slices.Sorted(maps.Keys(d.entries)) {
			c := d.entries[name]
			p := prefix + name
			fn(p, c)
			if c.dir {
				rec(p+"/", c)
			}
		}
	}
	rec("", s.root)
}

// Fingerprint hashes the volatile namespace and contents: what a reader sees.
// Right after a Crash that is the whole state, so equal fingerprints of two
// crash images mean equal images.
func (s *SimFS) Fingerprint() uint64 {
	h := sha256.New()
	s.walk(func(p string, in *inode) {
		fmt.Fprintf(h, "%q %t %d\n", p, in.dir, len(in.data))
		h.Write(in.data)
	})
	return binary.LittleEndian.Uint64(h.Sum(nil))
}

// Dump lists every name, volatile or only durable, with sizes and what is not
// yet durable about it, one per line in path order.
func (s *SimFS) Dump() string {
	var b strings.Builder
	var rec func(prefix string, d *inode)
	rec = func(prefix string, d *inode) {
		names := slices.Sorted(maps.Keys(d.entries))
		for name := range d.durable {
			if d.entries[name] == nil {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		for _, name := range names {
			c, p := d.entries[name], prefix+name
			if c == nil {
				fmt.Fprintf(&b, "%s (removed; the name is still durable)\n", p)
				continue
			}
			note := ""
			if d.durable[name] != c {
				note = " [name not durable]"
			}
			if c.dir {
				fmt.Fprintf(&b, "%s/%s\n", p, note)
				rec(p+"/", c)
				continue
			}
			fmt.Fprintf(&b, "%s %d bytes (durable %d, %d pending)%s\n", p, len(c.data), len(c.synced), len(c.pending), note)
		}
	}
	rec("", s.root)
	return b.String()
}

func (s *SimFS) String() string { return s.Dump() }
