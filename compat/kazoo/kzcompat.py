"""Shared helpers of the kazoo compatibility scripts.

Each script is standalone: `ZK_HOSTS=h:p,h:p,h:p /usr/bin/python3 script.py`.
It prints "OK <script>" and exits 0 when the server behaved like ZooKeeper
3.8, or prints "MISMATCH: ..." (plus a traceback) and exits 1.
"""
import logging
import os
import socket
import sys
import threading
import time
import traceback
import uuid

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                    format="%(asctime)s kazoo %(levelname)s %(name)s: %(message)s")

HOSTS = os.environ.get("ZK_HOSTS", "")
_clients = []


class Mismatch(Exception):
    pass


def fail(msg):
    raise Mismatch(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def eq(got, want, what):
    if got != want:
        fail("%s: got %r, want %r" % (what, got, want))


def raises(exc, fn, *args, **kw):
    """fn(*args, **kw) must raise exactly exc (a kazoo exception class)."""
    try:
        res = fn(*args, **kw)
    except exc:
        return
    except Exception as e:  # noqa: BLE001
        fail("%s%r: raised %s(%s), want %s" % (getattr(fn, "__name__", fn), args, type(e).__name__, e, exc.__name__))
    fail("%s%r: returned %r, want %s" % (getattr(fn, "__name__", fn), args, res, exc.__name__))


def client(hosts=None, timeout=10.0, **kw):
    """A started KazooClient (default: all hosts of ZK_HOSTS)."""
    c = KazooClient(hosts=hosts or HOSTS, timeout=timeout, **kw)
    c.start(timeout=20)
    _clients.append(c)
    return c


def stop(c):
    c.stop()
    c.close()
    if c in _clients:
        _clients.remove(c)


def root(name):
    """A fresh, unique root path for this run."""
    return "/compat-kazoo-%s-%s" % (name, uuid.uuid4().hex[:8])


def stat_fields(st):
    return dict(czxid=st.czxid, mzxid=st.mzxid, ctime=st.ctime, mtime=st.mtime, version=st.version,
                cversion=st.cversion, aversion=st.aversion, ephemeralOwner=st.ephemeralOwner,
                dataLength=st.dataLength, numChildren=st.numChildren, pzxid=st.pzxid)


def check_stat(st, what, **want):
    got = stat_fields(st)
    for k, v in want.items():
        if got[k] != v:
            fail("%s: stat.%s = %r, want %r (stat %r)" % (what, k, got[k], v, got))


class Recorder(object):
    """A watch callback that records every event it receives."""

    def __init__(self, name="watch"):
        self.name = name
        self.events = []
        self.cond = threading.Condition()

    def __call__(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait(self, n=1, timeout=10.0):
        """Wait until at least n events arrived; fail otherwise."""
        deadline = time.time() + timeout
        with self.cond:
            while len(self.events) < n:
                left = deadline - time.time()
                if left <= 0:
                    fail("%s: got %d events %r within %.1fs, want %d" % (self.name, len(self.events), self.events, timeout, n))
                self.cond.wait(left)
            return list(self.events)

    def expect(self, types_paths, settle=0.25, timeout=10.0):
        """Exactly these (type, path) events, in order, and nothing more
        within `settle` seconds afterwards."""
        self.wait(len(types_paths), timeout)
        time.sleep(settle)
        with self.cond:
            got = [(e.type, e.path) for e in self.events]
            states = [e.state for e in self.events]
        eq(got, list(types_paths), "%s events" % self.name)
        for s in states:
            eq(s, "CONNECTED", "%s event state" % self.name)

    def expect_none(self, settle=0.3):
        time.sleep(settle)
        with self.cond:
            eq([(e.type, e.path) for e in self.events], [], "%s events (want none)" % self.name)


def wait_until(cond, what, timeout=10.0, interval=0.05):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            fail("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def four_letter(host, cmd, timeout=5.0):
    """Send a four-letter word to host ("h:p") on a fresh socket."""
    h, p = host.rsplit(":", 1)
    s = socket.create_connection((h, int(p)), timeout=timeout)
    try:
        s.sendall(cmd)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        return out.decode("utf-8", "replace")
    finally:
        s.close()


def driver(request):
    """Ask the driving test for an action ("KILL h:p", "RESTART h:p") and
    wait for its answer line. Run by hand, do it yourself and press Enter."""
    print("@@" + request, flush=True)
    line = sys.stdin.readline()
    if not line:
        fail("driver closed stdin instead of answering %r" % request)
    if line.strip() not in ("ok", ""):
        fail("driver could not do %r: %s" % (request, line.strip()))


def run(main):
    """Run main(), print OK or the mismatch, stop every client, exit."""
    name = os.path.basename(sys.argv[0])
    if not HOSTS:
        print("MISMATCH: ZK_HOSTS is not set", file=sys.stderr)
        sys.exit(2)
    code = 0
    try:
        main()
    except Mismatch as e:
        print("MISMATCH in %s: %s" % (name, e), file=sys.stderr)
        traceback.print_exc()
        code = 1
    except Exception as e:  # noqa: BLE001
        print("MISMATCH in %s: unexpected %s: %s" % (name, type(e).__name__, e), file=sys.stderr)
        traceback.print_exc()
        code = 1
    for c in list(_clients):
        try:
            stop(c)
        except Exception:  # noqa: BLE001
            pass
    if code == 0:
        print("OK %s" % name)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


__all__ = ["HOSTS", "KazooState", "Mismatch", "Recorder", "check", "check_stat", "client", "driver", "eq", "fail",
           "four_letter", "raises", "root", "run", "stat_fields", "stop", "wait_until"]
