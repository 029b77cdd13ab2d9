#!/usr/bin/env python3
"""Bounded write load and RPO probe for benches/daemon-rpo.sh.

Writes RATE SETs per second (pipelined, in 10 ms slices) for SECONDS, and every
200 ms a probe: SET rpo:probe, then WAIT 1 10000 on its own connection. The time
WAIT takes is how long that write took to become durable (the daemon ACKs only
what storage holds): the RPO at that moment. Prints p50/p99 and the rate reached.
"""
import socket, sys, threading, time

port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")

def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

def read_reply(f):
    line = f.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        if n >= 0:
            f.read(n + 2)
    return line

stop = time.time() + seconds
written = 0

def load():
    global written
    s, f = conn()
    per_slice = max(1, rate // 100)
    seq = 0
    nxt = time.time()
    while time.time() < stop:
        batch = b"".join(cmd("SET", "load:%d" % (seq + i % 50000), "v" * 64) for i in range(per_slice))
        s.sendall(batch)
        for _ in range(per_slice):
            read_reply(f)
        seq = (seq + per_slice) % 1000000
        written += per_slice
        nxt += 0.01
        delay = nxt - time.time()
        if delay > 0:
            time.sleep(delay)

t = threading.Thread(target=load)
t.start()
s, f = conn()
lat = []
timeouts = 0
while time.time() < stop:
    t0 = time.time()
    s.sendall(cmd("SET", "rpo:probe", repr(t0)) + cmd("WAIT", 1, 10000))
    read_reply(f)
    n = int(read_reply(f)[1:])
    dt = time.time() - t0
    if n >= 1:
        lat.append(dt)
    else:
        timeouts += 1
    time.sleep(max(0, 0.2 - dt))
t.join()
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print("writes %d in %.0fs (%.0f/s); probes %d, WAIT timeouts %d" % (written, seconds, written / seconds, len(lat), timeouts))
print("RPO (write -> durable) p50 %.3fs p99 %.3fs max %.3fs" % (pct(0.5), pct(0.99), lat[-1] if lat else float("nan")))
