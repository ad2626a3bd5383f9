#!/usr/bin/python3
"""kazoo Lock and Election recipes across three sessions: mutual exclusion,
FIFO hand-over in sequence order, contenders(), non-blocking and timed
acquire, lock release on session close."""
import re
import threading
import time

from kazoo.exceptions import LockTimeout

from kzcompat import check, client, eq, fail, root, run, stop, wait_until


def lock_tests(cs):
    path = root("lock")
    locks = [c.Lock(path, "id-%d" % i) for i, c in enumerate(cs)]

    check(locks[0].acquire(timeout=10), "first lock acquire failed")
    check(locks[0].is_acquired, "is_acquired after acquire")
    eq(locks[1].acquire(blocking=False), False, "non-blocking acquire of a held lock")
    t0 = time.time()
    try:
        got = locks[2].acquire(timeout=0.5)
        fail("timed acquire of a held lock returned %r, want LockTimeout" % got)
    except LockTimeout:
        pass
    check(time.time() - t0 >= 0.4, "timed acquire gave up too early")
    eq(locks[0].contenders(), ["id-0"], "contenders while one holds the lock")
    names = cs[0].get_children(path)
    eq(len(names), 1, "lock children %r" % names)
    check(re.match(r"^[0-9a-f]{32}__lock__\d{10}$", names[0]), "lock node name %r" % names[0])

    # waiters queue up in sequence order and get the lock in that order
    order = []
    order_lock = threading.Lock()
    ready = [threading.Event() for _ in cs]
    go_on = [threading.Event() for _ in cs]

    def waiter(i):
        locks[i].acquire(timeout=30)
        with order_lock:
            order.append(i)
        ready[i].set()
        go_on[i].wait(30)
        locks[i].release()

    t1 = threading.Thread(target=waiter, args=(1,), daemon=True)
    t1.start()
    wait_until(lambda: len(cs[0].get_children(path)) == 2, "second contender node")
    t2 = threading.Thread(target=waiter, args=(2,), daemon=True)
    t2.start()
    wait_until(lambda: len(cs[0].get_children(path)) == 3, "third contender node")
    eq(locks[0].contenders(), ["id-0", "id-1", "id-2"], "contenders in sequence order")
    time.sleep(0.3)
    eq(order, [], "nobody may hold the lock while the first holds it")
    locks[0].release()
    check(ready[1].wait(10), "second contender did not get the lock after release")
    time.sleep(0.3)
    eq(order, [1], "only the next contender holds the lock")
    go_on[1].set()
    check(ready[2].wait(10), "third contender did not get the lock")
    go_on[2].set()
    t1.join(10)
    t2.join(10)
    eq(order, [1, 2], "lock hand-over order")
    cs[0].sync(path)
    eq(cs[0].get_children(path), [], "lock nodes after all released")

    # mutual exclusion under contention
    shared = {"inside": 0, "max": 0, "count": 0}
    slock = threading.Lock()
    errors = []

    def worker(i):
        lk = cs[i].Lock(path, "w-%d" % i)
        try:
            for _ in range(8):
                with lk:
                    with slock:
                        shared["inside"] += 1
                        shared["max"] = max(shared["max"], shared["inside"])
                    time.sleep(0.005)
                    with slock:
                        shared["inside"] -= 1
                        shared["count"] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(cs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    eq(errors, [], "lock worker errors")
    eq(shared["count"], 8 * len(cs), "critical sections run")
    eq(shared["max"], 1, "max holders at once")

    # a holder's session closing releases the lock
    lx = cs[3].Lock(path, "dying")
    check(lx.acquire(timeout=10), "acquire by the session that will close")
    waiter_lock = cs[0].Lock(path, "after-close")
    got = []
    th = threading.Thread(target=lambda: got.append(waiter_lock.acquire(timeout=30)), daemon=True)
    th.start()
    wait_until(lambda: len(cs[0].get_children(path)) == 2, "waiter node")
    stop(cs[3])
    th.join(30)
    eq(got, [True], "acquire after the holder's session closed")
    waiter_lock.release()
    cs[0].delete(path, recursive=True)


def election_tests(cs):
    path = root("election")
    leaders = []
    active = {"n": 0, "max": 0}
    alock = threading.Lock()
    release = [threading.Event() for _ in cs]
    elected = [threading.Event() for _ in cs]
    elections = [c.Election(path, "cand-%d" % i) for i, c in enumerate(cs)]
    cs[0].ensure_path(path)

    def lead(i):
        with alock:
            active["n"] += 1
            active["max"] = max(active["max"], active["n"])
            leaders.append(i)
        elected[i].set()
        release[i].wait(30)
        with alock:
            active["n"] -= 1

    threads = []
    for i, el in enumerate(elections):
        t = threading.Thread(target=el.run, args=(lead, i), daemon=True)
        t.start()
        threads.append(t)
        # join in a known order so the sequence numbers are ordered
        wait_until(lambda: len(cs[0].get_children(path)) == i + 1, "election node %d" % i)
    check(elected[0].wait(10), "first candidate not elected")
    cs[1].sync(path)
    eq(elections[1].contenders(), ["cand-0", "cand-1", "cand-2"], "election contenders")
    time.sleep(0.3)
    eq(leaders, [0], "leaders while the first leads")
    # cancel the last candidate before its turn
    elections[2].cancel()
    threads[2].join(10)
    check(not threads[2].is_alive(), "cancelled candidate still running")
    release[0].set()
    check(elected[1].wait(10), "second candidate not elected after the first resigned")
    release[1].set()
    for t in threads:
        t.join(10)
    eq(leaders, [0, 1], "election order (third was cancelled)")
    eq(active["max"], 1, "simultaneous leaders")
    wait_until(lambda: cs[0].get_children(path) == [], "election nodes cleaned up")
    cs[0].delete(path)


def main():
    cs = [client() for _ in range(4)]
    lock_tests(cs)
    election_tests(cs[:3])


run(main)
