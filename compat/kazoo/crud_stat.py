#!/usr/bin/python3
"""CRUD with full Stat checks, ensure_path, root and /zookeeper, errors,
create2 (include_data), sync, pipelined async requests (reply order)."""
import time

from kazoo.exceptions import (BadArgumentsError, BadVersionError, NoNodeError, NodeExistsError,
                              NotEmptyError)
from kazoo.security import OPEN_ACL_UNSAFE

from kzcompat import check, check_stat, client, eq, fail, raises, root, run, stat_fields


def main():
    c = client()
    now_ms = int(time.time() * 1000)

    # The root and the /zookeeper subtree of a fresh ZooKeeper.
    kids = c.get_children("/")
    check("zookeeper" in kids, "get_children('/') = %r, want it to contain 'zookeeper'" % kids)
    check("" not in kids, "get_children('/') contains an empty name: %r" % kids)
    zk_kids = sorted(c.get_children("/zookeeper"))
    for k in ("config", "quota"):
        check(k in zk_kids, "get_children('/zookeeper') = %r, want it to contain %r" % (zk_kids, k))
    rst = c.exists("/")
    check(rst is not None, "exists('/') = None")
    check_stat(rst, "stat of /", czxid=0, ctime=0, version=0, aversion=0, ephemeralOwner=0, dataLength=0)
    eq(rst.numChildren, len(kids), "numChildren of / vs len(get_children('/'))")
    raises(BadArgumentsError, c.delete, "/zookeeper")

    base = root("crud")
    eq(c.create(base), base, "create returns the path")
    bst = c.exists(base)
    check_stat(bst, base, version=0, cversion=0, aversion=0, numChildren=0, dataLength=0, ephemeralOwner=0,
               mzxid=bst.czxid, pzxid=bst.czxid, mtime=bst.ctime)
    check(abs(bst.ctime - now_ms) < 120000, "ctime %d is not close to the client clock %d" % (bst.ctime, now_ms))

    # create / get
    p = base + "/node"
    eq(c.create(p, b"hello"), p, "create returns the path")
    data, st = c.get(p)
    eq(data, b"hello", "get data")
    check_stat(st, p, version=0, cversion=0, aversion=0, numChildren=0, dataLength=5, ephemeralOwner=0,
               mzxid=st.czxid, pzxid=st.czxid, mtime=st.ctime)
    check(st.czxid > bst.czxid, "czxid of a later create (%d) must exceed the earlier one (%d)" % (st.czxid, bst.czxid))
    check(st.ctime >= bst.ctime, "ctime went backwards")
    # the parent
    pst = c.exists(base)
    check_stat(pst, base + " after one child create", numChildren=1, cversion=1, pzxid=st.czxid, version=0,
               mzxid=bst.mzxid, czxid=bst.czxid, mtime=bst.mtime, dataLength=0)
    eq(c.exists(p), st, "exists stat == get stat")

    # set
    time.sleep(0.01)
    st2 = c.set(p, b"world!!")
    check_stat(st2, p + " after set", version=1, czxid=st.czxid, ctime=st.ctime, pzxid=st.pzxid, dataLength=7,
               cversion=0, aversion=0, numChildren=0)
    check(st2.mzxid > st.mzxid, "set must advance mzxid (%d -> %d)" % (st.mzxid, st2.mzxid))
    check(st2.mtime >= st2.ctime, "mtime < ctime after set")
    data, st3 = c.get(p)
    eq(data, b"world!!", "data after set")
    eq(st3, st2, "get stat == stat returned by set")
    raises(BadVersionError, c.set, p, b"x", version=0)
    eq(c.get(p)[1].version, 1, "version after a failed conditional set")
    st4 = c.set(p, b"", version=1)
    check_stat(st4, p + " after set to empty", version=2, dataLength=0)
    eq(c.get(p)[0], b"", "empty data")

    # setACL bumps aversion only
    st5 = c.set_acls(p, OPEN_ACL_UNSAFE)
    check_stat(st5, p + " after set_acls", aversion=1, version=2, mzxid=st4.mzxid, cversion=0, czxid=st.czxid)
    raises(BadVersionError, c.set_acls, p, OPEN_ACL_UNSAFE, version=0)
    acls, ast = c.get_acls(p)
    eq([(a.perms, a.id.scheme, a.id.id) for a in acls], [(31, "world", "anyone")], "get_acls")
    eq(ast, c.exists(p), "get_acls stat")

    # big data round trip
    big = bytes(range(256)) * 400  # 102400 bytes
    c.set(p, big)
    data, st = c.get(p)
    eq(data, big, "100 KiB data round trip")
    eq(st.dataLength, len(big), "dataLength of 100 KiB data")

    # unicode path and data
    up = base + "/\u00e9t\u00e9-\u4e2d"
    eq(c.create(up, "\u00e9".encode("utf-8")), up, "unicode path create")
    check("\u00e9t\u00e9-\u4e2d" in c.get_children(base), "unicode child name in get_children")
    eq(c.get(up)[0], b"\xc3\xa9", "unicode data")
    c.delete(up)

    # errors
    eq(c.exists(base + "/missing"), None, "exists on a missing node")
    raises(NoNodeError, c.get, base + "/missing")
    raises(NoNodeError, c.set, base + "/missing", b"x")
    raises(NoNodeError, c.delete, base + "/missing")
    raises(NoNodeError, c.get_children, base + "/missing")
    raises(NoNodeError, c.create, base + "/missing/child")
    raises(NodeExistsError, c.create, p)
    # (kazoo itself normalises "//", "..", and trailing slashes; control
    # characters reach the server, which must reject them.)
    raises(BadArgumentsError, c.create, base + "/ctl\u0001char")

    # children: cversion counts creates and deletes, pzxid is the last child change
    kids = [c.create(p + "/c%d" % i, b"") for i in range(3)]
    last = c.exists(kids[-1])
    pst = c.exists(p)
    check_stat(pst, p + " with 3 children", numChildren=3, cversion=3, pzxid=last.czxid)
    eq(sorted(c.get_children(p)), ["c0", "c1", "c2"], "get_children")
    names, cst = c.get_children(p, include_data=True)
    eq(sorted(names), ["c0", "c1", "c2"], "get_children(include_data) names")
    eq(cst, pst, "get_children(include_data) stat")
    raises(NotEmptyError, c.delete, p)
    raises(BadVersionError, c.delete, kids[1], version=7)
    c.delete(kids[1], version=0)
    marker = c.create(base + "/marker")
    mst = c.exists(marker)
    pst2 = c.exists(p)
    check_stat(pst2, p + " after deleting a child", numChildren=2, cversion=4, mzxid=pst.mzxid, version=pst.version)
    check(last.czxid < pst2.pzxid < mst.czxid,
          "pzxid after a child delete must be that delete's zxid: want %d < %d < %d" % (last.czxid, pst2.pzxid, mst.czxid))
    eq(sorted(c.get_children(p)), ["c0", "c2"], "children after delete")
    # re-created node starts from version 0
    c.create(kids[1], b"again")
    check_stat(c.exists(kids[1]), kids[1] + " re-created", version=0, cversion=0, aversion=0)
    check_stat(c.exists(p), p + " after re-create", numChildren=3, cversion=5)
    c.delete(marker)

    # create2: include_data=True returns the Stat of the new node
    path, st = c.create(base + "/c2", b"abc", include_data=True)
    eq(path, base + "/c2", "create(include_data) path")
    check_stat(st, path + " from create2", version=0, dataLength=3, numChildren=0, mzxid=st.czxid, pzxid=st.czxid)
    eq(st, c.exists(path), "create2 stat == exists stat")

    # ensure_path and makepath
    deep = base + "/e1/e2/e3"
    c.ensure_path(deep)
    for q in (base + "/e1", base + "/e1/e2", deep):
        d, s = c.get(q)
        eq(d, b"", "data of ensure_path node " + q)
    eq(c.exists(base + "/e1").numChildren, 1, "numChildren of an ensure_path parent")
    c.ensure_path(deep)  # idempotent
    mp = base + "/m1/m2/m3"
    eq(c.create(mp, b"v", makepath=True), mp, "create(makepath=True)")
    eq(c.get(mp)[0], b"v", "data after makepath")

    # sync returns the path
    eq(c.sync(p), p, "sync")

    # delete everything, then the parent's stat
    c.delete(base, recursive=True)
    eq(c.exists(base), None, "exists after recursive delete")

    # Pipelined async requests: the server must answer in request order
    # (kazoo drops the connection on 'xids do not match').
    pipe = root("pipe")
    c.create(pipe)
    states = []
    c.add_listener(lambda s: states.append(s))
    asyncs = []
    for i in range(100):
        asyncs.append(("create", i, c.create_async("%s/n%03d" % (pipe, i), b"%d" % i)))
        asyncs.append(("get", i, c.get_async("%s/n%03d" % (pipe, i))))
        asyncs.append(("exists", i, c.exists_async("%s/none%03d" % (pipe, i))))
        if i % 10 == 9:
            asyncs.append(("children", i, c.get_children_async(pipe)))
    for kind, i, a in asyncs:
        r = a.get(timeout=30)
        if kind == "create":
            eq(r, "%s/n%03d" % (pipe, i), "pipelined create %d" % i)
        elif kind == "get":
            eq(r[0], b"%d" % i, "pipelined get %d" % i)
        elif kind == "exists":
            eq(r, None, "pipelined exists %d" % i)
        else:
            eq(len(r), i + 1, "pipelined get_children after %d creates" % (i + 1))
    eq(states, [], "connection state changes during pipelined requests")
    czx = [c.exists("%s/n%03d" % (pipe, i)).czxid for i in range(100)]
    eq(czx, sorted(czx), "czxids of pipelined creates follow the send order")
    check(len(set(czx)) == 100, "pipelined creates share a zxid")
    c.delete(pipe, recursive=True)


run(main)
