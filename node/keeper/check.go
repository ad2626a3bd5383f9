package keeper

import (
	"fmt"
	"slices"
	"strings"
)

// CheckInvariants verifies the tree's structure: parent and child links
// agree, the node count is right, every ephemeral belongs to a live session
// whose index lists it (and has no children), every session's index lists
// only its live ephemerals, containers and TTL nodes are indexed, and no
// node has had fewer child creates than it has children. The simulator runs
// it on every server; it costs a walk of the tree.
func (t *Tree) CheckInvariants() error {
	count := 0
	bytes := 0
	ephemerals := 0
	var walk func(n *znode, path string) error
	walk = func(n *znode, path string) error {
		count++
		bytes += len(n.buf)
		builtin := int32(0) // children the constructor made without counting them
		switch path {
		case "/":
			builtin = 1
		case "/zookeeper":
			builtin = 2
		}
		if n.creates < n.numChildren()-builtin {
			return fmt.Errorf("%s: %d children but %d child creates", path, n.numChildren(), n.creates)
		}
		switch n.kind {
		case kindEphemeral:
			ephemerals++
			s := t.sessions[n.owner]
			if s == nil {
				return fmt.Errorf("%s: ephemeral of session 0x%x, which does not exist", path, n.owner)
			}
			if _, ok := s.ephemerals[n]; !ok {
				return fmt.Errorf("%s: ephemeral missing from session 0x%x's index", path, n.owner)
			}
			if n.children.len() > 0 {
				return fmt.Errorf("%s: ephemeral with children", path)
			}
		case kindContainer, kindTTL:
			if _, ok := t.timed[n]; !ok {
				return fmt.Errorf("%s: container/TTL node not indexed", path)
			}
		}
		kids := n.children.appendTo(nil)
		if n.children != nil {
			if err := n.children.verify(t.seed); err != nil {
				return fmt.Errorf("%s: children: %v", path, err)
			}
		}
		if (n.kind == kindTTL) != (t.timed[n] > 0) {
			return fmt.Errorf("%s: ttl %d on a node of kind %d", path, t.timed[n], n.kind)
		}
		for _, c := range kids { // order-independent: the first error found may differ, any is a failure
			name := c.name()
			if c.parent != n {
				return fmt.Errorf("%s/%s: broken parent link", path, name)
			}
			if n.children.get(t.seed, name) != c {
				return fmt.Errorf("%s/%s: not found by name in its parent's set", path, name)
			}
			p := path + "/" + name
			if path == "/" {
				p = "/" + name
			}
			if err := walk(c, p); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(t.root, "/"); err != nil {
		return err
	}
	if count != t.count {
		return fmt.Errorf("tree holds %d nodes, its count says %d", count, t.count)
	}
	if bytes != t.bytes {
		return fmt.Errorf("tree holds %d data and name bytes, its count says %d", bytes, t.bytes)
	}
	indexed := 0
	for id, s := range t.sessions { // order-independent: counting and membership
		for n := range s.ephemerals { // order-independent: membership
			if n.owner != id || n.kind != kindEphemeral || n.parent == nil || n.parent.children.get(t.seed, n.name()) != n {
				return fmt.Errorf("session 0x%x lists an ephemeral that is not in the tree as its own", id)
			}
		}
		indexed += len(s.ephemerals)
	}
	if indexed != ephemerals {
		return fmt.Errorf("%d ephemerals in the tree, %d in session indexes", ephemerals, indexed)
	}
	rebuilt := &Tree{root: t.root, seed: t.seed}
	rebuilt.restoreQuotas()
	if len(rebuilt.quotas) != len(t.quotas) {
		return fmt.Errorf("%d paths under quota, %d limits nodes", len(t.quotas), len(rebuilt.quotas))
	}
	for p := range t.quotas { // order-independent: membership
		if _, ok := rebuilt.quotas[p]; !ok {
			return fmt.Errorf("%s is under quota without a limits node", p)
		}
	}
	return nil
}

// HasSession reports whether the session exists.
func (t *Tree) HasSession(id int64) bool { return t.sessions[id] != nil }

// Exists reports whether a znode exists.
func (t *Tree) Exists(path string) bool { return t.lookup(path) != nil }

// Canonical prints a tree in name order with every field a snapshot keeps:
// trees print alike exactly when they hold the same state, whatever their
// children sets' seeds and slot layouts.
func Canonical(t *Tree) string {
	var b strings.Builder
	var walk func(n *znode, path string)
	walk = func(n *znode, path string) {
		fmt.Fprintf(&b, "%s %q null=%v %+v acl=%d creates=%d ttl=%d\n", path, n.data(), n.data() == nil, n.stat(), n.acl, n.creates, t.timed[n])
		kids := n.children.appendTo(nil)
		slices.SortFunc(kids, func(a, b *znode) int { return strings.Compare(a.name(), b.name()) })
		for _, c := range kids {
			walk(c, strings.TrimSuffix(path, "/")+"/"+c.name())
		}
	}
	walk(t.root, "/")
	ids := make([]int64, 0, len(t.sessions))
	for id := range t.sessions { // order-independent: sorted below
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := t.sessions[id]
		fmt.Fprintf(&b, "session %x %d %x %d %d %v %d\n", s.id, s.timeout, s.passwd, s.conn, s.next, s.broken, len(s.ephemerals))
	}
	fmt.Fprintf(&b, "zxid %x acls %v\n", t.zxid, t.acls.lists)
	return b.String()
}
