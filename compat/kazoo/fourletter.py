#!/usr/bin/python3
"""Connecting with all hosts, per-server clients, session timeout
negotiation (seen through `cons`), client.command()
four-letter words, server_version(), and a write through one server seen
through every other after sync."""
import re

from kzcompat import check, client, eq, root, run, stop


def main():
    hosts = [h.strip() for h in __import__("kzcompat").HOSTS.split(",")]
    c = client()  # all hosts
    eq(c.state, "CONNECTED", "state with all hosts")
    eq(c.command(b"ruok"), "imok", "command(b'ruok')")
    ver = c.server_version()
    check(isinstance(ver, tuple) and len(ver) >= 2, "server_version() = %r" % (ver,))
    check(ver[0] == 3 and ver[1] >= 5, "server_version() = %r, want 3.5 or later" % (ver,))
    envi = c.command(b"envi")
    check(re.search(r"(?m)^zookeeper\.version=\d+\.\d+\.\d+", envi), "envi lacks zookeeper.version=: %r" % envi[:300])
    eq(c.command(b"isro"), "rw", "command(b'isro')")

    # session timeouts are clamped to [2, 20] * tickTime (4000, 40000 ms);
    # `cons` lists the session with its negotiated timeout
    for req, want in ((1.0, 4000), (10.0, 10000), (100.0, 40000)):
        ct = client(hosts=hosts[0], timeout=req)
        sid = ct.client_id[0]
        cons = ct.command(b"cons")
        m = re.search(r"sid=0x%x,[^)]*\bto=(\d+)" % sid, cons)
        check(m, "cons does not list session 0x%x with to=: %r" % (sid, cons))
        eq(int(m.group(1)), want, "negotiated timeout for a requested %d ms" % (req * 1000))
        stop(ct)

    base = root("4lw")
    c.create(base)
    modes = []
    per = []
    for i, h in enumerate(hosts):
        ci = client(hosts=h)
        per.append(ci)
        srvr = ci.command(b"srvr")
        m = re.search(r"(?m)^Mode: (\w+)$", srvr)
        check(m, "srvr from %s lacks a Mode line: %r" % (h, srvr))
        modes.append(m.group(1))
        check(re.search(r"(?m)^Zxid: 0x[0-9a-f]+$", srvr), "srvr from %s lacks a Zxid line: %r" % (h, srvr))
        check(re.search(r"(?m)^Node count: \d+$", srvr), "srvr from %s lacks a Node count line: %r" % (h, srvr))
        conf = ci.command(b"conf")
        port = h.rsplit(":", 1)[1]
        check(re.search(r"(?m)^clientPort=%s$" % port, conf), "conf from %s lacks clientPort=%s: %r" % (h, port, conf[:400]))
        stat = ci.command(b"stat")
        check(stat.startswith("Zookeeper version: "), "stat from %s: %r" % (h, stat[:200]))
        check("Clients:" in stat, "stat from %s lacks Clients: %r" % (h, stat[:300]))
        mntr = ci.command(b"mntr")
        st = re.search(r"(?m)^zk_server_state\t(\w+)$", mntr)
        check(st, "mntr from %s lacks zk_server_state: %r" % (h, mntr[:300]))
        eq(st.group(1), m.group(1), "mntr zk_server_state vs srvr Mode on %s" % h)
        # monitoring graphs file descriptors against their limit
        fds = re.search(r"(?m)^zk_open_file_descriptor_count\t(\d+)$", mntr)
        lim = re.search(r"(?m)^zk_max_file_descriptor_count\t(\d+)$", mntr)
        check(fds and lim and 0 < int(fds.group(1)) <= int(lim.group(1)),
              "mntr from %s: file descriptor counts %r %r" % (h, fds and fds.group(0), lim and lim.group(0)))
        # the leader-only keys monitoring integrations read (ZooKeeper 3.8
        # names the followers zk_learners; zk_followers is older releases' name)
        leader_keys = ("zk_learners", "zk_synced_followers", "zk_synced_non_voting_followers",
                       "zk_synced_observers", "zk_pending_syncs")
        if m.group(1) == "leader":
            for key in leader_keys:
                check(re.search(r"(?m)^%s\t\d+$" % key, mntr), "mntr from leader %s lacks %s" % (h, key))
            eq(re.search(r"(?m)^zk_learners\t(\d+)$", mntr).group(1), str(len(hosts) - 1), "zk_learners on %s" % h)
        else:
            for key in leader_keys:
                check(not re.search(r"(?m)^%s\t" % key, mntr), "mntr from %s %s has the leader-only %s" % (m.group(1), h, key))
        eq(ci.command(b"ruok"), "imok", "ruok on %s" % h)
        # writes through this server are visible everywhere after sync
        ci.create("%s/via-%d" % (base, i), b"%d" % i)
    if len(hosts) == 1:
        eq(modes, ["standalone"], "modes")
    else:
        eq(sorted(modes), ["follower"] * (len(hosts) - 1) + ["leader"], "modes of the ensemble")
    for i, ci in enumerate(per):
        ci.sync(base)
        eq(sorted(ci.get_children(base)), ["via-%d" % j for j in range(len(hosts))],
           "children seen through %s after sync" % hosts[i])
        for j in range(len(hosts)):
            eq(ci.get("%s/via-%d" % (base, j))[0], b"%d" % j, "data through %s" % hosts[i])
    # all servers agree on the node's stat
    stats = [ci.exists(base + "/via-0") for ci in per]
    for s in stats[1:]:
        eq(s, stats[0], "stat of the same node through different servers")
    c.delete(base, recursive=True)


run(main)
