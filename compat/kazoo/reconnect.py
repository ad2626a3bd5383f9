#!/usr/bin/python3
"""Failover: a client connected to the leader keeps its session when that
server is killed: it goes SUSPENDED -> CONNECTED (never LOST) on another
server with the same session id, its ephemeral survives, it can read and
write, recipes re-arm their watches; the restarted server catches up.

Needs a driver: the script prints "@@KILL h:p" / "@@RESTART h:p" and waits
for a line on stdin (the Go test answers "ok")."""
import re
import threading
import time

import kzcompat
from kzcompat import check, client, driver, eq, four_letter, root, run, stop, wait_until


def main():
    hosts = [h.strip() for h in kzcompat.HOSTS.split(",")]
    check(len(hosts) >= 3, "reconnect needs at least three servers, got %r" % hosts)
    leader = None
    for h in hosts:
        m = re.search(r"(?m)^Mode: (\w+)", four_letter(h, b"srvr"))
        if m and m.group(1) == "leader":
            leader = h
    check(leader is not None, "no server reports Mode: leader")
    order = [leader] + [h for h in hosts if h != leader]
    c = client(hosts=",".join(order), randomize_hosts=False)
    peer = "%s:%d" % c._connection._socket.getpeername()[:2]
    eq(peer, leader, "first connection goes to the first host")
    sid, passwd = c.client_id
    states = []
    state_lock = threading.Lock()

    def listener(s):
        with state_lock:
            states.append(s)

    c.add_listener(listener)

    base = root("reconnect")
    c.create(base)
    eph = c.create(base + "/eph", b"mine", ephemeral=True)
    kids = []
    kids_cond = threading.Condition()

    def on_children(children):
        with kids_cond:
            kids.append(sorted(children))
            kids_cond.notify_all()

    c.ChildrenWatch(base, on_children)
    wait_until(lambda: kids and kids[-1] == ["eph"], "initial ChildrenWatch call")

    driver("KILL " + leader)
    wait_until(lambda: "CONNECTED" in states[states.index("SUSPENDED"):] if "SUSPENDED" in states else False,
               "SUSPENDED then CONNECTED after the server was killed (states %r)" % states, timeout=40)
    with state_lock:
        check("LOST" not in states, "session was LOST after a server kill: %r" % states)
    eq(c.client_id, (sid, passwd), "session id/password after reconnect")
    peer2 = "%s:%d" % c._connection._socket.getpeername()[:2]
    check(peer2 != leader and peer2 in hosts, "reconnected to %s, want another live server" % peer2)

    # the session and its ephemeral survived
    st = c.exists(eph)
    check(st is not None, "ephemeral vanished after failover")
    eq(st.ephemeralOwner, sid, "ephemeralOwner after failover")
    eq(c.get(eph)[0], b"mine", "ephemeral data after failover")
    others = ",".join(h for h in hosts if h != leader)
    c2 = client(hosts=others)
    c2.sync(base)
    eq(c2.exists(eph).ephemeralOwner, sid, "ephemeral seen by another session after failover")

    # the client keeps working
    c.create(base + "/after", b"1")
    c.set(base + "/after", b"2")
    eq(c.get(base + "/after")[0], b"2", "read after write after failover")
    eq(c2.create(base + "/from-c2"), base + "/from-c2", "create by a second client")
    # the recipe re-armed its watch on reconnect
    with kids_cond:
        deadline = time.time() + 10
        while (not kids or kids[-1] != ["after", "eph", "from-c2"]) and time.time() < deadline:
            kids_cond.wait(0.1)
        eq(kids[-1] if kids else None, ["after", "eph", "from-c2"], "ChildrenWatch after failover (calls %r)" % kids)

    driver("RESTART " + leader)
    c3 = client(hosts=leader)
    c3.sync(base)
    eq(sorted(c3.get_children(base)), ["after", "eph", "from-c2"], "children through the restarted server")
    eq(c3.get(base + "/after")[0], b"2", "data through the restarted server")
    eq(c3.exists(eph).ephemeralOwner, sid, "ephemeral through the restarted server")
    m = re.search(r"(?m)^Mode: (\w+)", four_letter(leader, b"srvr"))
    check(m and m.group(1) in ("leader", "follower"), "restarted server mode: %r" % (m and m.group(1)))

    with state_lock:
        eq(states, ["SUSPENDED", "CONNECTED"], "connection states of the failed-over client")
    # closing the session now removes the ephemeral everywhere
    stop(c)
    for cx in (c2, c3):
        cx.sync(base)
        eq(cx.exists(eph), None, "ephemeral after its session closed")
    c2.delete(base, recursive=True)


run(main)
