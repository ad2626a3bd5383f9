package keeper

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"herd/node/jute"
)

// Quotas, as ZooKeeper keeps them (DataTree, StatsTrack, zkCli's setquota):
// a path P is under quota while /zookeeper/quota/P/zookeeper_limits exists.
// The limits node holds what the operator set ("count=N,bytes=B" and,
// since 3.7, ";countHardLimit=..;byteHardLimit=.."); the server keeps the
// sibling /zookeeper/quota/P/zookeeper_stats up to date with the number of
// znodes under P (P included) and the bytes of their data. Creating the
// stats node counts P's subtree afresh; after that every create, delete
// and setData below P adjusts it, in place, without a new version or
// mzxid (zkCli's listquota prints it). A change is counted against the
// deepest quota path above it only. With enforceQuota, a create or
// setData that would go past a hard limit fails with QuotaExceeded.
//
// The stats live in the tree, so snapshots carry them and every server
// holds the same. Unlike ZooKeeper, a restored snapshot does not count
// the subtrees again: ZooKeeper's recount at load can leave a restarted
// server with other figures than its peers (when quotas are nested, or
// someone wrote the stats node); here the replicated state decides.

const (
	quotaDir       = "/zookeeper/quota"
	quotaLimitNode = "zookeeper_limits"
	quotaStatNode  = "zookeeper_stats"
)

// statsTrack is ZooKeeper's StatsTrack: key=value pairs separated by ','
// or ';'; a missing key reads as -1.
type statsTrack map[string]int64

// parseStatsTrack parses a stats or limits node's data as StatsTrack's
// constructor does. ok is false where that throws: a pair without a value
// ("abc", "count="), a value that is not a number, a leading separator.
func parseStatsTrack(b []byte) (st statsTrack, ok bool) {
	st = statsTrack{}
	s := string(b)
	if s == "" {
		return st, true
	}
	if s[0] == ',' || s[0] == ';' {
		return nil, false // Java's split keeps a leading empty piece
	}
	for _, pair := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' }) {
		// Java's split("=") drops trailing empty strings: "bytes=-1=" is
		// bytes -1 and "count=" has no value; an empty value in the
		// middle ("count==5") reads as -1.
		parts := strings.Split(pair, "=")
		for len(parts) > 0 && parts[len(parts)-1] == "" {
			parts = parts[:len(parts)-1]
		}
		if len(parts) < 2 {
			return nil, false
		}
		v := int64(-1)
		if parts[1] != "" {
			var err error
			if v, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
				return nil, false
			}
		}
		st[parts[0]] = v
	}
	return st, true
}

func (st statsTrack) get(key string) int64 {
	if v, ok := st[key]; ok {
		return v
	}
	return -1
}

// format writes st as StatsTrack.toString does: count and bytes first, then
// the other keys sorted, after an extra '=' that ZooKeeper 3.4's parser
// needs to ignore them.
func (st statsTrack) format() []byte {
	b := []byte("count=")
	b = strconv.AppendInt(b, st.get("count"), 10)
	b = append(b, ",bytes="...)
	b = strconv.AppendInt(b, st.get("bytes"), 10)
	var keys []string
	for k := range st { // order-independent: sorted below
		if k != "count" && k != "bytes" {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		slices.Sort(keys)
		b = append(b, '=')
		for _, k := range keys {
			b = append(b, ';')
			b = append(b, k...)
			b = append(b, '=')
			b = strconv.AppendInt(b, st[k], 10)
		}
	}
	return b
}

// quotaOwner is the quota path a change at path counts against: the
// deepest P with a quota that is path or above it ("" if none; the root
// never counts, as in ZooKeeper).
func (t *Tree) quotaOwner(path string) string {
	if len(t.quotas) == 0 {
		return ""
	}
	for p := path; len(p) > 1; {
		if _, ok := t.quotas[p]; ok {
			return p
		}
		i := strings.LastIndexByte(p, '/')
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return ""
}

// quotaPathOf returns the quota path a limits or stats node whose parent is
// parentPath speaks for: "" for /zookeeper/quota itself, ok false outside
// it. (ZooKeeper tests the parent with a bare string prefix, so
// /zookeeper/quotaX/zookeeper_limits puts /X under quota there; not here.)
func quotaPathOf(parentPath string) (p string, ok bool) {
	if parentPath != quotaDir && !strings.HasPrefix(parentPath, quotaDir+"/") {
		return "", false
	}
	return parentPath[len(quotaDir):], true
}

// quotaNodeCreated tracks the quota nodes themselves: a limits node puts
// its path under quota; a stats node is filled with a fresh count of the
// path's subtree (ZooKeeper's updateQuotaForPath).
func (t *Tree) quotaNodeCreated(parentPath, name string, n *znode, undo *[]func()) {
	p, ok := quotaPathOf(parentPath)
	if !ok {
		return
	}
	switch name {
	case quotaLimitNode:
		if p == "" {
			// A quota on the root: ZooKeeper 3.8's server dies on it
			// (PathTrie: "Invalid path"); here it means nothing.
			return
		}
		if t.quotas == nil {
			t.quotas = make(map[string]struct{})
		}
		if _, ok := t.quotas[p]; ok {
			return
		}
		t.quotas[p] = struct{}{}
		if undo != nil {
			*undo = append(*undo, func() { delete(t.quotas, p) })
		}
	case quotaStatNode:
		// For /zookeeper/quota/zookeeper_stats ZooKeeper counts the
		// whole tree.
		target := t.root
		if p != "" {
			target = t.lookup(p)
		}
		count, bytes := int64(0), int64(0)
		if target != nil {
			count, bytes = subtreeUsage(target)
		}
		// n was created by this very request: an undo unlinks it, data
		// and all, so it needs no undo of its own.
		t.setQuotaData(n, statsTrack{"count": count, "bytes": bytes}.format(), nil)
	}
}

// quotaNodeDeleted ends a quota when its limits node goes.
func (t *Tree) quotaNodeDeleted(parentPath, name string, undo *[]func()) {
	p, _ := quotaPathOf(parentPath)
	if p == "" || name != quotaLimitNode {
		return
	}
	if _, ok := t.quotas[p]; !ok {
		return
	}
	delete(t.quotas, p)
	if undo != nil {
		*undo = append(*undo, func() { t.quotas[p] = struct{}{} })
	}
}

// subtreeUsage counts n and everything below it, and their data bytes.
func subtreeUsage(n *znode) (count, bytes int64) {
	count, bytes = 1, int64(n.dataLen())
	if n.children == nil {
		return count, bytes
	}
	for _, c := range n.children.slots { // order-independent: summing
		if c != nil {
			cc, cb := subtreeUsage(c)
			count += cc
			bytes += cb
		}
	}
	return count, bytes
}

// quotaUsage adds to the stats of the quota path that owns path.
func (t *Tree) quotaUsage(path string, dCount, dBytes int64, undo *[]func()) {
	p := t.quotaOwner(path)
	if p == "" || (undo != nil && t.bugQuotaMulti) { // only a multi passes undo
		return
	}
	stats := t.lookup(quotaDir + p + "/" + quotaStatNode)
	if stats == nil {
		return // ZooKeeper logs "Missing count node for stat" and goes on
	}
	st, ok := parseStatsTrack(stats.data())
	if !ok {
		return
	}
	st["count"] = st.get("count") + dCount
	st["bytes"] = st.get("bytes") + dBytes
	t.setQuotaData(stats, st.format(), undo)
}

// setQuotaData replaces a quota node's data in place: no version, mzxid or
// watch event, as ZooKeeper's stats updates.
func (t *Tree) setQuotaData(n *znode, data []byte, undo *[]func()) {
	t.preserve(n)
	prevBuf, prevNull := n.buf, n.nullData
	t.bytes += len(data) - n.dataLen()
	n.setNameData(n.name(), data)
	if undo != nil {
		*undo = append(*undo, func() {
			t.bytes += len(prevBuf) - len(n.buf)
			n.buf, n.nullData = prevBuf, prevNull
		})
	}
}

// quotaCheck is ZooKeeperServer.checkQuota, made when enforceQuota is on:
// a change of dCount znodes and dBytes bytes at path must not take the
// owning quota path past a hard limit (countHardLimit, byteHardLimit):
// QuotaExceeded if it would. A soft limit (count, bytes) only counts where
// no hard limit of its kind is set, and then is never enforced (ZooKeeper
// logs it). Reaching a limit exactly is allowed. Limits or stats that do
// not parse fail the write with MarshallingError, as ZooKeeper's parser
// exception does; a missing limits or stats node lets it through.
func (t *Tree) quotaCheck(cfg *treeConfig, path string, dCount, dBytes int64) int32 {
	if !cfg.enforceQuota {
		return jute.ErrOK
	}
	p := t.quotaOwner(path)
	if p == "" {
		return jute.ErrOK
	}
	limits, found, ok := t.readQuotaNode(p, quotaLimitNode)
	switch {
	case !found:
		return jute.ErrOK
	case !ok:
		return jute.ErrMarshallingError
	}
	checkCount := dCount != 0 && (limits.get("count") > -1 || limits.get("countHardLimit") > -1)
	checkBytes := dBytes != 0 && (limits.get("bytes") > -1 || limits.get("byteHardLimit") > -1)
	if !checkCount && !checkBytes {
		return jute.ErrOK
	}
	stats, found, ok := t.readQuotaNode(p, quotaStatNode)
	switch {
	case !found:
		return jute.ErrOK
	case !ok:
		return jute.ErrMarshallingError
	}
	if checkCount && limits.get("countHardLimit") > -1 && stats.get("count")+dCount > limits.get("countHardLimit") {
		return jute.ErrQuotaExceeded
	}
	if checkBytes && limits.get("byteHardLimit") > -1 && stats.get("bytes")+dBytes > limits.get("byteHardLimit") {
		return jute.ErrQuotaExceeded
	}
	return jute.ErrOK
}

// readQuotaNode parses quota path p's limits or stats node (name); found is
// false if the node is missing, ok false if its text does not parse.
func (t *Tree) readQuotaNode(p, name string) (st statsTrack, found, ok bool) {
	n := t.lookup(quotaDir + p + "/" + name)
	if n == nil {
		return nil, false, false
	}
	st, ok = parseStatsTrack(n.data())
	return st, true, ok
}

// restoreQuotas rebuilds the set of quota paths from the limits nodes a
// restored tree holds.
func (t *Tree) restoreQuotas() {
	dir := t.lookup(quotaDir)
	if dir == nil {
		return
	}
	var walk func(n *znode, path string)
	walk = func(n *znode, path string) {
		if n.children == nil {
			return
		}
		for _, c := range n.children.slots { // order-independent: building a set
			if c == nil {
				continue
			}
			if c.name() == quotaLimitNode && path != quotaDir {
				if t.quotas == nil {
					t.quotas = make(map[string]struct{})
				}
				t.quotas[path[len(quotaDir):]] = struct{}{}
			}
			walk(c, path+"/"+c.name())
		}
	}
	walk(dir, quotaDir)
}

// QuotaStatsAgree checks the stats of a quota set up as zkCli sets one up
// (the limits node, then the stats node; no quota nested in it; the stats
// node written by no client) against a fresh count of the subtree. It is
// nil if path is not under quota.
func (t *Tree) QuotaStatsAgree(path string) error {
	if _, ok := t.quotas[path]; !ok {
		return nil
	}
	stats := t.lookup(quotaDir + path + "/" + quotaStatNode)
	if stats == nil {
		return nil
	}
	want := statsTrack{"count": 0, "bytes": 0}
	if n := t.lookup(path); n != nil {
		want["count"], want["bytes"] = subtreeUsage(n)
	}
	if got := stats.data(); string(got) != string(want.format()) {
		return fmt.Errorf("quota stats of %s say %q, its subtree holds %q", path, got, want.format())
	}
	return nil
}
