#!/usr/bin/python3
"""Ephemeral and sequential nodes: ephemeralOwner, NoChildrenForEphemerals,
the %010d suffix from the parent's child-create counter (never reused,
bumped by non-sequential creates too), trailing-slash sequential creates,
and ephemerals vanishing (with parent Stat updates) when the session
closes."""
import re

from kazoo.exceptions import NoChildrenForEphemeralsError, NodeExistsError

from kzcompat import check, check_stat, client, eq, raises, root, run, stop


def main():
    c1 = client()
    c2 = client()
    sid1 = c1.client_id[0]
    sid2 = c2.client_id[0]
    check(sid1 != sid2, "two clients got the same session id %#x" % sid1)

    base = root("ephseq")
    c1.create(base)

    # ephemeral nodes
    e = c1.create(base + "/eph", b"e", ephemeral=True)
    eq(e, base + "/eph", "ephemeral create path")
    st = c1.exists(e)
    check_stat(st, e, ephemeralOwner=sid1, version=0, numChildren=0, dataLength=1)
    # Reads of another session's writes need a sync first (ZooKeeper
    # followers may lag; only sequential consistency per client).
    c2.sync(base)
    eq(c2.exists(e).ephemeralOwner, sid1, "ephemeralOwner seen by another session")
    check_stat(c1.exists(base), base, ephemeralOwner=0)
    raises(NoChildrenForEphemeralsError, c1.create, e + "/child")
    raises(NoChildrenForEphemeralsError, c2.create, e + "/child")
    raises(NodeExistsError, c2.create, e, ephemeral=True)

    # sequential nodes: suffix is the parent's child-create counter
    seq = base + "/seq"
    c1.create(seq)
    s0 = c1.create(seq + "/s-", b"0", sequence=True)
    eq(s0, seq + "/s-0000000000", "first sequential create")
    s1 = c1.create(seq + "/s-", b"1", sequence=True)
    eq(s1, seq + "/s-0000000001", "second sequential create")
    # a plain create also bumps the counter (zetcd bug b9d30b0)
    c1.create(seq + "/plain")
    s3 = c1.create(seq + "/s-", sequence=True)
    eq(s3, seq + "/s-0000000003", "sequential create after a plain create")
    # numbers are not reused after a delete
    c1.delete(s3)
    s4 = c1.create(seq + "/s-", sequence=True)
    eq(s4, seq + "/s-0000000004", "sequential create after deleting the newest")
    # a different prefix shares the parent's counter
    o5 = c2.create(seq + "/other-", sequence=True)
    eq(o5, seq + "/other-0000000005", "sequential create with another prefix")
    # ephemeral + sequential
    es = c2.create(seq + "/es-", b"x", ephemeral=True, sequence=True)
    eq(es, seq + "/es-0000000006", "ephemeral sequential create")
    c1.sync(seq)
    eq(c1.exists(es).ephemeralOwner, sid2, "ephemeralOwner of an ephemeral sequential node")
    # trailing slash: the name is just the number
    ts = c1.create(seq + "/", b"t", sequence=True)
    eq(ts, seq + "/0000000007", "trailing-slash sequential create")
    eq(c1.get(ts)[0], b"t", "data of trailing-slash sequential node")
    # include_data (create2) returns the real path too
    p8, st8 = c1.create(seq + "/s-", sequence=True, include_data=True)
    eq(p8, seq + "/s-0000000008", "create2 sequential path")
    eq(st8.czxid, c1.exists(p8).czxid, "create2 sequential stat")
    names = sorted(c1.get_children(seq))
    eq(names, sorted(["s-0000000000", "s-0000000001", "plain", "s-0000000004", "other-0000000005",
                      "es-0000000006", "0000000007", "s-0000000008"]), "children of the sequential parent")
    for n in names:
        if n != "plain":
            check(re.search(r"\d{10}$", n), "sequential name %r lacks a 10-digit suffix" % n)
    # counters are per parent
    other = base + "/seq2"
    c1.create(other)
    eq(c1.create(other + "/s-", sequence=True), other + "/s-0000000000", "counter of another parent")
    pst = c1.exists(seq)
    # 9 creates, 1 delete, 8 children -> cversion 10
    check_stat(pst, seq, numChildren=8, cversion=10)

    # session close removes every ephemeral of the session and updates the parent
    c2_eph = [c2.create(base + "/c2eph-%d" % i, ephemeral=True) for i in range(3)]
    c1.sync(base)  # c2's creates went through another server: c1's may lag
    before = c1.exists(base)
    c1_live = [base + "/eph"]
    stop(c2)
    c1.sync(base)
    for p in c2_eph + [es]:
        eq(c1.exists(p), None, "ephemeral %s after its session closed" % p)
    after = c1.exists(base)
    eq(after.numChildren, before.numChildren - 3, "numChildren after session close")
    eq(after.cversion, before.cversion + 3, "cversion after session close (3 deletes)")
    check(after.pzxid > before.pzxid, "pzxid must advance when ephemerals are removed")
    eq(c1.exists(seq).numChildren, 7, "numChildren of the sequential parent after session close")
    for p in c1_live:
        check(c1.exists(p) is not None, "ephemeral %s of a live session vanished" % p)
    # the parent can now be deleted (zetcd #88/#90)
    c1.delete(seq, recursive=True)
    c1.delete(other, recursive=True)
    c1.delete(base + "/eph")
    eq(c1.get_children(base), [], "children after cleanup")
    c1.delete(base)


run(main)
