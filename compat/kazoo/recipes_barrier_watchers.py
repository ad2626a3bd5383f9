#!/usr/bin/python3
"""kazoo Barrier, DoubleBarrier, DataWatch and ChildrenWatch."""
import threading
import time

from kzcompat import check, client, eq, root, run, wait_until


def barrier_tests(cs):
    path = root("barrier")
    b0 = cs[0].Barrier(path)
    eq(b0.wait(timeout=1), True, "wait on a barrier that does not exist")
    b0.create()
    check(cs[0].exists(path) is not None, "barrier node after create")
    results = {}

    def waiter(i):
        results[i] = cs[i].Barrier(path).wait(timeout=20)

    # other sessions sync before reading (ZooKeeper followers may lag)
    cs[1].sync(path)
    cs[2].sync(path)
    eq(cs[1].Barrier(path).wait(timeout=0.3), False, "wait on a standing barrier times out")
    ts = [threading.Thread(target=waiter, args=(i,), daemon=True) for i in (1, 2)]
    for t in ts:
        t.start()
    time.sleep(0.3)
    eq(results, {}, "waiters returned while the barrier stands")
    eq(b0.remove(), True, "remove")
    for t in ts:
        t.join(10)
    eq(results, {1: True, 2: True}, "waiters released by remove")
    eq(b0.remove(), False, "second remove")


def double_barrier_tests(cs):
    path = root("dbarrier")
    n = len(cs)
    bars = [c.DoubleBarrier(path, n) for c in cs]
    entered = []
    left = []
    lk = threading.Lock()
    go_leave = threading.Event()
    errors = []

    def member(i):
        try:
            bars[i].enter()
            with lk:
                entered.append(i)
            go_leave.wait(20)
            bars[i].leave()
            with lk:
                left.append(i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(n)]
    ts[0].start()
    ts[1].start()
    wait_until(lambda: len(cs[0].get_children(path)) >= 2 if cs[0].exists(path) else False, "two members joined")
    time.sleep(0.3)
    eq(entered, [], "members entered before all %d arrived" % n)
    ts[2].start()
    wait_until(lambda: len(entered) == n, "all members entered")
    check("ready" in cs[0].get_children(path), "ready node after all entered")
    go_leave.set()
    for t in ts:
        t.join(20)
    eq(errors, [], "double barrier errors")
    eq(sorted(left), list(range(n)), "all members left")
    cs[0].sync(path)
    eq([k for k in cs[0].get_children(path) if k != "ready"], [], "member nodes after leave")
    cs[0].delete(path, recursive=True)


def data_watch_tests(c, w):
    path = root("datawatch")
    calls = []
    cond = threading.Condition()

    def record(data, stat, event):
        with cond:
            calls.append((data, stat.version if stat else None, event.type if event else None))
            cond.notify_all()

    def wait_calls(n):
        with cond:
            deadline = time.time() + 10
            while len(calls) < n and time.time() < deadline:
                cond.wait(0.1)
            eq(len(calls) >= n, True, "DataWatch calls %r, want %d" % (calls, n))

    c.DataWatch(path, record)
    wait_calls(1)
    w.create(path, b"one")
    wait_calls(2)
    w.set(path, b"two")
    wait_calls(3)
    w.delete(path)
    wait_calls(4)
    w.create(path, b"three")
    wait_calls(5)
    time.sleep(0.3)
    eq(calls, [
        (None, None, None),
        (b"one", 0, "CREATED"),
        (b"two", 1, "CHANGED"),
        (None, None, "DELETED"),
        (b"three", 0, "CREATED"),
    ], "DataWatch calls")
    w.delete(path)


def children_watch_tests(c, w):
    path = root("childwatch")
    w.create(path)
    c.sync(path)
    seen = []
    cond = threading.Condition()

    def record(children):
        with cond:
            seen.append(sorted(children))
            cond.notify_all()

    def wait_for(want):
        with cond:
            deadline = time.time() + 10
            while (not seen or seen[-1] != want) and time.time() < deadline:
                cond.wait(0.1)
            eq(seen[-1] if seen else None, want, "ChildrenWatch latest children (all calls %r)" % seen)

    c.ChildrenWatch(path, record)
    wait_for([])
    w.create(path + "/a")
    wait_for(["a"])
    w.create(path + "/b", ephemeral=True)
    wait_for(["a", "b"])
    w.delete(path + "/a")
    wait_for(["b"])
    w.set(path, b"data")  # not a child change
    time.sleep(0.3)
    eq(seen[-1], ["b"], "children after a data change")
    n = len(seen)
    w.delete(path + "/b")
    wait_for([])
    eq(len(seen), n + 1, "one ChildrenWatch call per child change")
    w.delete(path)


def main():
    cs = [client() for _ in range(3)]
    barrier_tests(cs)
    double_barrier_tests(cs)
    data_watch_tests(cs[0], cs[1])
    children_watch_tests(cs[0], cs[1])


run(main)
