"""Shared main loop of the Kafka client drivers (kp.py: kafka-python 2.0.2,
ck.py: confluent-kafka 1.7.0 / librdkafka 2.0.2).

A driver reads one JSON array of operations on stdin, runs them in order and
prints one JSON result line per operation on stdout, prefixed "@@RESULT ",
then "@@OK <driver>". Library logs go to stderr. Byte strings (keys, values,
header values) travel as base64, null as null. An unexpected exception
prints a traceback to stderr and exits 1; errors the broker is expected to
return (topic exists, unknown topic) are results, as Kafka error codes.

Operations (fields beyond "op"):
  produce   topic, codec ("none", "gzip", ...), acks, records: [{p, k, v, h: [[key, v]], ts}]
            -> {records: [{p, o, ts}]} in input order (offset and timestamp from the ack)
  consume   topic, p, offset, n, timeout (s): assign() the partition, seek, read n records
            -> {records: [{p, o, k, v, h, ts, tstype}]}
  offsets   topic, p, times: [ms] -> {earliest, latest, times: [{offset, ts}]} (offset -1: none)
  create    topics: [{name, partitions, rf}] -> {errors: {name: code}}
  delete    names: [..] -> {errors: {name: code}}
  metadata  -> {brokers: [{id, host, port}], controller, topics: {name: {p: {leader, replicas, isr}}}}
Run by hand: echo '[{"op":"metadata"}]' | KAFKA_BOOTSTRAP=127.0.0.1:9092 /usr/bin/python3 kp.py
"""
import base64
import json
import logging
import os
import sys
import traceback

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def b64(b):
    if b is None:
        return None
    return base64.b64encode(bytes(b)).decode("ascii")


def unb64(s):
    if s is None:
        return None
    return base64.b64decode(s)


def main(name, ops_table):
    try:
        ops = json.load(sys.stdin)
        for o in ops:
            fn = ops_table.get(o["op"])
            if fn is None:
                raise ValueError("%s: unsupported op %r" % (name, o["op"]))
            res = fn(o)
            print("@@RESULT " + json.dumps(res, sort_keys=True), flush=True)
        print("@@OK " + name, flush=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.stdout.flush()
        sys.exit(1)
