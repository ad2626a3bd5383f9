package keeper

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"herd/node/jute"
)

// A tree snapshot (the state machine's part of a raft snapshot file, which
// adds its own header and checksums):
//
//	magic "HRDT" | version | zxid
//	acl lists:   count, then per list: count, then (perms, scheme, id)
//	sessions:    count, then (id, timeout, passwd[16], conn, next, broken)
//	nodes:       depth-first from the root, children in the server's
//	             slot order (childSet; it differs between servers):
//	             name, data, czxid, mzxid, pzxid, ctime, mtime, version,
//	             aversion, creates, owner, acl, kind, ttl, child count
//
// Nodes carry names, not paths: a path is rebuilt from the walk, which
// keeps the file (and restart) small.

const (
	treeMagic   = 0x48524454
	treeVersion = 1
)

// Snapshot serialises the tree.
func (t *Tree) Snapshot() []byte {
	enc := t.beginSnapshot()
	for !enc.Next(math.MaxInt) {
	}
	return enc.Take(nil)
}

// treeEncoder serialises a tree a few znodes at a time (raft's
// IncrementalSnapshots): the walk is depth-first with an explicit stack, so
// it can stop anywhere and resume at the next event. Raft keeps applying
// entries meanwhile (ZooKeeper's snapshots do not stop it either, though
// theirs are fuzzy and ours is exact): before the tree changes a znode the
// walk has not reached, it keeps an image of it as of the snapshot
// (Tree.preserve), and the walk encodes the image. Sessions and ACL lists
// are encoded at the start.
type treeEncoder struct {
	check  *snapshotCheck // nil unless Config.CheckSnapshots
	t      *Tree
	gen    uint16
	images map[*znode]*znodeImage
	e      *jute.Encoder // the piece being encoded (raft.SnapshotEncoder.Take)
	// stack holds, per depth, the children still to visit; scratch keeps
	// their arrays for reuse.
	stack   []encFrame
	scratch [][]*znode
	sink    uint64 // what warmKids read, kept so its loads are not dropped
}

type encFrame struct {
	kids []*znode
	next int
	warm int // kids before it were warmed (warmKids)
}

// snapshotCheck holds what Config.CheckSnapshots compares: the tree as it
// began, and the image so far.
type snapshotCheck struct {
	want   string
	image  []byte
	report func(error)
}

// znodeImage is a znode as it was when the snapshot began.
type znodeImage struct {
	node znode
	ttl  int64
	kids []*znode
}

// preserve keeps an image of n for the snapshot being encoded, if any,
// before n (its fields, or its set of children) changes: once per node and
// snapshot, and not for nodes the walk has passed or that are newer.
func (t *Tree) preserve(n *znode) {
	if t.enc == nil || n.gen == t.gen {
		return
	}
	n.gen = t.gen
	t.enc.images[n] = &znodeImage{node: *n, ttl: t.timed[n], kids: n.children.appendTo(nil)}
}

func (t *Tree) beginSnapshot() *treeEncoder {
	if t.enc != nil {
		panic("keeper: a snapshot begins while another is being encoded")
	}
	t.gen++
	if t.gen == 0 {
		// Wrapped: clear every mark so none is mistaken for this one's.
		t.walk(func(n *znode) { n.gen = 0 })
		t.gen = 1
	}
	e := &jute.Encoder{B: make([]byte, 0, snapshotPieceGuess)}
	e.Int(treeMagic)
	e.Int(treeVersion)
	e.Long(t.zxid)
	e.Int(int32(len(t.acls.lists)))
	for _, list := range t.acls.lists {
		e.Int(int32(len(list)))
		for _, a := range list {
			e.Int(a.Perms)
			e.String(a.ID.Scheme)
			e.String(a.ID.ID)
		}
	}
	ids := make([]int64, 0, len(t.sessions))
	for id := range t.sessions { // order-independent: sorted below
		ids = append(ids, id)
	}
	slices.Sort(ids)
	e.Int(int32(len(ids)))
	for _, id := range ids {
		s := t.sessions[id]
		e.Long(s.id)
		e.Int(s.timeout)
		e.Buffer(s.passwd[:])
		e.Long(int64(s.conn))
		e.Long(int64(s.next))
		e.Bool(s.broken)
	}
	enc := &treeEncoder{t: t, gen: t.gen, e: e, images: make(map[*znode]*znodeImage)}
	t.enc = enc
	enc.node(t.root)
	return enc
}

// walk calls fn on every znode, on a parent before its children (fn may
// rebuild the parent's children set).
func (t *Tree) walk(fn func(n *znode)) {
	var rec func(n *znode)
	rec = func(n *znode) {
		fn(n)
		if n.children == nil {
			return
		}
		for _, c := range n.children.slots { // order-independent: visits all
			if c != nil {
				rec(c)
			}
		}
	}
	rec(t.root)
}

// Abort ends an encoding raft gave up (the tree stops keeping images).
func (enc *treeEncoder) Abort() {
	if enc.t.enc == enc {
		enc.t.enc = nil
	}
	enc.images = nil
}

// node encodes live (or its image, if it changed since the snapshot began)
// and pushes its children in slot order (sorting them by name took a third
// of the encoding time).
func (enc *treeEncoder) node(live *znode) {
	e := enc.e
	n, ttl := live, enc.t.timed[live]
	var img *znodeImage
	if live.gen == enc.gen {
		// Not passed yet, so marked by preserve: it has an image. (Znodes
		// newer than the snapshot are marked too, but the walk never
		// reaches them.) Looking every znode up cost a tenth of the
		// encoding while writes went on.
		img = enc.images[live]
	}
	if img != nil {
		n, ttl = &img.node, img.ttl
		delete(enc.images, live)
	} else {
		live.gen = enc.gen // passed: later changes need no image
	}
	// The name as a ustring, without making a string of it, then the
	// data as a jute buffer and the fixed fields, laid out after one grow
	// of the piece: a big tree encodes 20-30% faster than with fourteen
	// appends that each check capacity (BenchmarkSnapshotEncode).
	data := n.data()
	b := slices.Grow(e.B, znodeImageFixed+len(n.buf))
	at := len(b)
	b = b[:at+znodeImageFixed+len(n.buf)]
	be := binary.BigEndian
	be.PutUint32(b[at:], n.nameLen)
	at += 4
	at += copy(b[at:], n.nameBytes())
	if data == nil {
		be.PutUint32(b[at:], math.MaxUint32) // -1: null
	} else {
		be.PutUint32(b[at:], uint32(len(data)))
	}
	at += 4
	at += copy(b[at:], data)
	f := b[at : at+znodeImageFields : at+znodeImageFields]
	be.PutUint64(f[0:], uint64(n.czxid))
	be.PutUint64(f[8:], uint64(n.mzxid))
	be.PutUint64(f[16:], uint64(n.pzxid))
	be.PutUint64(f[24:], uint64(n.ctime))
	be.PutUint64(f[32:], uint64(n.mtime))
	be.PutUint32(f[40:], uint32(n.version))
	be.PutUint32(f[44:], uint32(n.aversion))
	be.PutUint32(f[48:], uint32(n.creates))
	be.PutUint64(f[52:], uint64(n.owner))
	be.PutUint32(f[60:], n.acl)
	be.PutUint32(f[64:], uint32(n.kind))
	be.PutUint64(f[68:], uint64(ttl)) // 0 unless a TTL node
	e.B = b[:at+znodeImageFields]     // the number of children follows
	var kids []*znode
	if img != nil {
		kids = img.kids
	} else if n.children != nil {
		// Slot order: deterministic for a seed, and restore does not care.
		depth := len(enc.stack)
		for depth >= len(enc.scratch) {
			enc.scratch = append(enc.scratch, nil)
		}
		kids = n.children.appendTo(enc.scratch[depth][:0])
		enc.scratch[depth] = kids
	}
	e.Int(int32(len(kids)))
	if len(kids) > 0 {
		enc.stack = append(enc.stack, encFrame{kids: kids})
	}
}

// znodeImageFixed is the size of a znode's image apart from its name and
// data: their two lengths; czxid, mzxid, pzxid, ctime, mtime (longs);
// version, aversion, creates (ints); owner (long), acl, kind (ints), ttl
// (long); and the number of children (int).
const (
	znodeImageFields = 5*8 + 3*4 + 8 + 4 + 4 + 8
	znodeImageFixed  = 4 + 4 + znodeImageFields + 4
)

// Next encodes up to budget more znodes and reports whether the image is
// complete.
func (enc *treeEncoder) Next(budget int) bool {
	for budget > 0 && len(enc.stack) > 0 {
		top := &enc.stack[len(enc.stack)-1]
		if top.next == len(top.kids) {
			clear(top.kids)
			enc.stack = enc.stack[:len(enc.stack)-1]
			continue
		}
		if top.next == top.warm {
			top.warm = min(len(top.kids), top.next+warmBatch)
			enc.sink += warmKids(top.kids[top.next:top.warm])
		}
		n := top.kids[top.next]
		top.next++
		enc.node(n)
		budget--
	}
	if len(enc.stack) > 0 {
		return false
	}
	enc.Abort() // done: the tree stops keeping images
	return true
}

// warmBatch is how many siblings warmKids loads ahead of the encoder.
const warmBatch = 16

// warmKids touches the znodes about to be encoded, their structs first and
// then their name-and-data buffers, in two passes over the batch: the
// znodes lie scattered over the heap, and encoding them one by one waits
// for each one's cache misses in turn, where these loads, independent of
// each other, are in flight together.
func warmKids(kids []*znode) (sum uint64) {
	for _, k := range kids {
		sum += uint64(len(k.buf)) + uint64(k.gen)
	}
	for _, k := range kids {
		if b := k.buf; len(b) > 0 {
			sum += uint64(b[0]) + uint64(b[len(b)-1])
		}
	}
	return sum
}

// snapshotPieceGuess sizes the first piece's buffer; later pieces start
// with the size of the one before (pieces are one raft step of znodes).
const snapshotPieceGuess = 64 << 10

// Take hands over the bytes encoded since the last Take (raft writes them
// to the snapshot file), and encodes the next piece into reuse if that is
// large enough for one like it.
func (enc *treeEncoder) Take(reuse []byte) []byte {
	piece := enc.e.B
	if reuse != nil && cap(reuse) >= max(snapshotPieceGuess, len(piece)) {
		enc.e.B = reuse[:0]
	} else {
		enc.e.B = make([]byte, 0, max(snapshotPieceGuess, len(piece)+len(piece)/8))
	}
	if c := enc.check; c != nil {
		c.image = append(c.image, piece...)
		if enc.t.enc != enc { // complete
			back, err := RestoreTree(c.image, enc.t.seed)
			if err != nil {
				c.report(fmt.Errorf("the snapshot image does not decode: %v", err))
			} else if got := Canonical(back); got != c.want {
				c.report(fmt.Errorf("the snapshot image differs from the tree as it began:\n got  %.2000s\n want %.2000s", got, c.want))
			}
		}
	}
	return piece
}

func (t *Tree) dataSize() int { return t.bytes }
