#!/usr/bin/python3
"""kazoo transactions (multi): results of a successful commit, all ops in
one zxid, failures giving RolledBackError + the real error (+
RuntimeInconsistency for later ops) with nothing applied, and a failed
multi consuming exactly one zxid."""
from kazoo.exceptions import (BadVersionError, NoNodeError, NodeExistsError, NotEmptyError,
                              RolledBackError, RuntimeInconsistency)
from kazoo.protocol.states import ZnodeStat

from kzcompat import check, check_stat, client, eq, fail, root, run


def expect_errors(results, want, what):
    got = [type(r) for r in results]
    if got != want:
        fail("%s: results %r, want types %r" % (what, results, [w.__name__ for w in want]))


def main():
    c = client()
    base = root("txn")
    c.create(base)
    c.create(base + "/b", b"b0")
    c.create(base + "/d")
    c.create(base + "/keep", b"k")

    # success
    t = c.transaction()
    t.create(base + "/a", b"A")
    t.create(base + "/a/x", b"X")
    t.set_data(base + "/b", b"b1")
    t.check(base + "/b", 1)  # sees the set above
    t.delete(base + "/d")
    t.create(base + "/s-", b"S", sequence=True)
    t.create(base + "/e", b"E", ephemeral=True)
    res = t.commit()
    eq(len(res), 7, "number of results")
    eq(res[0], base + "/a", "result of create")
    eq(res[1], base + "/a/x", "result of nested create")
    check(isinstance(res[2], ZnodeStat), "result of set_data is a Stat: %r" % (res[2],))
    eq(res[3], True, "result of check")
    eq(res[4], True, "result of delete")
    eq(res[5], base + "/s-0000000004", "result of sequential create (parent had 4 child creates: b d keep a)")
    eq(res[6], base + "/e", "result of ephemeral create")
    a = c.exists(base + "/a")
    zx = a.czxid
    check_stat(c.exists(base + "/a/x"), "a/x", czxid=zx)
    check_stat(a, "a", numChildren=1, pzxid=zx, cversion=1)
    bd, bst = c.get(base + "/b")
    eq(bd, b"b1", "data set in the transaction")
    eq(bst, res[2], "set_data result == exists stat")
    check_stat(bst, "b", version=1, mzxid=zx)
    eq(c.exists(base + "/d"), None, "deleted in the transaction")
    check_stat(c.exists(base), "base", pzxid=zx, numChildren=5, cversion=7)
    eq(c.exists(base + "/e").ephemeralOwner, c.client_id[0], "ephemeral created in a transaction")
    eq(c.transaction().commit(), [], "empty transaction")

    # failure: create ok, delete of a missing node fails, set afterwards
    before = c.exists(base)
    t = c.transaction()
    t.create(base + "/never", b"")
    t.delete(base + "/missing")
    t.set_data(base + "/b", b"nope")
    res = t.commit()
    expect_errors(res, [RolledBackError, NoNodeError, RuntimeInconsistency], "failed transaction")
    eq(c.exists(base + "/never"), None, "create of a failed transaction was applied")
    eq(c.get(base + "/b"), (b"b1", bst), "set of a failed transaction was applied")
    after = c.exists(base)
    eq(after, before, "parent stat after a failed transaction")

    # failure at the first op
    res = c.transaction()
    res.check(base + "/b", 0)
    res.create(base + "/never")
    res = res.commit()
    expect_errors(res, [BadVersionError, RuntimeInconsistency], "check failure")

    # failure at the last op, earlier ops roll back
    t = c.transaction()
    t.set_data(base + "/b", b"b2")
    t.delete(base + "/keep")
    t.create(base + "/b")
    res = t.commit()
    expect_errors(res, [RolledBackError, RolledBackError, NodeExistsError], "create-exists failure")
    eq(c.get(base + "/b")[0], b"b1", "rolled back set")
    check(c.exists(base + "/keep") is not None, "rolled back delete")

    # NotEmpty inside a transaction
    t = c.transaction()
    t.delete(base + "/a")
    res = t.commit()
    expect_errors(res, [NotEmptyError], "delete of a non-empty node")

    # a failed transaction consumes exactly one zxid, a failed create one
    z1 = c.create(base + "/z1", include_data=True)[1].czxid
    t = c.transaction()
    t.create(base + "/z-never")
    t.create(base + "/z-never")
    res = t.commit()
    expect_errors(res, [RolledBackError, NodeExistsError], "duplicate create in one transaction")
    z2 = c.create(base + "/z2", include_data=True)[1].czxid
    eq(z2 - z1, 2, "zxids consumed by a failed transaction (create z1, failed multi, create z2)")
    try:
        c.create(base + "/z1")
        fail("create of an existing node succeeded")
    except NodeExistsError:
        pass
    z3 = c.create(base + "/z3", include_data=True)[1].czxid
    eq(z3 - z2, 2, "zxids consumed by a failed create")

    c.delete(base, recursive=True)


run(main)
