package keeper

import (
	"encoding/base64"
	"net/netip"
	"slices"
	"strings"

	"herd/node/jute"
)

// caller is who applies a change, as the log entry records it.
type caller struct {
	session int64
	ids     []jute.ID // the connection's identities (ip:..., digest:...)
	super   bool
	zxid    int64
	time    int64 // ms since the epoch, stamped by the leader
}

// event is a watch trigger.
type event struct {
	typ  int32
	path string
}

// treeConfig holds the settings the state machine depends on; they are part
// of the ensemble's configuration and identical on every server.
type treeConfig struct {
	ttlEnabled     bool // zoo.cfg extendedTypesEnabled
	enforceQuota   bool // zoo.cfg enforceQuota: hard quota limits fail writes
	keepEphemerals bool // BugKeepEphemerals
}

const maxTTL = 1<<40 - 1

// ---- ACLs ----

// permitted reports whether ids may do perm on a node with acl
// (ZooKeeperServer.checkACL): an empty list allows everything,
// world:anyone matches everyone, digest ids match exactly, ip ids match an
// address or a CIDR block.
func permitted(acl []jute.ACL, c *caller, perm int32) bool {
	if c.super || len(acl) == 0 {
		return true
	}
	for _, a := range acl {
		if a.Perms&perm == 0 {
			continue
		}
		if a.ID.Scheme == "world" && a.ID.ID == "anyone" {
			return true
		}
		for _, id := range c.ids {
			if id.Scheme != a.ID.Scheme {
				continue
			}
			if id.ID == a.ID.ID || (id.Scheme == "ip" && ipMatches(a.ID.ID, id.ID)) {
				return true
			}
		}
	}
	return false
}

func ipMatches(pattern, addr string) bool {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	if p, err := netip.ParsePrefix(pattern); err == nil {
		return p.Contains(ip)
	}
	if pip, err := netip.ParseAddr(pattern); err == nil {
		return pip == ip
	}
	return false
}

// fixupACL turns a requested ACL into the stored one (PrepRequestProcessor
// fixupACL): "auth" expands to the caller's authenticated identities, every
// id must be valid for its scheme, and duplicates go.
func fixupACL(acl []jute.ACL, c *caller) ([]jute.ACL, int32) {
	if len(acl) == 0 {
		return nil, jute.ErrInvalidACL
	}
	var out []jute.ACL
	add := func(a jute.ACL) {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, a := range acl {
		switch a.ID.Scheme {
		case "world":
			if a.ID.ID != "anyone" {
				return nil, jute.ErrInvalidACL
			}
			add(a)
		case "auth":
			found := false
			for _, id := range c.ids {
				if id.Scheme == "digest" { // the only authenticated scheme (ip is not)
					add(jute.ACL{Perms: a.Perms, ID: id})
					found = true
				}
			}
			if !found {
				return nil, jute.ErrInvalidACL
			}
		case "digest":
			user, hash, ok := strings.Cut(a.ID.ID, ":")
			if !ok || user == "" || strings.Contains(hash, ":") {
				return nil, jute.ErrInvalidACL
			}
			if _, err := base64.StdEncoding.DecodeString(hash); err != nil {
				return nil, jute.ErrInvalidACL
			}
			add(a)
		case "ip":
			if _, err := netip.ParsePrefix(a.ID.ID); err != nil {
				if _, err := netip.ParseAddr(a.ID.ID); err != nil {
					return nil, jute.ErrInvalidACL
				}
			}
			add(a)
		default:
			return nil, jute.ErrInvalidACL
		}
	}
	return out, jute.ErrOK
}

// ---- writes ----

// createOp carries a create of any kind.
type createOp struct {
	op    int32 // OpCreate, OpCreate2, OpCreateContainer, OpCreateTTL
	path  string
	data  []byte
	acl   []jute.ACL
	flags int32
	ttl   int64 // -1 unless op is OpCreateTTL
}

// create applies a create, checking in ZooKeeper's order
// (PrepRequestProcessor.pRequest2TxnCreate): flags, the TTL switch, TTL
// validity, path shape, ACL, parent, parent CREATE permission, sequential
// suffix, final path, existence, ephemeral parent.
func (t *Tree) create(c *caller, cfg *treeConfig, r *createOp, ev *[]event, undo *[]func()) (string, *znode, int32) {
	if r.flags < jute.ModePersistent || r.flags > jute.ModePersistentSequentialWithTTL {
		return "", nil, jute.ErrBadArguments
	}
	mode := r.flags
	isTTL := mode == jute.ModePersistentWithTTL || mode == jute.ModePersistentSequentialWithTTL
	sequential := mode == jute.ModePersistentSequential || mode == jute.ModeEphemeralSequential || mode == jute.ModePersistentSequentialWithTTL
	if isTTL && !cfg.ttlEnabled {
		return "", nil, jute.ErrUnimplemented
	}
	if isTTL {
		if r.ttl <= 0 || r.ttl > maxTTL {
			return "", nil, jute.ErrBadArguments
		}
	} else if r.ttl >= 0 {
		return "", nil, jute.ErrBadArguments
	}
	parentPath, _, ok := parentOf(r.path)
	if !ok || strings.IndexByte(r.path, 0) >= 0 {
		return "", nil, jute.ErrBadArguments
	}
	acl, code := fixupACL(r.acl, c)
	if code != jute.ErrOK {
		return "", nil, code
	}
	parent := t.lookup(parentPath) // a malformed parent path is simply not found, as in ZooKeeper
	if parent == nil {
		return "", nil, jute.ErrNoNode
	}
	if !permitted(t.acls.get(parent.acl), c, jute.PermCreate) {
		return "", nil, jute.ErrNoAuth
	}
	path := r.path
	if sequential {
		path += jute.SequentialSuffix(parent.creates)
	}
	if jute.ValidatePath(path, false) != nil {
		return "", nil, jute.ErrBadArguments
	}
	_, name, _ := parentOf(path)
	if parent.children.get(t.seed, name) != nil {
		return "", nil, jute.ErrNodeExists
	}
	if parent.kind == kindEphemeral {
		return "", nil, jute.ErrNoChildrenForEphemerals
	}
	if code := t.quotaCheck(cfg, path, 1, int64(len(r.data))); code != jute.ErrOK {
		return "", nil, code
	}
	n := &znode{
		czxid: c.zxid, mzxid: c.zxid, pzxid: c.zxid,
		ctime: c.time, mtime: c.time,
		acl: t.acls.intern(acl),
	}
	var sess *session
	switch {
	case mode == jute.ModeEphemeral || mode == jute.ModeEphemeralSequential:
		sess = t.sessions[c.session]
		if sess == nil {
			return "", nil, jute.ErrSessionExpired
		}
		n.kind, n.owner = kindEphemeral, c.session
	case mode == jute.ModeContainer:
		n.kind = kindContainer
	case isTTL:
		n.kind = kindTTL
	}
	prevPzxid := parent.pzxid
	t.addChild(parent, name, r.data, n)
	parent.pzxid = c.zxid
	if sess != nil {
		sess.ephemerals[n] = struct{}{}
	}
	if n.kind == kindContainer {
		t.timed[n] = 0
	} else if n.kind == kindTTL {
		t.timed[n] = r.ttl
	}
	if undo != nil {
		*undo = append(*undo, func() {
			t.unlink(n)
			parent.creates--
			parent.pzxid = prevPzxid
		})
	}
	t.quotaNodeCreated(parentPath, name, n, undo)
	t.quotaUsage(path, 1, int64(n.dataLen()), undo)
	*ev = append(*ev, event{jute.EventNodeCreated, path}, event{jute.EventNodeChildrenChanged, parentPath})
	return path, n, jute.ErrOK
}

// unlink removes n from the tree and every index (not from parent.creates).
// It returns n's ttl (relink needs it back).
func (t *Tree) unlink(n *znode) (ttl int64) {
	t.unlinkChild(n)
	t.count--
	t.bytes -= len(n.buf)
	if n.kind == kindEphemeral {
		if s := t.sessions[n.owner]; s != nil {
			delete(s.ephemerals, n)
		}
	}
	ttl = t.timed[n]
	delete(t.timed, n)
	return ttl
}

// relink undoes unlink.
func (t *Tree) relink(n *znode, ttl int64) {
	t.link(n)
	t.count++
	t.bytes += len(n.buf)
	if n.kind == kindEphemeral {
		if s := t.sessions[n.owner]; s != nil {
			s.ephemerals[n] = struct{}{}
		}
	}
	if n.kind == kindContainer || n.kind == kindTTL {
		t.timed[n] = ttl
	}
}

// delete applies a delete (checks: path, special nodes, parent, parent
// DELETE permission, node, version, children).
func (t *Tree) delete(c *caller, path string, version int32, ev *[]event, undo *[]func()) int32 {
	if jute.ValidatePath(path, false) != nil {
		return jute.ErrBadArguments
	}
	if isSpecial(path) || path == "/" {
		return jute.ErrBadArguments
	}
	parentPath, _, _ := parentOf(path)
	parent := t.lookup(parentPath)
	if parent == nil {
		return jute.ErrNoNode
	}
	if !permitted(t.acls.get(parent.acl), c, jute.PermDelete) {
		return jute.ErrNoAuth
	}
	n := t.lookup(path)
	if n == nil {
		return jute.ErrNoNode
	}
	if version != -1 && version != n.version {
		return jute.ErrBadVersion
	}
	if n.children.len() > 0 {
		return jute.ErrNotEmpty
	}
	t.removeNode(n, c.zxid, ev, undo)
	return jute.ErrOK
}

// removeNode deletes a childless node and fires its events.
func (t *Tree) removeNode(n *znode, zxid int64, ev *[]event, undo *[]func()) {
	parent := n.parent
	prevPzxid := parent.pzxid
	path := n.path()
	ttl := t.unlink(n)
	parent.pzxid = zxid
	if undo != nil {
		*undo = append(*undo, func() {
			t.relink(n, ttl)
			parent.pzxid = prevPzxid
		})
	}
	pp, name, _ := parentOf(path)
	t.quotaNodeDeleted(pp, name, undo)
	t.quotaUsage(path, -1, -int64(n.dataLen()), undo)
	*ev = append(*ev, event{jute.EventNodeDeleted, path}, event{jute.EventNodeChildrenChanged, pp})
}

// setData checks in ZooKeeper's order: path, node, WRITE permission, quota,
// version.
func (t *Tree) setData(c *caller, cfg *treeConfig, path string, data []byte, version int32, ev *[]event, undo *[]func()) (*znode, int32) {
	if jute.ValidatePath(path, false) != nil {
		return nil, jute.ErrBadArguments
	}
	n := t.lookup(path)
	if n == nil {
		return nil, jute.ErrNoNode
	}
	if !permitted(t.acls.get(n.acl), c, jute.PermWrite) {
		return nil, jute.ErrNoAuth
	}
	dBytes := int64(len(data) - n.dataLen())
	if code := t.quotaCheck(cfg, path, 0, dBytes); code != jute.ErrOK {
		return nil, code
	}
	if version != -1 && version != n.version {
		return nil, jute.ErrBadVersion
	}
	if !t.bugFuzzySnapshot {
		t.preserve(n)
	}
	prev := *n
	t.bytes += len(data) - n.dataLen()
	n.setNameData(n.name(), data)
	n.version++
	n.mzxid, n.mtime = c.zxid, c.time
	if undo != nil {
		*undo = append(*undo, func() {
			t.bytes += prev.dataLen() - n.dataLen()
			n.buf, n.nullData, n.version, n.mzxid, n.mtime = prev.buf, prev.nullData, prev.version, prev.mzxid, prev.mtime
		})
	}
	t.quotaUsage(path, 0, dBytes, undo)
	*ev = append(*ev, event{jute.EventNodeDataChanged, path})
	return n, jute.ErrOK
}

// setACL checks in ZooKeeper's order: path, ACL fixup, node, ADMIN
// permission, aversion.
func (t *Tree) setACL(c *caller, path string, acl []jute.ACL, version int32) (*znode, int32) {
	if jute.ValidatePath(path, false) != nil {
		return nil, jute.ErrBadArguments
	}
	fixed, code := fixupACL(acl, c)
	if code != jute.ErrOK {
		return nil, code
	}
	n := t.lookup(path)
	if n == nil {
		return nil, jute.ErrNoNode
	}
	if !permitted(t.acls.get(n.acl), c, jute.PermAdmin) {
		return nil, jute.ErrNoAuth
	}
	if version != -1 && version != n.aversion {
		return nil, jute.ErrBadVersion
	}
	t.preserve(n)
	n.acl = t.acls.intern(fixed)
	n.aversion++
	return n, jute.ErrOK
}

func (t *Tree) check(c *caller, path string, version int32) int32 {
	if jute.ValidatePath(path, false) != nil {
		return jute.ErrBadArguments
	}
	n := t.lookup(path)
	if n == nil {
		return jute.ErrNoNode
	}
	if !permitted(t.acls.get(n.acl), c, jute.PermRead) {
		return jute.ErrNoAuth
	}
	if version != -1 && version != n.version {
		return jute.ErrBadVersion
	}
	return jute.ErrOK
}

// ---- sessions ----

func (t *Tree) createSession(id int64, timeout int32, passwd [16]byte) {
	t.sessions[id] = &session{id: id, timeout: timeout, passwd: passwd, ephemerals: make(map[*znode]struct{})}
}

// closeSession deletes a session and its ephemerals, in path order, each
// firing its events and updating its parent exactly like a delete.
func (t *Tree) closeSession(id int64, zxid int64, ev *[]event, keepEphemerals bool) bool {
	s := t.sessions[id]
	if s == nil {
		return false
	}
	if keepEphemerals {
		delete(t.sessions, id)
		return true
	}
	nodes := make([]*znode, 0, len(s.ephemerals))
	for n := range s.ephemerals { // order-independent: sorted below
		nodes = append(nodes, n)
	}
	paths := make(map[*znode]string, len(nodes))
	for _, n := range nodes {
		paths[n] = n.path()
	}
	slices.SortFunc(nodes, func(a, b *znode) int { return strings.Compare(paths[a], paths[b]) })
	for _, n := range nodes {
		t.removeNode(n, zxid, ev, nil)
	}
	delete(t.sessions, id)
	return true
}

// ---- reads ----

// getACL returns a node's ACL; without ADMIN, digest ids are masked
// (FinalRequestProcessor).
func (t *Tree) getACL(c *caller, n *znode) []jute.ACL {
	acl := t.acls.get(n.acl)
	if permitted(acl, c, jute.PermAdmin) {
		return acl
	}
	out := slices.Clone(acl)
	for i, a := range out {
		if a.ID.Scheme == "digest" {
			user, _, _ := strings.Cut(a.ID.ID, ":")
			out[i].ID.ID = user + ":x"
		}
	}
	return out
}

// ephemeralsOf lists a session's ephemerals under a prefix, sorted.
func (t *Tree) ephemeralsOf(id int64, prefix string) []string {
	s := t.sessions[id]
	if s == nil {
		return nil
	}
	var out []string
	for n := range s.ephemerals { // order-independent: sorted below
		if p := n.path(); strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// descendants counts all nodes below n.
func descendants(n *znode) int32 {
	total := int32(0)
	if n.children == nil {
		return 0
	}
	for _, c := range n.children.slots { // order-independent: counting
		if c != nil {
			total += 1 + descendants(c)
		}
	}
	return total
}

// expired lists, in path order, containers that had children and have none
// now, and TTL nodes without children whose mtime is older than their ttl
// (ZooKeeper's ContainerManager).
func (t *Tree) expired(now int64) []string {
	var out []string
	for n, ttl := range t.timed { // order-independent: sorted below
		if n.children.len() > 0 {
			continue
		}
		if (n.kind == kindContainer && n.creates > 0) || (n.kind == kindTTL && now-n.mtime > ttl) {
			out = append(out, n.path())
		}
	}
	slices.Sort(out)
	return out
}

// cloneData copies znode data, keeping ZooKeeper's distinction between null
// (nil: jute length -1) and empty (length 0): clients see it (kazoo returns
// None for one and b"" for the other, and its Counter recipe needs b"").
func cloneData(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
