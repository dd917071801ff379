#!/usr/bin/env python3
"""Pipelined GETs per second from one Python client, jnhp or redis-py:

    pipelined_gets.py jnhp|redis HOST:PORT SECONDS DEPTH KEYS

Stores KEYS names (64-byte values) first, then runs pipelines of DEPTH
GETs of them, round robin, for SECONDS; prints GETs per second."""

import sys
import time

kind, addr, seconds, depth, keys = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
host, port = addr.rsplit(":", 1)
names = [f"key:{i}" for i in range(keys)]
value = b"v" * 64

if kind == "jnhp":
    import jnhp

    client = jnhp.Client(addr, timeout=30)
    p = client.pipeline()
    for n in names:
        p.store(n, value)
    p.execute()
    pipeline = client.pipeline
else:
    import redis

    client = redis.Redis(host=host, port=int(port))
    client.flushall()
    p = client.pipeline(transaction=False)
    for n in names:
        p.set(n, value)
    p.execute()

    def pipeline():
        return client.pipeline(transaction=False)

done = 0
i = 0
deadline = time.perf_counter() + seconds
start = time.perf_counter()
while time.perf_counter() < deadline:
    p = pipeline()
    for _ in range(depth):
        p.get(names[i])
        i = (i + 1) % keys
    answers = p.execute()
    assert answers[0] == value, answers[0]
    done += depth
print(f"{done / (time.perf_counter() - start):.0f}")
