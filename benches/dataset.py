#!/usr/bin/env python3
"""Writes RESP commands for a deterministic, cache-like data set to stdout, for
`redis-cli --pipe`: session-like JSON strings, counters, small and large hashes,
lists, sets (some intsets), sorted sets and a few large values, over 2 databases.
Usage: dataset.py --keys N [--seed S]. About 300 bytes of RDB per key."""
import argparse
import random
import sys


def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    r = random.Random(a.seed)
    w = sys.stdout.buffer
    words = [("w%x" % r.getrandbits(20)) for _ in range(4000)]
    buf = []
    db = 0
    for i in range(a.keys):
        if i == a.keys // 2:
            buf.append(cmd("SELECT", 1))
            db = 1
        k = r.random()
        if k < 0.45:
            v = '{"user":%d,"name":"%s %s","cart":[%s],"token":"%032x","ttl":3600}' % (
                r.getrandbits(24), r.choice(words), r.choice(words),
                ",".join(str(r.getrandbits(16)) for _ in range(r.randint(0, 8))),
                r.getrandbits(128))
            buf.append(cmd("SET", "session:%d" % i, v))
        elif k < 0.55:
            buf.append(cmd("SET", "counter:%d" % i, r.getrandbits(31)))
        elif k < 0.70:
            n = r.randint(3, 20) if r.random() < 0.9 else r.randint(200, 600)
            args = ["HSET", "user:%d" % i]
            for f in range(n):
                args += ["f%d" % f, r.choice(words) * r.randint(1, 3)]
            buf.append(cmd(*args))
        elif k < 0.80:
            n = r.randint(5, 40) if r.random() < 0.9 else r.randint(300, 1000)
            buf.append(cmd("RPUSH", "events:%d" % i, *["%s:%d" % (r.choice(words), r.getrandbits(20)) for _ in range(n)]))
        elif k < 0.88:
            if r.random() < 0.5:
                members = [r.getrandbits(30) for _ in range(r.randint(5, 50))]
            else:
                members = [r.choice(words) for _ in range(r.randint(5, 50))]
            buf.append(cmd("SADD", "tags:%d" % i, *members))
        elif k < 0.97:
            n = r.randint(5, 50) if r.random() < 0.9 else r.randint(200, 800)
            args = ["ZADD", "board:%d" % i]
            for _ in range(n):
                args += [r.random() * 1000, "%s%d" % (r.choice(words), r.getrandbits(12))]
            buf.append(cmd(*args))
        else:
            blob = bytes(r.getrandbits(8) for _ in range(256)) * r.randint(4, 40)
            buf.append(cmd("SET", "blob:%d" % i, blob))
        if len(buf) >= 2000:
            w.write(b"".join(buf))
            buf = []
    w.write(b"".join(buf))


if __name__ == "__main__":
    main()
