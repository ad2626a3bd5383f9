#!/usr/bin/python3
"""confluent-kafka 1.7.0 (librdkafka 2.0.2) driver; see kdriver.py for the protocol."""
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kdriver import BOOTSTRAP, b64, main, unb64


def produce(o):
    codec = o.get("codec") or "none"
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": o.get("acks", 1), "compression.codec": codec,
                  "linger.ms": 5, "message.timeout.ms": 20000})
    out = [None] * len(o["records"])
    errs = []

    def report(i):
        def cb(err, msg):
            if err is not None:
                errs.append("record %d: %s" % (i, err))
                return
            out[i] = {"p": msg.partition(), "o": msg.offset(), "ts": msg.timestamp()[1]}
        return cb

    for i, r in enumerate(o["records"]):
        kw = {}
        if r.get("ts") is not None:
            kw["timestamp"] = r["ts"]
        if r.get("h"):
            kw["headers"] = [(k, unb64(v)) for k, v in r["h"]]
        p.produce(o["topic"], value=unb64(r.get("v")), key=unb64(r.get("k")), partition=r["p"],
                  on_delivery=report(i), **kw)
        p.poll(0)
    left = p.flush(25)
    if left or errs:
        raise RuntimeError("produce: %d undelivered, errors %s" % (left, errs))
    return {"records": out}


def consumer():
    # A group.id is mandatory for a Consumer; assign() without subscribe()
    # and without commits never talks to a group coordinator.
    return Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "compat-unused", "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": False, "api.version.request": True})


def consume(o):
    c = consumer()
    try:
        c.assign([TopicPartition(o["topic"], o["p"], o["offset"])])
        out = []
        deadline = time.time() + o.get("timeout", 20)
        while len(out) < o["n"] and time.time() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            tstype, ts = m.timestamp()
            out.append({"p": m.partition(), "o": m.offset(), "k": b64(m.key()), "v": b64(m.value()),
                        "h": [[k, b64(v)] for k, v in (m.headers() or [])], "ts": ts, "tstype": tstype - 1})
        return {"records": out}
    finally:
        c.close()


def offsets(o):
    c = consumer()
    try:
        tp = TopicPartition(o["topic"], o["p"])
        lo, hi = c.get_watermark_offsets(tp, timeout=10)
        res = {"earliest": lo, "latest": hi, "times": []}
        for ts in o.get("times") or []:
            got = c.offsets_for_times([TopicPartition(o["topic"], o["p"], ts)], timeout=10)[0]
            if got.error:
                raise KafkaException(got.error)
            # librdkafka does not pass on the timestamp ListOffsets returned.
            res["times"].append({"offset": got.offset, "ts": None})
        return res
    finally:
        c.close()


def admin():
    return AdminClient({"bootstrap.servers": BOOTSTRAP})


def wait_all(fs):
    errs = {}
    for name, f in fs.items():
        try:
            f.result(timeout=20)
            errs[name] = 0
        except KafkaException as e:
            errs[name] = e.args[0].code()
    return errs


def create(o):
    a = admin()
    fs = a.create_topics([NewTopic(t["name"], num_partitions=t["partitions"], replication_factor=t.get("rf", 1))
                          for t in o["topics"]], operation_timeout=10, request_timeout=20)
    return {"errors": wait_all(fs)}


def delete(o):
    a = admin()
    fs = a.delete_topics(o["names"], operation_timeout=10, request_timeout=20)
    return {"errors": wait_all(fs)}


def metadata(o):
    md = admin().list_topics(timeout=10)
    topics = {}
    for name, t in md.topics.items():
        if t.error is not None:
            raise KafkaException(t.error)
        topics[name] = {str(p.id): {"leader": p.leader, "replicas": list(p.replicas), "isr": list(p.isrs)}
                        for p in t.partitions.values()}
    return {"brokers": [{"id": b.id, "host": b.host, "port": b.port} for b in md.brokers.values()],
            "controller": md.controller_id, "topics": topics}


if __name__ == "__main__":
    main("ck.py", {"produce": produce, "consume": consume, "offsets": offsets, "create": create,
                   "delete": delete, "metadata": metadata})
