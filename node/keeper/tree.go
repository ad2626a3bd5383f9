package keeper

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"herd/node/jute"
)

// The data tree is the keeper's state machine: znodes, their Stat, ACLs,
// sessions and their ephemerals. Every server applies the same log to it
// and reaches the same state; nothing in it depends on which server applies,
// or when.

// znode kinds, kept apart from ephemeralOwner so Stat can report what
// ZooKeeper reports (containers and TTL nodes show ephemeralOwner 0).
const (
	kindPersistent uint8 = iota
	kindEphemeral
	kindContainer
	kindTTL
)

type znode struct {
	// buf is the name (the last path element, "" for the root: nameLen
	// bytes) followed by the data, in one allocation; nullData tells
	// ZooKeeper's null data from empty (clients see the difference).
	buf      []byte
	parent   *znode
	children *childSet // nil while there are none

	czxid, mzxid, pzxid int64
	ctime, mtime        int64
	version, aversion   int32
	// creates counts child creates: the sequential suffix, and (with
	// numChildren) the client-visible cversion = 2*creates - numChildren.
	creates  int32
	acl      uint32
	owner    int64 // ephemeral owner session, 0 otherwise
	nameLen  uint32
	kind     uint8
	nullData bool
	// gen is Tree.gen when a snapshot being encoded has already encoded
	// this node, or kept an image of it as of the snapshot's index
	// (Tree.preserve), or the node is newer than the snapshot.
	gen uint16
	// A TTL node's ttl is kept in Tree.timed: on every znode it would push
	// the struct into the next size class.
}

func (n *znode) nameBytes() []byte { return n.buf[:n.nameLen:n.nameLen] }

func (n *znode) name() string { return string(n.buf[:n.nameLen]) }

// data is the znode's data (nil for null). Callers must not modify it: it
// is shared with replies and replaced, never changed, by setData.
func (n *znode) data() []byte {
	if n.nullData {
		return nil
	}
	return n.buf[n.nameLen:len(n.buf):len(n.buf)]
}

func (n *znode) dataLen() int { return len(n.buf) - int(n.nameLen) }

// setNameData stores name and data (nil: null) in a fresh buffer.
func (n *znode) setNameData(name string, data []byte) {
	buf := make([]byte, len(name)+len(data))
	copy(buf[copy(buf, name):], data)
	n.buf, n.nameLen, n.nullData = buf, uint32(len(name)), data == nil
}

func (n *znode) path() string {
	if n.parent == nil {
		return "/"
	}
	size := 0
	for m := n; m.parent != nil; m = m.parent {
		size += 1 + len(m.nameBytes())
	}
	// One allocation, filled from the end: paths are built on every create
	// and delete (for their watch events).
	b := make([]byte, size)
	for m := n; m.parent != nil; m = m.parent {
		name := m.nameBytes()
		size -= len(name)
		copy(b[size:], name)
		size--
		b[size] = '/'
	}
	return string(b)
}

func (n *znode) numChildren() int32 { return int32(n.children.len()) }

// stat is the Stat a client sees.
func (n *znode) stat() jute.Stat {
	owner := n.owner
	if n.kind != kindEphemeral {
		owner = 0
	}
	return jute.Stat{
		Czxid: n.czxid, Mzxid: n.mzxid, Ctime: n.ctime, Mtime: n.mtime,
		Version: n.version, Cversion: 2*n.creates - n.numChildren(), Aversion: n.aversion,
		EphemeralOwner: owner, DataLength: int32(n.dataLen()), NumChildren: n.numChildren(), Pzxid: n.pzxid,
	}
}

// sortedChildren returns the child names in byte order. ZooKeeper's order is
// a hash set's; any order is allowed, and a deterministic one keeps replay
// exact.
func (n *znode) sortedChildren() []string {
	names := make([]string, 0, n.children.len())
	for _, c := range n.children.appendTo(nil) { // order-independent: sorted below
		names = append(names, c.name())
	}
	slices.Sort(names)
	return names
}

// session is a client session as the whole ensemble knows it.
type session struct {
	id      int64
	timeout int32 // negotiated, ms
	passwd  [16]byte
	// Writes of a session apply in the order its client sent them, from one
	// connection at a time: conn names the connection whose writes are
	// accepted, next the sequence number expected from it. A write from a
	// newer connection starting at 1 takes the session over (the old
	// connection is fenced: ZooKeeper's SessionMoved); a gap (a forwarded
	// write lost with a leader) rejects everything after it from that
	// connection, whose server then drops it.
	conn       uint64
	next       uint64
	broken     bool
	ephemerals map[*znode]struct{}
}

// aclCache stores each distinct ACL list once: most znodes share a handful.
type aclCache struct {
	lists [][]jute.ACL
	index map[string]uint32
}

// appendACLKey appends acl's identity as a map key. It runs on every
// create, so it formats by hand rather than through fmt.
func appendACLKey(b []byte, acl []jute.ACL) []byte {
	for _, a := range acl {
		b = strconv.AppendInt(b, int64(a.Perms), 10)
		b = append(b, 0)
		b = append(b, a.ID.Scheme...)
		b = append(b, 0)
		b = append(b, a.ID.ID...)
		b = append(b, 0)
	}
	return b
}

func (c *aclCache) intern(acl []jute.ACL) uint32 {
	var buf [128]byte
	k := appendACLKey(buf[:0], acl)
	if i, ok := c.index[string(k)]; ok { // no allocation for the lookup
		return i
	}
	i := uint32(len(c.lists))
	c.lists = append(c.lists, slices.Clone(acl))
	c.index[string(k)] = i
	return i
}

func (c *aclCache) get(i uint32) []jute.ACL { return c.lists[i] }

// Tree is the data tree.
type Tree struct {
	root     *znode
	acls     aclCache
	sessions map[int64]*session
	// timed holds container and TTL nodes, for the reaper, with a TTL
	// node's ttl in ms (0 for containers).
	timed map[*znode]int64
	// seed is the children sets' hash seed (childSet).
	seed uint64
	// enc is the snapshot being encoded while the tree keeps changing
	// (nil if none), gen its generation (znode.gen).
	enc *treeEncoder
	gen uint16
	// bugFuzzySnapshot and bugQuotaMulti plant BugFuzzySnapshot and
	// BugQuotaMulti.
	bugFuzzySnapshot bool
	bugQuotaMulti    bool
	// quotas holds the paths under quota (quota.go); nil while none are.
	quotas map[string]struct{}
	count  int // znodes, the root included
	bytes  int // data and name bytes of all znodes
	zxid   int64
}

// NewTree returns the tree ZooKeeper starts with: / with /zookeeper,
// /zookeeper/config (world-readable) and /zookeeper/quota. seed is the
// hash seed of its children sets (see childSet).
func NewTree(seed uint64) *Tree {
	t := &Tree{
		seed:     seed,
		sessions: make(map[int64]*session),
		timed:    make(map[*znode]int64),
		acls:     aclCache{index: make(map[string]uint32)},
	}
	open := t.acls.intern(openACL)
	t.root = &znode{acl: open, nullData: true}
	t.count = 1
	zk := t.addChild(t.root, "zookeeper", nil, &znode{acl: open})
	t.addChild(zk, "config", nil, &znode{acl: t.acls.intern(readACL)})
	t.addChild(zk, "quota", nil, &znode{acl: open})
	// The constructor's nodes are not counted as child creates: a fresh
	// root reports cversion -1, as ZooKeeper's does.
	t.root.creates, zk.creates = 0, 0
	return t
}

// setConfigData sets /zookeeper/config to the ensemble's configuration in
// ZooKeeper's format (QuorumVerifier.toString: a "server.N=host:quorum:
// election:participant" line per server, then "version=0", no final
// newline). zkCli's `config` prints it. A single server runs standalone and,
// as in ZooKeeper, leaves it empty.
func (t *Tree) setConfigData(servers []ServerSpec) {
	if len(servers) <= 1 {
		return
	}
	var b strings.Builder
	for _, sp := range servers {
		fmt.Fprintf(&b, "server.%d=%s:%d:%d:participant\n", sp.ID, sp.Host, sp.QuorumPort, sp.ElectionPort)
	}
	b.WriteString("version=0")
	n := t.lookup("/zookeeper/config")
	t.bytes += b.Len() - n.dataLen()
	n.setNameData(n.name(), []byte(b.String()))
}

var (
	openACL = []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
	readACL = []jute.ACL{{Perms: jute.PermRead, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
)

// addChild links n into the tree as parent's child called name, with data
// (nil: null).
func (t *Tree) addChild(parent *znode, name string, data []byte, n *znode) *znode {
	n.setNameData(name, data)
	n.parent = parent
	if t.enc != nil {
		n.gen = t.gen // not in the snapshot being encoded
	}
	t.link(n)
	parent.creates++
	t.count++
	t.bytes += len(n.buf)
	return n
}

// reseed changes the children sets' hash seed, rehashing every set.
func (t *Tree) reseed(seed uint64) {
	t.seed = seed
	t.walk(func(n *znode) {
		if n.children != nil {
			n.children.resize(seed, len(n.children.slots))
		}
	})
}

// link adds n to its parent's children.
func (t *Tree) link(n *znode) {
	p := n.parent
	t.preserve(p)
	if p.children == nil {
		p.children = &childSet{}
	}
	p.children.add(t.seed, n)
}

// unlinkChild removes n from its parent's children.
func (t *Tree) unlinkChild(n *znode) {
	p := n.parent
	t.preserve(p)
	t.preserve(n) // its ttl leaves the index
	if p.children.remove(t.seed, n) {
		p.children = nil
	}
}

// Zxid is the zxid of the last entry applied.
func (t *Tree) Zxid() int64 { return t.zxid }

// Count is the number of znodes.
func (t *Tree) Count() int { return t.count }

// lookup finds a znode by path, or nil. Most callers validate the path
// first; setWatches cannot (ZooKeeper answers whatever paths a reconnecting
// client lists, from its node map), so any string must come back nil unless
// it names a znode, and "" names the root, as the root's alias in
// ZooKeeper's DataTree.
func (t *Tree) lookup(path string) *znode {
	if path == "/" || path == "" {
		return t.root
	}
	if path[0] != '/' {
		return nil
	}
	n := t.root
	for rest := path[1:]; n != nil; {
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return n.children.get(t.seed, rest)
		}
		n = n.children.get(t.seed, rest[:i])
		rest = rest[i+1:]
	}
	return nil
}

// parentOf splits a path into parent path and name; ok is false if the path
// has no '/'.
func parentOf(path string) (parent, name string, ok bool) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return "", "", false
	}
	if i == 0 {
		return "/", path[1:], true
	}
	return path[:i], path[i+1:], true
}

func isSpecial(path string) bool {
	return path == "/zookeeper" || path == "/zookeeper/quota" || path == "/zookeeper/config"
}
