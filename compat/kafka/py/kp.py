#!/usr/bin/python3
"""kafka-python 2.0.2 driver; see kdriver.py for the protocol."""
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from kdriver import BOOTSTRAP, b64, main, unb64


def produce(o):
    codec = o.get("codec") or "none"
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks=o.get("acks", 1),
                      compression_type=None if codec == "none" else codec,
                      linger_ms=5, request_timeout_ms=20000, max_block_ms=20000)
    try:
        futs = []
        for r in o["records"]:
            hs = [(k, unb64(v)) for k, v in (r.get("h") or [])]
            futs.append(p.send(o["topic"], key=unb64(r.get("k")), value=unb64(r.get("v")), partition=r["p"],
                               timestamp_ms=r.get("ts"), headers=hs))
        p.flush(timeout=20)
        out = []
        for f in futs:
            md = f.get(timeout=20)
            out.append({"p": md.partition, "o": md.offset, "ts": md.timestamp})
        return {"records": out}
    finally:
        p.close(timeout=5)


def consumer():
    return KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", request_timeout_ms=20000, api_version_auto_timeout_ms=10000)


def consume(o):
    c = consumer()
    try:
        tp = TopicPartition(o["topic"], o["p"])
        c.assign([tp])
        c.seek(tp, o["offset"])
        out = []
        deadline = time.time() + o.get("timeout", 20)
        while len(out) < o["n"] and time.time() < deadline:
            for recs in c.poll(timeout_ms=200, max_records=o["n"] - len(out)).values():
                for r in recs:
                    out.append({"p": r.partition, "o": r.offset, "k": b64(r.key), "v": b64(r.value),
                                "h": [[k, b64(v)] for k, v in r.headers], "ts": r.timestamp,
                                "tstype": r.timestamp_type})
        return {"records": out}
    finally:
        c.close(autocommit=False)


def offsets(o):
    c = consumer()
    try:
        tp = TopicPartition(o["topic"], o["p"])
        res = {"earliest": c.beginning_offsets([tp])[tp], "latest": c.end_offsets([tp])[tp], "times": []}
        for ts in o.get("times") or []:
            got = c.offsets_for_times({tp: ts})[tp]
            res["times"].append({"offset": -1, "ts": -1} if got is None else {"offset": got.offset, "ts": got.timestamp})
        return res
    finally:
        c.close(autocommit=False)


def admin():
    return KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=20000)


def create(o):
    a = admin()
    try:
        errs = {}
        # One request per topic: kafka-python raises on the first error in a reply.
        for t in o["topics"]:
            try:
                a.create_topics([NewTopic(t["name"], t["partitions"], t.get("rf", 1))], timeout_ms=10000)
                errs[t["name"]] = 0
            except KafkaError as e:
                if getattr(e, "errno", None) is None:
                    raise
                errs[t["name"]] = e.errno
        return {"errors": errs}
    finally:
        a.close()


def delete(o):
    a = admin()
    try:
        errs = {}
        for n in o["names"]:
            try:
                a.delete_topics([n], timeout_ms=10000)
                errs[n] = 0
            except KafkaError as e:
                if getattr(e, "errno", None) is None:
                    raise
                errs[n] = e.errno
        return {"errors": errs}
    finally:
        a.close()


def metadata(o):
    a = admin()
    try:
        cl = a.describe_cluster()
        topics = {}
        for t in a.describe_topics():
            if t["error_code"] != 0:
                raise RuntimeError("metadata: topic %s error %d" % (t["topic"], t["error_code"]))
            topics[t["topic"]] = {str(p["partition"]): {"leader": p["leader"], "replicas": p["replicas"], "isr": p["isr"]}
                                  for p in t["partitions"]}
        return {"brokers": [{"id": b["node_id"], "host": b["host"], "port": b["port"]} for b in cl["brokers"]],
                "controller": cl["controller_id"], "topics": topics}
    finally:
        a.close()


if __name__ == "__main__":
    main("kp.py", {"produce": produce, "consume": consume, "offsets": offsets, "create": create,
                   "delete": delete, "metadata": metadata})
