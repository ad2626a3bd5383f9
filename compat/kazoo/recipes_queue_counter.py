#!/usr/bin/python3
"""kazoo Counter (version-checked set under contention), Queue (priority +
FIFO via sequence numbers, len from numChildren) and LockingQueue
(ephemeral locks, put_all transaction, release on session close)."""
import threading
import time

from kzcompat import check, client, eq, root, run, stop, wait_until

RETRY = dict(max_tries=200, delay=0.005, backoff=1.1, max_jitter=0.02, max_delay=0.2)


def counter_tests():
    cs = [client(command_retry=RETRY) for _ in range(3)]
    path = root("counter")
    ctr = cs[0].Counter(path)
    eq(ctr.value, 0, "initial counter value")
    ctr += 5
    ctr -= 2
    eq(ctr.value, 3, "counter after +5 -2")
    eq(cs[0].get(path)[0], b"3", "counter node data")
    eq(cs[0].get(path)[1].version, 2, "counter node version after two changes")
    fctr = cs[1].Counter(root("fcounter"), default=0.5)
    fctr += 1.25
    eq(fctr.value, 1.75, "float counter")

    # concurrent increments: lost updates mean the server ignored the version
    errors = []

    def inc(i):
        c = cs[i].Counter(path)
        try:
            for _ in range(15):
                c += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=inc, args=(i,), daemon=True) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    eq(errors, [], "counter errors")
    cs[0].sync(path)
    eq(ctr.value, 3 + 45, "counter after 45 concurrent increments")
    eq(cs[0].get(path)[1].version, 2 + 45, "counter version after 45 increments")
    for c in cs:
        stop(c)


def queue_tests():
    c1 = client()
    c2 = client()
    path = root("queue")
    q1 = c1.Queue(path)
    q2 = c2.Queue(path)
    eq(len(q1), 0, "empty queue len")
    eq(q1.get(), None, "get from empty queue")
    q1.put(b"a")
    q1.put(b"b")
    q1.put(b"urgent", priority=1)
    q1.put(b"c")
    q1.put(b"low", priority=999)
    eq(len(q1), 5, "queue len")
    names = sorted(c1.get_children(path))
    eq(names[0], "entry-001-0000000002", "queue entry names carry priority and sequence")
    eq(names[-1], "entry-999-0000000004", "queue entry names carry priority and sequence")
    c2.sync(path)
    got = [q2.get() for _ in range(5)]
    eq(got, [b"urgent", b"a", b"b", b"c", b"low"], "queue order (priority, then FIFO)")
    eq(q2.get(), None, "get after draining")
    c1.sync(path)
    eq(len(q1), 0, "queue len after draining")

    # two consumers never get the same item
    for i in range(20):
        q1.put(b"%02d" % i)
    results = [[], []]

    def consume(q, out):
        while True:
            v = q.get()
            if v is None:
                return
            out.append(v)

    c2.sync(path)
    ts = [threading.Thread(target=consume, args=(q, out), daemon=True) for q, out in ((q1, results[0]), (q2, results[1]))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    eq(sorted(results[0] + results[1]), [b"%02d" % i for i in range(20)], "items consumed exactly once")
    for out in results:
        eq(out, sorted(out), "each consumer sees FIFO order")
    c1.delete(path, recursive=True)
    stop(c1)
    stop(c2)


def locking_queue_tests():
    c1 = client()
    c2 = client()
    c3 = client()
    path = root("lqueue")
    q1 = c1.LockingQueue(path)
    q2 = c2.LockingQueue(path)
    q3 = c3.LockingQueue(path)
    q1.put(b"a")
    q1.put(b"b")
    q1.put_all([b"c", b"d"], priority=50)
    eq(len(q1), 4, "locking queue len")
    eq(q1.get(timeout=5), b"c", "first get (priority 50 first)")
    eq(q1.get(timeout=5), b"c", "get again before consume returns the same entry")
    check(q1.holds_lock(), "holds_lock after get")
    c2.sync(path)
    eq(q2.get(timeout=5), b"d", "second consumer skips the locked entry")
    eq(len(c1.get_children(path + "/taken")), 2, "lock nodes while two entries are taken")
    check(q1.consume(), "consume")
    eq(len(q1), 3, "len after consume")
    check(q2.release(), "release")
    c3.sync(path)  # other sessions sync before reading (followers may lag)
    eq(q3.get(timeout=5), b"d", "released entry is available again")
    check(q3.consume(), "consume by third")
    # a consumer whose session closes loses its lock
    c2.sync(path)
    eq(q2.get(timeout=5), b"a", "get a")
    stop(c2)
    c1.sync(path)
    wait_until(lambda: c1.get_children(path + "/taken") == [], "lock of a closed session removed")
    eq(q1.get(timeout=5), b"a", "entry of a closed session is available again")
    check(q1.consume(), "consume a")
    c3.sync(path)
    eq(q3.get(timeout=5), b"b", "get b")
    check(q3.consume(), "consume b")
    c1.sync(path)
    eq(len(q1), 0, "empty at the end")
    # a get with nothing available times out
    eq(q1.get(timeout=0.3), None, "get on an empty locking queue")
    # ... and a blocked get wakes up on a put (child watch)
    got = []
    t = threading.Thread(target=lambda: got.append(q3.get(timeout=10)), daemon=True)
    t.start()
    time.sleep(0.3)  # let the get find nothing and wait on its child watch
    q1.put(b"late")
    t.join(15)
    eq(got, [b"late"], "blocked get woken by put")
    check(q3.consume(), "consume late")
    c1.delete(path, recursive=True)


def main():
    counter_tests()
    queue_tests()
    locking_queue_tests()


run(main)
