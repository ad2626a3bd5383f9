#!/usr/bin/python3
"""One-shot watches: exists/get/get_children watches fire exactly once with
the right event type and path; exists on a missing node leaves a watch, get
on a missing node does not; a session close is seen by another session's
watches as NodeDeleted + NodeChildrenChanged."""
from kazoo.exceptions import NoNodeError

from kzcompat import Recorder, client, eq, raises, root, run, stop


def main():
    c1 = client()  # watcher
    c2 = client()  # writer
    base = root("watches")
    c1.create(base)
    c2.sync(base)

    # exists watch on a missing node -> NodeCreated, once
    p = base + "/a"
    w = Recorder("exists(missing)")
    eq(c1.exists(p, watch=w), None, "exists on missing node")
    c2.create(p, b"1")
    w.expect([("CREATED", p)])
    c2.set(p, b"2")  # watch was one-shot
    c2.delete(p)
    w.expect([("CREATED", p)])

    # get on a missing node sets no watch
    # (c1 syncs before reading what c2 wrote: ZooKeeper followers may lag)
    c1.sync(p)
    w = Recorder("get(missing)")
    raises(NoNodeError, c1.get, p, watch=w)
    c2.create(p, b"1")
    w.expect_none()

    # exists watch on an existing node -> NodeDataChanged on set
    w = Recorder("exists(existing)")
    c1.sync(p)
    check_exists = c1.exists(p, watch=w)
    eq(check_exists is not None, True, "exists on an existing node")
    c2.set(p, b"2")
    w.expect([("CHANGED", p)])

    # get watch -> NodeDataChanged once, even for two sets
    w = Recorder("get/set")
    c1.sync(p)
    eq(c1.get(p, watch=w)[0], b"2", "get data")
    c2.set(p, b"3")
    c2.set(p, b"4")
    w.expect([("CHANGED", p)])

    # get watch -> NodeDeleted on delete
    w = Recorder("get/delete")
    c1.sync(p)
    c1.get(p, watch=w)
    c2.delete(p)
    w.expect([("DELETED", p)])

    # exists watch -> NodeDeleted on delete
    c2.create(p)
    c1.sync(p)
    w = Recorder("exists/delete")
    c1.exists(p, watch=w)
    c2.delete(p)
    w.expect([("DELETED", p)])

    # child watch: NodeChildrenChanged on the parent for a child create, once
    par = base + "/par"
    c2.create(par)
    c1.sync(par)
    wc = Recorder("children")
    wd = Recorder("data of parent")
    eq(c1.get_children(par, watch=wc), [], "children of new parent")
    c1.get(par, watch=wd)
    c2.create(par + "/k1")
    c2.create(par + "/k2")
    wc.expect([("CHILD", par)])
    wd.expect_none(settle=0)  # a child create is no data change of the parent

    # child watch: NodeChildrenChanged for a child delete
    wc = Recorder("children/delete-child")
    c1.sync(par)
    c1.get_children(par, watch=wc)
    c2.delete(par + "/k1")
    wc.expect([("CHILD", par)])
    wd.expect_none(settle=0)

    # a data change of the parent fires the data watch, not the child watch
    wc = Recorder("children/set-parent")
    c1.sync(par)
    c1.get_children(par, watch=wc)
    c2.set(par, b"x")
    wd.expect([("CHANGED", par)])
    wc.expect_none(settle=0.3)
    # ... which is still armed: a child delete fires it
    c2.delete(par + "/k2")
    wc.expect([("CHILD", par)])

    # data + child watch on the same node, node deleted: each fires once
    # with NodeDeleted (kazoo routes the one server event to both)
    wc = Recorder("children/delete-node")
    wd = Recorder("data/delete-node")
    c1.sync(par)
    c1.get_children(par, watch=wc)
    c1.get(par, watch=wd)
    c2.delete(par)
    wc.expect([("DELETED", par)])
    wd.expect([("DELETED", par)])

    # a watch on an unrelated path does not fire
    other = base + "/other"
    c2.create(other)
    c1.sync(other)
    wo = Recorder("unrelated")
    c1.get(other, watch=wo)
    c1.get_children(other, watch=wo)
    c2.create(base + "/b")
    c2.set(base, b"base")
    wo.expect_none()

    # the writer's own watch fires too
    w = Recorder("own write")
    c1.get(other, watch=w)
    c1.set(other, b"self")
    w.expect([("CHANGED", other)])

    # another session closing: its ephemeral vanishes with NodeDeleted,
    # the parent's child watch gets NodeChildrenChanged
    c3 = client()
    eph = c3.create(base + "/eph", b"e", ephemeral=True)
    c1.sync(base)
    we = Recorder("ephemeral exists")
    wp = Recorder("ephemeral parent children")
    wg = Recorder("ephemeral get")
    check_st = c1.exists(eph, watch=we)
    eq(check_st.ephemeralOwner, c3.client_id[0], "ephemeralOwner")
    c1.get(eph, watch=wg)
    c1.get_children(base, watch=wp)
    stop(c3)
    we.expect([("DELETED", eph)])
    wg.expect([("DELETED", eph)])
    wp.expect([("CHILD", base)])
    eq(c1.exists(eph), None, "ephemeral after its session closed")

    # watches survive nothing: after being fired they are gone, and new
    # ones can be set on the same path
    w = Recorder("re-armed")
    eq(c1.exists(eph, watch=w), None, "exists after vanish")
    c2.create(eph)
    w.expect([("CREATED", eph)])

    c1.delete(base, recursive=True)


run(main)
