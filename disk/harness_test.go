package disk

// Shared test machinery: a workload generator usable from rapid and from a
// plain seeded RNG, a reference model of what SimFS must do (volatile view and
// what a crash may leave), and checkCrashImage, which judges a crash image
// against the model.

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"

	"pgregory.net/rapid"

	"herd/node"
)

// picker abstracts the source of choices so one generator serves rapid
// properties (which shrink) and seeded deterministic workloads.
type picker interface {
	IntN(n int, label string) int
	Uint64(label string) uint64
}

type rapidPicker struct{ t *rapid.T }

func (p rapidPicker) IntN(n int, label string) int { return rapid.IntRange(0, n-1).Draw(p.t, label) }
func (p rapidPicker) Uint64(label string) uint64   { return rapid.Uint64().Draw(p.t, label) }

type randPicker struct{ r *rand.Rand }

func (p randPicker) IntN(n int, _ string) int { return p.r.IntN(n) }
func (p randPicker) Uint64(_ string) uint64   { return p.r.Uint64() }
func newRandPicker(seed uint64) randPicker {
	return randPicker{rand.New(rand.NewPCG(seed, 0x6469736b))}
}
func newNodeRand(seed, stream uint64) *node.Rand { return node.NewRand(rand.NewPCG(seed, stream)) }

// A small universe of names so that creations, renames and removals collide,
// and directories and files compete for the same names ("d/a" where d is a
// file must fail the same way everywhere). Files mostly use fileNames and
// directories mostly dirPaths, so that most operations find what they look
// for.
var (
	genDirs      = []string{"", "", "", "d", "d", "d/e", "f"}
	fileNames    = []string{"a", "b", "c"}
	dirNames     = []string{"d", "e", "f"}
	dirPaths     = []string{"d", "d", "d/e", "f", "d/f"}
	invalidPaths = []string{"", "/a", "a/", "../a", "d//a", ".", "d/..", "a\\b"}
	genOffsets   = []int64{0, 1, 100, 511, 512, 513, 1000, 1024, 1500, 2047, 3000}
)

func genName(p picker) string {
	if p.IntN(7, "odd name?") == 0 {
		return dirNames[p.IntN(len(dirNames), "name")]
	}
	return fileNames[p.IntN(len(fileNames), "name")]
}

// gen draws operations. known lists paths that exist now (sorted), so that
// half the time an operation names something that is there.
type gen struct {
	p       picker
	invalid bool // also draw malformed paths and arguments
	known   []string
}

// path draws a path that is usually a file's.
func (g gen) path() string {
	if g.invalid && g.p.IntN(15, "invalid?") == 0 {
		return invalidPaths[g.p.IntN(len(invalidPaths), "badpath")]
	}
	if len(g.known) > 0 && g.p.IntN(2, "known?") == 0 {
		return g.known[g.p.IntN(len(g.known), "known")]
	}
	return join(genDirs[g.p.IntN(len(genDirs), "dir")], genName(g.p))
}

// dirPath draws a path that is usually a directory's.
func (g gen) dirPath() string {
	if g.p.IntN(5, "file path?") == 0 {
		return g.path()
	}
	return dirPaths[g.p.IntN(len(dirPaths), "dirpath")]
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func genOff(p picker) int64 {
	if p.IntN(3, "offkind") == 0 {
		return int64(p.IntN(3500, "off"))
	}
	return genOffsets[p.IntN(len(genOffsets), "off")]
}

// genData returns n non-zero bytes from a seed. Non-zero, so that a byte a
// crash invented is not mistaken for a hole.
func genData(p picker) []byte {
	n := p.IntN(1300, "len")
	if p.IntN(20, "empty?") == 0 {
		n = 0
	}
	r := rand.New(rand.NewPCG(p.Uint64("data"), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(1 + r.IntN(255))
	}
	return b
}

// op draws one operation.
func (g gen) op() node.DiskOp {
	p := g.p
	k := p.IntN(100, "kind")
	switch {
	case k < 25:
		return node.WriteOp(g.path(), genOff(p), genData(p))
	case k < 33:
		n := p.IntN(3000, "n")
		if g.invalid && p.IntN(20, "negative?") == 0 {
			n = -1
		}
		return node.ReadOp(g.path(), genOff(p), n)
	case k < 40:
		size := genOff(p)
		if g.invalid && p.IntN(20, "negative?") == 0 {
			size = -1
		}
		return node.TruncateOp(g.path(), size)
	case k < 52:
		op := node.SyncOp(g.path())
		op.Background = p.IntN(3, "background?") == 0
		return op
	case k < 62:
		op := node.SyncDirOp(genDirs[p.IntN(len(genDirs), "dir")])
		if p.IntN(3, "syncdir-any?") == 0 {
			op.Path = g.path()
		}
		op.Background = p.IntN(3, "background?") == 0
		return op
	case k < 71:
		return node.MkdirOp(g.dirPath())
	case k < 81:
		if g.invalid && p.IntN(10, "crossdir?") == 0 {
			return node.RenameOp(g.path(), g.path())
		}
		from := g.path()
		if p.IntN(3, "rename dir?") == 0 {
			from = g.dirPath()
		}
		if from == "" || node.ValidPath(from) != nil {
			return node.RenameOp(from, "a")
		}
		return node.RenameOp(from, join(node.Dir(from), genName(p)))
	case k < 89:
		if p.IntN(3, "remove dir?") == 0 {
			return node.RemoveOp(g.dirPath())
		}
		return node.RemoveOp(g.path())
	case k < 95:
		if p.IntN(2, "list-any?") == 0 {
			return node.ListOp(g.path())
		}
		return node.ListOp(genDirs[p.IntN(len(genDirs), "dir")])
	default:
		return node.StatOp(g.path())
	}
}

// genOps draws n operations against s and m, keeping both in step and
// stopping at the first disagreement.
func genOps(p picker, invalid bool, s *SimFS, m *model, n int) error {
	for range n {
		op := gen{p: p, invalid: invalid, known: slices.Sorted(maps.Keys(m.tree(false)))}.op()
		if err := step(s, m, op); err != nil {
			return err
		}
	}
	return nil
}

func opString(op node.DiskOp) string {
	switch op.Kind {
	case node.OpWrite:
		return fmt.Sprintf("write %q off=%d len=%d", op.Path, op.Off, len(op.Data))
	case node.OpRead:
		return fmt.Sprintf("read %q off=%d n=%d", op.Path, op.Off, op.Len)
	case node.OpTruncate:
		return fmt.Sprintf("truncate %q %d", op.Path, op.Size)
	case node.OpRename:
		return fmt.Sprintf("rename %q %q", op.Path, op.Path2)
	}
	if op.Background {
		return fmt.Sprintf("%s %q in the background", op.Kind, op.Path)
	}
	return fmt.Sprintf("%s %q", op.Kind, op.Path)
}

// result is everything an operation returns.
type result struct {
	data    []byte
	entries []node.DirEntry
	entry   node.DirEntry
	err     error
}

// run executes op the way both shells do: through Exec, or ExecBackground
// for a background op on an FS that runs those apart.
func run(fs FS, op node.DiskOp) result {
	var ev node.Event
	if bs, ok := fs.(BackgroundSyncer); ok && op.Background {
		ev = ExecBackground(bs, 1, op)
	} else {
		ev = Exec(fs, 1, op)
	}
	r := result{data: ev.Data, err: ev.Err}
	switch op.Kind {
	case node.OpList:
		r.entries = ev.Entries
	case node.OpStat:
		if len(ev.Entries) == 1 {
			r.entry = ev.Entries[0]
		}
	}
	return r
}

var sentinels = []error{node.ErrNotExist, node.ErrExist, node.ErrIO, node.ErrNoSpace, node.ErrInvalid}

// errClass names the node sentinel err wraps, "ok" for nil.
func errClass(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "UNCLASSIFIED(" + err.Error() + ")"
}

// sameResult reports how got differs from want, or nil.
func sameResult(op node.DiskOp, got, want result) error {
	gc, wc := errClass(got.err), errClass(want.err)
	if strings.HasPrefix(gc, "UNCLASSIFIED") {
		return fmt.Errorf("%s: error wraps no node sentinel: %v", opString(op), got.err)
	}
	if gc != wc {
		return fmt.Errorf("%s: got %s (%v), want %s (%v)", opString(op), gc, got.err, wc, want.err)
	}
	if got.err != nil {
		return nil
	}
	if !bytes.Equal(got.data, want.data) {
		return fmt.Errorf("%s: read %d bytes %s, want %d bytes %s", opString(op),
			len(got.data), abbrev(got.data), len(want.data), abbrev(want.data))
	}
	if !slices.Equal(got.entries, want.entries) {
		return fmt.Errorf("%s: entries %v, want %v", opString(op), got.entries, want.entries)
	}
	if got.entry != want.entry {
		return fmt.Errorf("%s: stat %+v, want %+v", opString(op), got.entry, want.entry)
	}
	return nil
}

func abbrev(b []byte) string {
	if len(b) > 16 {
		return fmt.Sprintf("%x...", b[:16])
	}
	return fmt.Sprintf("%x", b)
}

// mnode is the model's file or directory: written for obviousness, not speed
// (Sync copies whole files), so that it can judge SimFS.
type mnode struct {
	dir      bool
	vol, dur map[string]*mnode

	data    []byte        // volatile content
	durable []byte        // content as of the last Sync
	writes  []node.DiskOp // writes since the last Sync
	trunc   bool          // a truncate happened since the last Sync
	truncLo int64         // ... and the smallest size it set
	maxEnd  int64         // largest extent any write or truncate since the last Sync reached
}

func newMDir() *mnode {
	return &mnode{dir: true, vol: map[string]*mnode{}, dur: map[string]*mnode{}}
}

type model struct{ root *mnode }

func newModel() *model { return &model{root: newMDir()} }

func (m *model) resolve(p string) (*mnode, error) {
	n := m.root
	if p == "" {
		return n, nil
	}
	for _, el := range strings.Split(p, "/") {
		if !n.dir {
			return nil, node.ErrInvalid
		}
		if n = n.vol[el]; n == nil {
			return nil, node.ErrNotExist
		}
	}
	return n, nil
}

func (m *model) parent(p string) (*mnode, error) {
	d, err := m.resolve(node.Dir(p))
	if err == nil && !d.dir {
		err = node.ErrInvalid
	}
	return d, err
}

func (m *model) file(p string) (*mnode, error) {
	f, err := m.resolve(p)
	if err == nil && f.dir {
		err = node.ErrInvalid
	}
	return f, err
}

func (m *model) dirAt(p string) (*mnode, error) {
	d, err := m.resolve(p)
	if err == nil && !d.dir {
		err = node.ErrInvalid
	}
	return d, err
}

func setLen(b []byte, n int64) []byte {
	if n <= int64(len(b)) {
		return slices.Clone(b[:n])
	}
	return append(slices.Clone(b), make([]byte, n-int64(len(b)))...)
}

// apply performs op on the model and returns what the FS must return.
func (m *model) apply(op node.DiskOp) result {
	if err := op.Validate(); err != nil {
		return result{err: node.ErrInvalid}
	}
	fail := func(err error) result { return result{err: err} }
	switch op.Kind {
	case node.OpRead:
		f, err := m.file(op.Path)
		if err != nil {
			return fail(err)
		}
		if op.Off >= int64(len(f.data)) {
			return result{data: []byte{}}
		}
		return result{data: slices.Clone(f.data[op.Off:min(op.Off+int64(op.Len), int64(len(f.data)))])}
	case node.OpWrite:
		d, err := m.parent(op.Path)
		if err != nil {
			return fail(err)
		}
		f := d.vol[node.Base(op.Path)]
		if f != nil && f.dir {
			return fail(node.ErrInvalid)
		}
		if f == nil {
			f = &mnode{}
			d.vol[node.Base(op.Path)] = f
		}
		if len(op.Data) > 0 {
			end := op.Off + int64(len(op.Data))
			f.data = setLen(f.data, max(end, int64(len(f.data))))
			copy(f.data[op.Off:], op.Data)
			f.writes = append(f.writes, op)
			f.maxEnd = max(f.maxEnd, end)
		}
	case node.OpTruncate:
		f, err := m.file(op.Path)
		if err != nil {
			return fail(err)
		}
		f.data = setLen(f.data, op.Size)
		if !f.trunc || op.Size < f.truncLo {
			f.truncLo = op.Size
		}
		f.trunc = true
		f.maxEnd = max(f.maxEnd, op.Size)
	case node.OpSync:
		f, err := m.file(op.Path)
		if err != nil {
			return fail(err)
		}
		f.durable = slices.Clone(f.data)
		f.writes, f.trunc, f.truncLo, f.maxEnd = nil, false, 0, 0
	case node.OpSyncDir:
		d, err := m.dirAt(op.Path)
		if err != nil {
			return fail(err)
		}
		d.dur = maps.Clone(d.vol)
	case node.OpMkdir:
		d, err := m.parent(op.Path)
		if err != nil {
			return fail(err)
		}
		if d.vol[node.Base(op.Path)] != nil {
			return fail(node.ErrExist)
		}
		d.vol[node.Base(op.Path)] = newMDir()
	case node.OpRename:
		d, err := m.parent(op.Path)
		if err != nil {
			return fail(err)
		}
		src := d.vol[node.Base(op.Path)]
		if src == nil {
			return fail(node.ErrNotExist)
		}
		if op.Path == op.Path2 {
			return result{}
		}
		if dst := d.vol[node.Base(op.Path2)]; dst != nil {
			if src.dir != dst.dir || (dst.dir && len(dst.vol) > 0) {
				return fail(node.ErrInvalid)
			}
		}
		d.vol[node.Base(op.Path2)] = src
		delete(d.vol, node.Base(op.Path))
	case node.OpRemove:
		d, err := m.parent(op.Path)
		if err != nil {
			return fail(err)
		}
		f := d.vol[node.Base(op.Path)]
		if f == nil {
			return fail(node.ErrNotExist)
		}
		if f.dir && len(f.vol) > 0 {
			return fail(node.ErrInvalid)
		}
		delete(d.vol, node.Base(op.Path))
	case node.OpList:
		d, err := m.dirAt(op.Path)
		if err != nil {
			return fail(err)
		}
		ents := []node.DirEntry{}
		for _, name := range slices.Sorted(maps.Keys(d.vol)) {
			c := d.vol[name]
			ents = append(ents, node.DirEntry{Name: name, IsDir: c.dir, Size: int64(len(c.data))})
		}
		return result{entries: ents}
	case node.OpStat:
		n, err := m.resolve(op.Path)
		if err != nil {
			return fail(err)
		}
		return result{entry: node.DirEntry{Name: node.Base(op.Path), IsDir: n.dir, Size: int64(len(n.data))}}
	}
	return result{}
}

// step runs op on the SimFS and the model and requires the same outcome.
func step(s *SimFS, m *model, op node.DiskOp) error {
	return sameResult(op, run(s, op), m.apply(op))
}

// tree is a flat view of a namespace: path -> entry.
type treeEntry struct {
	dir  bool
	data []byte
	n    *mnode // model views only
}

type tree map[string]treeEntry

// fsTree reads the whole volatile namespace of fs through its public API.
func fsTree(fs FS) (tree, error) {
	t := tree{}
	var rec func(dir string) error
	rec = func(dir string) error {
		ents, err := fs.List(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p := join(dir, e.Name)
			if e.IsDir {
				t[p] = treeEntry{dir: true}
				if err := rec(p); err != nil {
					return err
				}
				continue
			}
			data, err := fs.ReadAt(p, 0, node.MaxReadLen)
			if err != nil {
				return err
			}
			if int64(len(data)) != e.Size {
				return fmt.Errorf("%q: List says %d bytes, ReadAt returned %d", p, e.Size, len(data))
			}
			t[p] = treeEntry{data: data}
		}
		return nil
	}
	return t, rec("")
}

// modelTree flattens the model's volatile (durable=false) or durable
// namespace.
func (m *model) tree(durable bool) tree {
	t := tree{}
	var rec func(prefix string, d *mnode)
	rec = func(prefix string, d *mnode) {
		names := d.vol
		if durable {
			names = d.dur
		}
		for name, c := range names {
			p := join(prefix, name)
			t[p] = treeEntry{dir: c.dir, data: c.data, n: c}
			if c.dir {
				rec(p, c)
			}
		}
	}
	rec("", m.root)
	return t
}

// sameTree compares names, kinds and (if withData) contents.
func sameTree(got, want tree, withData bool) error {
	for _, p := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[p]
		switch {
		case !ok:
			return fmt.Errorf("%q missing", p)
		case g.dir != want[p].dir:
			return fmt.Errorf("%q: dir=%t, want dir=%t", p, g.dir, want[p].dir)
		case withData && !bytes.Equal(g.data, want[p].data):
			return fmt.Errorf("%q: content %d bytes %s, want %d bytes %s", p, len(g.data), abbrev(g.data), len(want[p].data), abbrev(want[p].data))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[p]; !ok {
			return fmt.Errorf("%q should not exist", p)
		}
	}
	return nil
}

// checkCrashImage judges after, a crash image of before, against the model
// (which mirrors before). It returns the first violation of:
//
//	(a) synced data survives: bytes no mutation touched since the last Sync
//	    are exactly the durable bytes;
//	(b) unsynced data may vanish or tear but never reads back altered: a
//	    touched byte is the durable byte, zero, or what some pending write put
//	    at that offset, and the file is no longer than some write or truncate
//	    made it;
//	(c) the namespace is exactly what durable directory entries reach: an
//	    unsynced creation is gone, an unsynced removal or rename undone;
//
// and also that the crash left before as it was, and that after has nothing
// left to lose (crashing it again changes nothing).
func checkCrashImage(m *model, before, after *SimFS) error {
	bt, err := fsTree(before)
	if err != nil {
		return fmt.Errorf("reading the crashed disk: %w", err)
	}
	if err := sameTree(bt, m.tree(false), true); err != nil {
		return fmt.Errorf("the crash changed the old disk: %w", err)
	}
	at, err := fsTree(after)
	if err != nil {
		return fmt.Errorf("reading the crash image: %w", err)
	}
	want := m.tree(true)
	if err := sameTree(at, want, false); err != nil {
		return fmt.Errorf("(c) namespace: %w", err)
	}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if w := want[p]; !w.dir {
			if err := checkCrashContent(w.n, at[p].data); err != nil {
				return fmt.Errorf("%q: %w", p, err)
			}
		}
	}
	again := after.Crash(newNodeRand(1, 1))
	if again.Fingerprint() != after.Fingerprint() {
		return fmt.Errorf("the crash image still had unsynced state:\n%s", after.Dump())
	}
	return nil
}

func checkCrashContent(f *mnode, got []byte) error {
	d := f.durable
	limit := max(int64(len(d)), f.maxEnd)
	if int64(len(got)) > limit {
		return fmt.Errorf("(b) %d bytes after the crash; no write or truncate reached past %d", len(got), limit)
	}
	touched := func(x int64) bool {
		if f.trunc && x >= f.truncLo {
			return true
		}
		for _, w := range f.writes {
			if x >= w.Off && x < w.Off+int64(len(w.Data)) {
				return true
			}
		}
		return false
	}
	allowed := func(x int64, b byte) bool {
		if b == 0 || (x < int64(len(d)) && d[x] == b) {
			return true
		}
		for _, w := range f.writes {
			if x >= w.Off && x < w.Off+int64(len(w.Data)) && w.Data[x-w.Off] == b {
				return true
			}
		}
		return false
	}
	for x := int64(0); x < max(int64(len(got)), int64(len(d))); x++ {
		if !touched(x) {
			switch {
			case x < int64(len(d)) && x >= int64(len(got)):
				return fmt.Errorf("(a) synced byte %d lost: file is %d bytes, synced %d", x, len(got), len(d))
			case x < int64(len(d)) && got[x] != d[x]:
				return fmt.Errorf("(a) synced byte %d is %#x, want %#x", x, got[x], d[x])
			case x >= int64(len(d)) && got[x] != 0:
				return fmt.Errorf("(b) byte %d past the synced end, in no write, is %#x, want 0", x, got[x])
			}
			continue
		}
		if x < int64(len(got)) && !allowed(x, got[x]) {
			return fmt.Errorf("(b) byte %d is %#x: neither synced, zero, nor written there", x, got[x])
		}
	}
	return nil
}

// modelOf builds a model of a disk that has nothing unsynced (a crash image).
func modelOf(s *SimFS) (*model, error) {
	t, err := fsTree(s)
	if err != nil {
		return nil, err
	}
	m := newModel()
	// Sorted, so parents are created before children.
	for _, p := range slices.Sorted(maps.Keys(t)) {
		d, err := m.dirAt(node.Dir(p))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", p, err)
		}
		n := newMDir()
		if !t[p].dir {
			n = &mnode{data: t[p].data, durable: slices.Clone(t[p].data)}
		}
		d.vol[node.Base(p)], d.dur[node.Base(p)] = n, n
	}
	return m, nil
}

// checkSimInvariants looks inside SimFS: replaying each file's pending list on
// its synced content must give its volatile content (unless corruption was
// injected), and TotalSize must be the sum of the file sizes.
func checkSimInvariants(s *SimFS) error {
	var total int64
	var err error
	s.walk(func(p string, in *inode) {
		if in.dir || err != nil {
			return
		}
		total += int64(len(in.data))
		replay := slices.Clone(in.synced)
		for _, mu := range in.pending {
			if mu.trunc {
				replay = setLen(replay, mu.off)
			} else {
				replay = setLen(replay, max(int64(len(replay)), mu.off+int64(len(mu.data))))
				copy(replay[mu.off:], mu.data)
			}
		}
		if len(s.corruptions) == 0 && !bytes.Equal(replay, in.data) {
			err = fmt.Errorf("%q: synced + pending != volatile", p)
		}
	})
	if err == nil && total != s.TotalSize() {
		err = fmt.Errorf("TotalSize %d, files add up to %d", s.TotalSize(), total)
	}
	return err
}

// crashRound runs n random operations against s and the model, crashes s
// with seed, checks the image, and returns it with its model for the next
// round.
func crashRound(p picker, s *SimFS, m *model, n int, seed uint64) (*SimFS, *model, error) {
	if err := genOps(p, false, s, m, n); err != nil {
		return nil, nil, fmt.Errorf("before the crash: %w", err)
	}
	if err := checkSimInvariants(s); err != nil {
		return nil, nil, err
	}
	after := s.Crash(newNodeRand(seed, 2))
	if err := checkCrashImage(m, s, after); err != nil {
		return nil, nil, err
	}
	m2, err := modelOf(after)
	return after, m2, err
}
