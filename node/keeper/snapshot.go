package keeper

import (
	"errors"
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
	return enc.Take()
}

// treeEncoder serialises a tree a few znodes at a time (raft's
// IncrementalSnapshots): the walk is depth-first with an explicit stack, so
// it can stop anywhere and resume at the next event. The tree must not
// change in between; raft does not apply entries while an image is being
// encoded.
type treeEncoder struct {
	t *Tree
	e *jute.Encoder // the piece being encoded (raft.SnapshotEncoder.Take)
	// stack holds, per depth, the children still to visit; scratch keeps
	// their arrays for reuse.
	stack   []encFrame
	scratch [][]*znode
}

type encFrame struct {
	kids []*znode
	next int
}

func (t *Tree) beginSnapshot() *treeEncoder {
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
	enc := &treeEncoder{t: t, e: e}
	enc.node(t.root)
	return enc
}

// node encodes n and pushes its children in slot order. Sorting them by
// name took a third of the encoding time, during which applying waits.
func (enc *treeEncoder) node(n *znode) {
	e := enc.e
	// The name as a ustring, without making a string of it.
	e.Int(int32(n.nameLen))
	e.B = append(e.B, n.nameBytes()...)
	e.Buffer(n.data())
	e.Long(n.czxid)
	e.Long(n.mzxid)
	e.Long(n.pzxid)
	e.Long(n.ctime)
	e.Long(n.mtime)
	e.Int(n.version)
	e.Int(n.aversion)
	e.Int(n.creates)
	e.Long(n.owner)
	e.Int(int32(n.acl))
	e.Int(int32(n.kind))
	e.Long(enc.t.timed[n]) // ttl: 0 unless a TTL node
	e.Int(int32(n.children.len()))
	if n.children == nil {
		return
	}
	depth := len(enc.stack)
	if depth == len(enc.scratch) {
		enc.scratch = append(enc.scratch, nil)
	}
	kids := n.children.appendTo(enc.scratch[depth][:0]) // slot order: deterministic for a seed, and restore does not care
	enc.scratch[depth] = kids
	enc.stack = append(enc.stack, encFrame{kids: kids})
}

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
		n := top.kids[top.next]
		top.next++
		enc.node(n)
		budget--
	}
	return len(enc.stack) == 0
}

// snapshotPieceGuess sizes the first piece's buffer; later pieces start
// with the size of the one before (pieces are one raft step of znodes).
const snapshotPieceGuess = 64 << 10

// Take hands over the bytes encoded since the last Take (raft writes them
// to the snapshot file and drops them).
func (enc *treeEncoder) Take() []byte {
	piece := enc.e.B
	enc.e.B = make([]byte, 0, max(snapshotPieceGuess, len(piece)+len(piece)/8))
	return piece
}

var errBadTreeSnapshot = errors.New("keeper: malformed tree snapshot")

// RestoreTree rebuilds a tree from Snapshot's bytes; seed is its children
// sets' hash seed.
func RestoreTree(b []byte, seed uint64) (*Tree, error) {
	d := jute.NewDecoder(b)
	if d.Int() != treeMagic || d.Int() != treeVersion {
		return nil, fmt.Errorf("%w: bad header", errBadTreeSnapshot)
	}
	t := &Tree{
		seed:     seed,
		sessions: make(map[int64]*session),
		timed:    make(map[*znode]int64),
		acls:     aclCache{index: make(map[string]uint32)},
	}
	t.zxid = d.Long()
	nLists := d.Int()
	if nLists < 0 || int(nLists) > d.Remaining()/4 {
		return nil, fmt.Errorf("%w: %d acl lists", errBadTreeSnapshot, nLists)
	}
	for range nLists {
		n := d.Int()
		if n < 0 || int(n) > d.Remaining()/12 {
			return nil, fmt.Errorf("%w: acl list of %d", errBadTreeSnapshot, n)
		}
		list := make([]jute.ACL, n)
		for i := range list {
			list[i] = jute.ACL{Perms: d.Int(), ID: jute.ID{Scheme: d.String(), ID: d.String()}}
		}
		t.acls.index[aclKey(list)] = uint32(len(t.acls.lists))
		t.acls.lists = append(t.acls.lists, list)
	}
	nSess := d.Int()
	if nSess < 0 || int(nSess) > d.Remaining()/45 {
		return nil, fmt.Errorf("%w: %d sessions", errBadTreeSnapshot, nSess)
	}
	for range nSess {
		s := &session{id: d.Long(), timeout: d.Int(), ephemerals: make(map[*znode]struct{})}
		if pw := d.Buffer(); len(pw) != 16 {
			return nil, fmt.Errorf("%w: session password of %d bytes", errBadTreeSnapshot, len(pw))
		} else {
			copy(s.passwd[:], pw)
		}
		s.conn, s.next, s.broken = uint64(d.Long()), uint64(d.Long()), d.Bool()
		t.sessions[s.id] = s
	}
	var read func(parent *znode) (*znode, error)
	read = func(parent *znode) (*znode, error) {
		n := &znode{parent: parent}
		name, _ := d.BufferView()
		data, null := d.BufferView()
		n.buf = make([]byte, len(name)+len(data))
		copy(n.buf[copy(n.buf, name):], data)
		n.nameLen, n.nullData = uint32(len(name)), null
		n.czxid, n.mzxid, n.pzxid = d.Long(), d.Long(), d.Long()
		n.ctime, n.mtime = d.Long(), d.Long()
		n.version, n.aversion, n.creates = d.Int(), d.Int(), d.Int()
		n.owner = d.Long()
		n.acl = uint32(d.Int())
		n.kind = uint8(d.Int())
		ttl := d.Long()
		kids := d.Int()
		if err := d.Err(); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadTreeSnapshot, err)
		}
		if int(n.acl) >= len(t.acls.lists) || kids < 0 || int(kids) > d.Remaining()/70 {
			return nil, fmt.Errorf("%w: node %q", errBadTreeSnapshot, name)
		}
		t.count++
		t.bytes += len(n.buf)
		switch n.kind {
		case kindEphemeral:
			s := t.sessions[n.owner]
			if s == nil {
				return nil, fmt.Errorf("%w: ephemeral %q of unknown session 0x%x", errBadTreeSnapshot, name, n.owner)
			}
			s.ephemerals[n] = struct{}{}
		case kindContainer:
			t.timed[n] = 0
		case kindTTL:
			if ttl <= 0 {
				return nil, fmt.Errorf("%w: TTL node %q with ttl %d", errBadTreeSnapshot, name, ttl)
			}
			t.timed[n] = ttl
		}
		if kids > 0 {
			n.children = &childSet{}
			size := minChildSlots
			for size*3 < int(kids)*4 {
				size *= 2
			}
			n.children.tags, n.children.slots = make([]uint8, size), make([]*znode, size)
			for range kids {
				c, err := read(n)
				if err != nil {
					return nil, err
				}
				if n.children.find(seed, c.nameBytes()) != nil {
					return nil, fmt.Errorf("%w: two children %q", errBadTreeSnapshot, c.name())
				}
				n.children.add(seed, c)
			}
		}
		return n, nil
	}
	root, err := read(nil)
	if err != nil {
		return nil, err
	}
	if err := d.Done(); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadTreeSnapshot, err)
	}
	t.root = root
	return t, nil
}

func (t *Tree) dataSize() int { return t.bytes }
