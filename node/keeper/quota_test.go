package keeper

import (
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"herd/node/jute"
)

func TestStatsTrackParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		ok      bool
	}{
		// What zkCli 3.8 writes for `setquota -n 3`, and reads back.
		{"count=3,bytes=-1=;byteHardLimit=-1;countHardLimit=-1", "count=3,bytes=-1=;byteHardLimit=-1;countHardLimit=-1", true},
		{"count=0,bytes=0", "count=0,bytes=0", true},
		{"", "count=-1,bytes=-1", true},
		{"bytes=7;count=2", "count=2,bytes=7", true},
		{"count==5,bytes=4", "count=-1,bytes=4", true},
		{"count=1,,;bytes=2;", "count=1,bytes=2", true},
		{"count=100,bytes=5=;zzz=1", "count=100,bytes=5=;zzz=1", true},
		// What ZooKeeper 3.8's StatsTrack throws on.
		{"count=,bytes=4", "", false},
		{",count=1", "", false},
		{"count", "", false},
		{"countHardLimit=5", "count=-1,bytes=-1=;countHardLimit=5", true},
		{"count=1,count=2", "count=2,bytes=-1", true},
		{"abc", "", false},
		{"count=x,bytes=1", "", false},
		{"=", "", false},
	} {
		st, ok := parseStatsTrack([]byte(tc.in))
		if ok != tc.ok {
			t.Errorf("parse %q: ok %v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if ok && string(st.format()) != tc.out {
			t.Errorf("parse %q, format: %q, want %q", tc.in, st.format(), tc.out)
		}
	}
}

// quotaTree is a tree driven the way zkCli and a client would drive it.
type quotaTree struct {
	t   *testing.T
	tr  *Tree
	c   *caller
	cfg *treeConfig
}

func newQuotaTree(t *testing.T, enforce bool) *quotaTree {
	q := &quotaTree{t: t, tr: NewTree(1), c: &caller{time: 1, session: 7}, cfg: &treeConfig{enforceQuota: enforce}}
	q.tr.createSession(7, 10000, [16]byte{})
	return q
}

var openACLs = []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}

func (q *quotaTree) create(path, data string, flags int32) int32 {
	q.c.zxid++
	var ev []event
	var d []byte
	if data != "\x00null" {
		d = []byte(data)
	}
	_, _, code := q.tr.create(q.c, q.cfg, &createOp{path: path, data: d, acl: openACLs, flags: flags, ttl: -1}, &ev, nil)
	return code
}

func (q *quotaTree) set(path, data string) int32 {
	q.c.zxid++
	var ev []event
	_, code := q.tr.setData(q.c, q.cfg, path, []byte(data), -1, &ev, nil)
	return code
}

func (q *quotaTree) del(path string) int32 {
	q.c.zxid++
	var ev []event
	return q.tr.delete(q.c, path, -1, &ev, nil)
}

func (q *quotaTree) must(code int32, what string) {
	q.t.Helper()
	if code != jute.ErrOK {
		q.t.Fatalf("%s: error %d", what, code)
	}
}

// setquota does what zkCli's setquota does for a new quota: the path's
// directory under /zookeeper/quota, the limits node, then the stats node.
func (q *quotaTree) setquota(path, limits string) {
	q.t.Helper()
	dir := quotaDir
	for _, part := range strings.Split(path[1:], "/") {
		dir += "/" + part
		if q.tr.lookup(dir) == nil {
			q.must(q.create(dir, "\x00null", 0), "create "+dir)
		}
	}
	q.must(q.create(dir+"/"+quotaLimitNode, limits, 0), "create limits")
	q.must(q.create(dir+"/"+quotaStatNode, "count=0,bytes=0", 0), "create stats")
}

func (q *quotaTree) stats(path string) string {
	q.t.Helper()
	n := q.tr.lookup(quotaDir + path + "/" + quotaStatNode)
	if n == nil {
		q.t.Fatalf("no stats node for %s", path)
	}
	return string(n.data())
}

func (q *quotaTree) wantStats(path, want string) {
	q.t.Helper()
	if got := q.stats(path); got != want {
		q.t.Fatalf("stats of %s: %q, want %q", path, got, want)
	}
	if err := q.tr.CheckInvariants(); err != nil {
		q.t.Fatal(err)
	}
}

// TestQuotaStats follows what ZooKeeper 3.8 reports through zkCli's
// listquota for the same sequence (compat/zkcli_test.go runs the same
// against both).
func TestQuotaStats(t *testing.T) {
	q := newQuotaTree(t, false)
	q.must(q.create("/q1", "", 0), "create /q1")
	q.must(q.create("/q1/a", "hello", 0), "create /q1/a")
	q.setquota("/q1", "count=3,bytes=-1=;byteHardLimit=-1;countHardLimit=-1")
	q.wantStats("/q1", "count=2,bytes=5")
	q.must(q.create("/q1/b", "x", 0), "create /q1/b")
	q.must(q.create("/q1/c", "y", 0), "create /q1/c")
	q.wantStats("/q1", "count=4,bytes=7") // soft limit 3 passed: only reported
	q.must(q.set("/q1/a", "hi"), "set /q1/a")
	q.wantStats("/q1", "count=4,bytes=4")
	q.must(q.create("/q1/a/deep", "12345678", jute.ModeEphemeral), "create ephemeral")
	q.wantStats("/q1", "count=5,bytes=12")
	q.c.zxid++
	var ev []event
	q.tr.closeSession(7, q.c.zxid, &ev, false)
	q.wantStats("/q1", "count=4,bytes=4")
	q.must(q.del("/q1/c"), "delete /q1/c")
	q.wantStats("/q1", "count=3,bytes=3")
	// A stats update changes data only: no version, mzxid or event.
	st := q.tr.lookup(quotaDir + "/q1/" + quotaStatNode).stat()
	if st.Version != 0 || st.Mzxid != st.Czxid || st.DataLength != int32(len("count=3,bytes=3")) {
		t.Fatalf("stats node stat %+v", st)
	}
	// Outside the quota nothing is counted.
	q.must(q.create("/q10", "zzz", 0), "create /q10")
	q.wantStats("/q1", "count=3,bytes=3")

	// The images carry the stats, and the restored tree keeps counting.
	back, err := RestoreTree(q.tr.Snapshot(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if Canonical(back) != Canonical(q.tr) {
		t.Fatal("restored tree differs")
	}
	q.tr = back
	q.tr.createSession(7, 10000, [16]byte{})
	q.must(q.create("/q1/d", "four", 0), "create /q1/d after restore")
	q.wantStats("/q1", "count=4,bytes=7")

	// Deleting the limits node ends the quota; the stats node stays as it
	// was.
	q.must(q.del(quotaDir+"/q1/"+quotaLimitNode), "delete limits")
	q.must(q.create("/q1/e", "five5", 0), "create /q1/e")
	q.wantStats("/q1", "count=4,bytes=7")
}

// TestQuotaDeepestPath: a change counts against the deepest quota above it
// only; a stats node counts its whole subtree when created.
func TestQuotaDeepestPath(t *testing.T) {
	q := newQuotaTree(t, false)
	q.must(q.create("/a", "1", 0), "")
	q.must(q.create("/a/b", "22", 0), "")
	q.must(q.create("/a/b/c", "333", 0), "")
	q.setquota("/a", "count=100,bytes=-1")
	q.setquota("/a/b", "count=100,bytes=-1")
	q.wantStats("/a", "count=3,bytes=6")
	q.wantStats("/a/b", "count=2,bytes=5")
	q.must(q.create("/a/b/c/d", "4444", 0), "")
	q.must(q.create("/a/x", "55555", 0), "")
	q.wantStats("/a", "count=4,bytes=11")
	q.wantStats("/a/b", "count=3,bytes=9")
	// A quota on a path that does not exist yet counts from nothing.
	q.setquota("/later", "count=5,bytes=-1")
	q.wantStats("/later", "count=0,bytes=0")
	q.must(q.create("/later", "", 0), "")
	q.wantStats("/later", "count=1,bytes=0")
	// A stats node right under /zookeeper/quota counts the whole tree (as
	// ZooKeeper's does); a limits node there puts nothing under quota
	// (ZooKeeper's server dies on it).
	q.must(q.create(quotaDir+"/"+quotaStatNode, "", 0), "")
	c, b := subtreeUsage(q.tr.root)
	got := string(q.tr.lookup(quotaDir + "/" + quotaStatNode).data())
	// counted while the new stats node held the client's empty data
	if want := fmt.Sprintf("count=%d,bytes=%d", c, b-int64(len(got))); got != want {
		t.Fatalf("root stats %q, want %q", got, want)
	}
	q.must(q.create(quotaDir+"/"+quotaLimitNode, "count=1,bytes=1", 0), "")
	if len(q.tr.quotas) != 3 {
		t.Fatalf("quota paths %v", q.tr.quotas)
	}
}

// TestQuotaEnforced: with enforceQuota, hard limits fail creates and
// setData with QuotaExceeded, after every other check; a multi that fails
// leaves the stats as they were.
func TestQuotaEnforced(t *testing.T) {
	for _, enforce := range []bool{false, true} {
		t.Run(fmt.Sprint("enforce=", enforce), func(t *testing.T) {
			q := newQuotaTree(t, enforce)
			q.must(q.create("/h", "", 0), "")
			q.setquota("/h", "count=-1,bytes=-1=;byteHardLimit=10;countHardLimit=3")
			q.must(q.create("/h/a", "12345", 0), "")
			q.must(q.create("/h/b", "", 0), "")
			q.wantStats("/h", "count=3,bytes=5")
			wantQuota := int32(jute.ErrOK)
			if enforce {
				wantQuota = jute.ErrQuotaExceeded
			}
			if code := q.create("/h/c", "", 0); code != wantQuota {
				t.Fatalf("create past the count limit: %d, want %d", code, wantQuota)
			}
			if code := q.create("/h/a", "", 0); code != jute.ErrNodeExists {
				t.Fatalf("create of an existing node: %d, want NodeExists first", code)
			}
			q.c.zxid++
			var ev0 []event
			if _, code := q.tr.setData(q.c, q.cfg, "/h/a", []byte("123456789012"), 99, &ev0, nil); code != wantQuota && !(code == jute.ErrBadVersion && !enforce) {
				t.Fatalf("setData past the byte limit with a bad version: %d, want the quota checked first", code)
			}
			if !enforce {
				return
			}
			if code := q.set("/h/a", "12345678901"); code != jute.ErrQuotaExceeded {
				t.Fatalf("setData past the byte limit: %d", code)
			}
			q.must(q.set("/h/a", "1234567890"), "setData to the byte limit")
			q.must(q.set("/h/b", ""), "setData that adds nothing")
			q.wantStats("/h", "count=3,bytes=10")
			// A failing multi undoes its stats updates.
			q.c.zxid++
			var ev []event
			res := q.tr.multi(q.c, q.cfg, []jute.MultiOp{
				{Type: jute.OpDelete, Delete: &jute.DeleteRequest{Path: "/h/b", Version: -1}},
				{Type: jute.OpSetData, SetData: &jute.SetDataRequest{Path: "/h/a", Data: []byte("1"), Version: -1}},
				{Type: jute.OpCreate, Create: &jute.CreateTTLRequest{Path: "/h/new", Data: []byte("x"), ACL: openACLs, TTL: -1}},
				{Type: jute.OpCreate, Create: &jute.CreateTTLRequest{Path: "/h/new2", Data: []byte("x"), ACL: openACLs, TTL: -1}},
			}, &ev)
			if res[3].Err != jute.ErrQuotaExceeded || res[0].Err != jute.ErrOK {
				t.Fatalf("multi results %+v", res)
			}
			q.wantStats("/h", "count=3,bytes=10")

			// Soft limits are never enforced; limits that do not parse
			// fail writes under them with MarshallingError.
			q.must(q.create("/s", "", 0), "")
			q.setquota("/s", "count=1,bytes=1")
			q.must(q.create("/s/a", "12345", 0), "create past soft limits")
			q.must(q.set(quotaDir+"/s/"+quotaLimitNode, "count=abc"), "")
			if code := q.create("/s/b", "", 0); code != jute.ErrMarshallingError {
				t.Fatalf("create under unreadable limits: %d", code)
			}
			if code := q.del("/s/a"); code != jute.ErrOK {
				t.Fatalf("delete under unreadable limits: %d (deletes are never checked)", code)
			}
		})
	}
}

// TestQuotaStatsTrackChanges: a property test. Under a quota set up as
// zkCli does (no nested quotas, the stats node written by no client), the
// stats always equal a fresh count of the subtree, whatever mix of creates,
// deletes, setData, multis (some failing), session closes and snapshot
// round trips made it.
func TestQuotaStatsTrackChanges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		q := newQuotaTree(t, rapid.Bool().Draw(rt, "enforce"))
		q.tr.createSession(8, 10000, [16]byte{})
		q.must(q.create("/q", "", 0), "")
		q.setquota("/q", "count=-1,bytes=-1=;byteHardLimit=60;countHardLimit=9")
		names := []string{"/q", "/q/a", "/q/b", "/q/a/x", "/q/a/y", "/q/b/z", "/p", "/p/a"}
		pathGen := rapid.SampledFrom(names)
		data := rapid.SampledFrom([]string{"", "\x00null", "1", "22", "4444", "88888888"})
		for i := range rapid.IntRange(1, 60).Draw(rt, "steps") {
			q.c.session = int64(rapid.IntRange(7, 8).Draw(rt, "session"))
			switch rapid.IntRange(0, 6).Draw(rt, fmt.Sprint("op", i)) {
			case 0, 1:
				flags := rapid.SampledFrom([]int32{0, jute.ModeEphemeral}).Draw(rt, "flags")
				if q.tr.sessions[q.c.session] == nil {
					flags = 0
				}
				q.create(pathGen.Draw(rt, "path"), data.Draw(rt, "data"), flags)
			case 2:
				q.set(pathGen.Draw(rt, "path"), data.Draw(rt, "data"))
			case 3:
				q.del(pathGen.Draw(rt, "path"))
			case 4:
				q.c.zxid++
				var ev []event
				var ops []jute.MultiOp
				for range rapid.IntRange(1, 4).Draw(rt, "multi ops") {
					p := pathGen.Draw(rt, "path")
					switch rapid.IntRange(0, 2).Draw(rt, "multi op") {
					case 0:
						ops = append(ops, jute.MultiOp{Type: jute.OpCreate, Create: &jute.CreateTTLRequest{Path: p, Data: []byte(data.Draw(rt, "data")), ACL: openACLs, TTL: -1}})
					case 1:
						ops = append(ops, jute.MultiOp{Type: jute.OpDelete, Delete: &jute.DeleteRequest{Path: p, Version: -1}})
					case 2:
						ops = append(ops, jute.MultiOp{Type: jute.OpSetData, SetData: &jute.SetDataRequest{Path: p, Data: []byte(data.Draw(rt, "data")), Version: -1}})
					}
				}
				q.tr.multi(q.c, q.cfg, ops, &ev)
			case 5:
				q.c.zxid++
				var ev []event
				q.tr.closeSession(q.c.session, q.c.zxid, &ev, false)
			case 6:
				back, err := RestoreTree(q.tr.Snapshot(), uint64(i))
				if err != nil {
					rt.Fatal(err)
				}
				q.tr = back
			}
			if err := q.tr.CheckInvariants(); err != nil {
				rt.Fatal(err)
			}
			want := "count=0,bytes=0"
			if n := q.tr.lookup("/q"); n != nil {
				c, b := subtreeUsage(n)
				want = fmt.Sprintf("count=%d,bytes=%d", c, b)
				if q.cfg.enforceQuota && (c > 9 || b > 60) {
					rt.Fatalf("enforced quota passed: %s", want)
				}
			}
			if got := q.stats("/q"); got != want {
				rt.Fatalf("stats %q, subtree holds %q", got, want)
			}
		}
	})
}
