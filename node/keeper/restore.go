package keeper

import (
	"encoding/binary"
	"errors"
	"fmt"

	"herd/node/jute"
)

var errBadTreeSnapshot = errors.New("keeper: malformed tree snapshot")

// RestoreTree rebuilds a tree from Snapshot's bytes; seed is its children
// sets' hash seed.
func RestoreTree(b []byte, seed uint64) (*Tree, error) {
	d := newTreeDecoder(seed, int64(len(b)))
	if err := d.Write(b); err != nil {
		return nil, err
	}
	return d.finish()
}

// treeDecoder rebuilds a tree from a snapshot image that arrives in pieces
// split anywhere (raft's IncrementalRestore): a restarting server reads its
// snapshot file a piece at a time, and a follower gets its leader's in
// chunks, so the image (200 MB for a million znodes) is never in memory
// beside the tree it decodes to; held whole it put a restarted server's
// resident memory at the image plus the tree.
//
// The walk is the encoder's (depth-first, each node followed by its
// children) with an explicit stack of the parents whose children are still
// to come. A record cut by the end of a piece is kept (pending) and
// completed from the next one: for a node record the two length prefixes
// give its size; a header record (an ACL list, a session) is decoded again
// once more bytes have come. Counts are checked against the bytes the
// image has left, as jute's own lengths are, so that no count allocates
// more than the input could describe.
type treeDecoder struct {
	t     *Tree
	left  int64 // bytes of the image not yet consumed
	phase decodePhase
	count int32 // ACL lists or sessions still to come
	root  *znode
	stack []restoreFrame
	// pending holds the start of a record the last piece cut short.
	pending []byte
	err     error
}

type decodePhase uint8

const (
	phaseHeader decodePhase = iota
	phaseACLs
	phaseSessionCount
	phaseSessions
	phaseNodes
	phaseDone
)

// restoreFrame is a parent whose children are still to come.
type restoreFrame struct {
	n    *znode
	left int32
}

// treeHeaderSize is magic, version, zxid and the number of ACL lists.
const treeHeaderSize = 4 + 4 + 8 + 4

func newTreeDecoder(seed uint64, size int64) *treeDecoder {
	return &treeDecoder{
		left: size,
		t: &Tree{
			seed:     seed,
			sessions: make(map[int64]*session),
			timed:    make(map[*znode]int64),
			acls:     aclCache{index: make(map[string]uint32)},
		},
	}
}

// Write decodes the next bytes of the image. p is not kept: the decoder
// copies what it holds on to.
func (d *treeDecoder) Write(p []byte) error {
	if d.err != nil {
		return d.err
	}
	if extra := int64(len(p)) - (d.left - int64(len(d.pending))); extra > 0 {
		d.err = fmt.Errorf("%w: %d bytes past its end", errBadTreeSnapshot, extra)
		return d.err
	}
	for len(d.pending) > 0 && len(p) > 0 {
		// Complete the cut record from the front of p, a growing chunk at a
		// time, so that a small tail does not copy a whole piece.
		old := len(d.pending)
		take := min(len(p), max(4096, old))
		d.pending = append(d.pending, p[:take]...)
		used, err := d.records(d.pending)
		if err != nil {
			return d.fail(err)
		}
		if used == 0 {
			p = p[take:]
			continue
		}
		// The cut record (and maybe more) is done; what of p it did not
		// consume is decoded in place below. used > old: the record began
		// in pending.
		p = p[take-min(take, len(d.pending)-used):]
		d.pending = d.pending[:0]
	}
	if len(p) == 0 {
		return nil
	}
	used, err := d.records(p)
	if err != nil {
		return d.fail(err)
	}
	d.pending = append(d.pending, p[used:]...)
	return nil
}

func (d *treeDecoder) fail(err error) error {
	d.err = fmt.Errorf("%w: %v", errBadTreeSnapshot, err)
	return d.err
}

// records decodes whole records from the front of b and returns how many
// bytes they took; a record b holds only the start of is left.
func (d *treeDecoder) records(b []byte) (int, error) {
	at := 0
	for d.phase != phaseDone {
		n, err := d.record(b[at:])
		if err != nil || n == 0 {
			return at, err
		}
		at += n
		d.left -= int64(n)
	}
	if at < len(b) {
		return at, fmt.Errorf("%d bytes after the last node", len(b)-at)
	}
	return at, nil
}

// record decodes the next record if b holds all of it, returning its size,
// or 0 if b holds only its start.
func (d *treeDecoder) record(b []byte) (int, error) {
	switch d.phase {
	case phaseHeader:
		if len(b) < treeHeaderSize {
			return 0, nil
		}
		be := binary.BigEndian
		if int32(be.Uint32(b)) != treeMagic || int32(be.Uint32(b[4:])) != treeVersion {
			return 0, errors.New("bad header")
		}
		d.t.zxid = int64(be.Uint64(b[8:]))
		n := int32(be.Uint32(b[16:]))
		if n < 0 || int64(n) > (d.left-treeHeaderSize)/4 {
			return 0, fmt.Errorf("%d acl lists", n)
		}
		d.count, d.phase = n, phaseACLs
		if n == 0 {
			d.phase = phaseSessionCount
		}
		return treeHeaderSize, nil
	case phaseACLs:
		return d.aclList(b)
	case phaseSessionCount:
		if len(b) < 4 {
			return 0, nil
		}
		n := int32(binary.BigEndian.Uint32(b))
		if n < 0 || int64(n) > (d.left-4)/45 {
			return 0, fmt.Errorf("%d sessions", n)
		}
		d.count, d.phase = n, phaseSessions
		if n == 0 {
			d.phase = phaseNodes
		}
		return 4, nil
	case phaseSessions:
		return d.session(b)
	default:
		return d.node(b)
	}
}

// complete reports whether a header record's decoding failed only because
// b ends before it does: then more of the image is to come and the record
// is tried again with it.
func (d *treeDecoder) complete(dec *jute.Decoder, b []byte) (bool, error) {
	if err := dec.Err(); err != nil {
		if int64(len(b)) < d.left {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func (d *treeDecoder) aclList(b []byte) (int, error) {
	dec := jute.NewDecoder(b)
	n := dec.Int()
	if dec.Err() == nil && (n < 0 || int64(n) > d.left/12) {
		return 0, fmt.Errorf("acl list of %d", n)
	}
	// Appended, not made at the count: the image's checksum is verified
	// only once all of it has been decoded, so a damaged count must not
	// allocate more than the bytes at hand describe.
	var list []jute.ACL
	for i := int32(0); i < n && dec.Err() == nil; i++ {
		list = append(list, jute.ACL{Perms: dec.Int(), ID: jute.ID{Scheme: dec.String(), ID: dec.String()}})
	}
	if ok, err := d.complete(dec, b); !ok {
		return 0, err
	}
	t := d.t
	t.acls.index[string(appendACLKey(nil, list))] = uint32(len(t.acls.lists))
	t.acls.lists = append(t.acls.lists, list)
	if d.count--; d.count == 0 {
		d.phase = phaseSessionCount
	}
	return len(b) - dec.Remaining(), nil
}

func (d *treeDecoder) session(b []byte) (int, error) {
	dec := jute.NewDecoder(b)
	s := &session{id: dec.Long(), timeout: dec.Int()}
	pw, _ := dec.BufferView()
	s.conn, s.next, s.broken = uint64(dec.Long()), uint64(dec.Long()), dec.Bool()
	if ok, err := d.complete(dec, b); !ok {
		return 0, err
	}
	if len(pw) != 16 {
		return 0, fmt.Errorf("session password of %d bytes", len(pw))
	}
	copy(s.passwd[:], pw)
	s.ephemerals = make(map[*znode]struct{})
	d.t.sessions[s.id] = s
	if d.count--; d.count == 0 {
		d.phase = phaseNodes
	}
	return len(b) - dec.Remaining(), nil
}

// nodeSize is the size of the node record at the front of b, from its name
// and data lengths, or 0 if b is too short to tell.
func nodeSize(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	nl := int32(binary.BigEndian.Uint32(b))
	if nl < -1 {
		return 0, fmt.Errorf("name of length %d", nl)
	}
	at := 4 + int(max(nl, 0))
	if len(b) < at+4 {
		return 0, nil
	}
	dl := int32(binary.BigEndian.Uint32(b[at:]))
	if dl < -1 {
		return 0, fmt.Errorf("data of length %d", dl)
	}
	return at + 4 + int(max(dl, 0)) + znodeImageFields + 4, nil
}

func (d *treeDecoder) node(b []byte) (int, error) {
	size, err := nodeSize(b)
	if err != nil {
		return 0, err
	}
	if size == 0 || size > len(b) {
		if int64(len(b)) >= d.left || (size > 0 && int64(size) > d.left) {
			return 0, errors.New("truncated node")
		}
		return 0, nil
	}
	t := d.t
	var parent *znode
	if k := len(d.stack); k > 0 {
		parent = d.stack[k-1].n
	}
	dec := jute.NewDecoder(b[:size])
	n := &znode{parent: parent}
	name, _ := dec.BufferView()
	data, null := dec.BufferView()
	n.buf = make([]byte, len(name)+len(data))
	copy(n.buf[copy(n.buf, name):], data)
	n.nameLen, n.nullData = uint32(len(name)), null
	n.czxid, n.mzxid, n.pzxid = dec.Long(), dec.Long(), dec.Long()
	n.ctime, n.mtime = dec.Long(), dec.Long()
	n.version, n.aversion, n.creates = dec.Int(), dec.Int(), dec.Int()
	n.owner = dec.Long()
	n.acl = uint32(dec.Int())
	n.kind = uint8(dec.Int())
	ttl := dec.Long()
	kids := dec.Int()
	if err := dec.Done(); err != nil {
		return 0, err
	}
	if int(n.acl) >= len(t.acls.lists) || kids < 0 || int64(kids) > (d.left-int64(size))/70 {
		return 0, fmt.Errorf("node %q", name)
	}
	t.count++
	t.bytes += len(n.buf)
	switch n.kind {
	case kindEphemeral:
		s := t.sessions[n.owner]
		if s == nil {
			return 0, fmt.Errorf("ephemeral %q of unknown session 0x%x", name, n.owner)
		}
		s.ephemerals[n] = struct{}{}
	case kindContainer:
		t.timed[n] = 0
	case kindTTL:
		if ttl <= 0 {
			return 0, fmt.Errorf("TTL node %q with ttl %d", name, ttl)
		}
		t.timed[n] = ttl
	}
	if parent == nil {
		d.root = n
	} else {
		if parent.children.find(t.seed, n.nameBytes()) != nil {
			return 0, fmt.Errorf("two children %q", n.name())
		}
		parent.children.add(t.seed, n)
		d.stack[len(d.stack)-1].left--
	}
	if kids > 0 {
		n.children = &childSet{}
		slots := minChildSlots
		for slots*3 < int(kids)*4 {
			slots *= 2
		}
		n.children.tags, n.children.slots = make([]uint8, slots), make([]*znode, slots)
		d.stack = append(d.stack, restoreFrame{n: n, left: kids})
	}
	// Parents whose last child this was are complete.
	for len(d.stack) > 0 && d.stack[len(d.stack)-1].left == 0 {
		d.stack = d.stack[:len(d.stack)-1]
	}
	if len(d.stack) == 0 {
		d.phase = phaseDone
	}
	return size, nil
}

// finish returns the tree once the whole image has been decoded.
func (d *treeDecoder) finish() (*Tree, error) {
	if d.err != nil {
		return nil, d.err
	}
	if d.phase != phaseDone || len(d.pending) > 0 || d.left != 0 {
		return nil, fmt.Errorf("%w: truncated (%d bytes missing)", errBadTreeSnapshot, d.left)
	}
	d.t.root = d.root
	d.t.restoreQuotas()
	t := d.t
	d.t, d.root, d.stack = nil, nil, nil
	return t, nil
}
