#!/usr/bin/env python3
# deploy/bench/mqtt-conn-memory.py N PORT USER PASSWORD API_URL ADMIN ADMIN_PASSWORD NODE
# Opens N idle MQTT 3.1.1 connections (CONNECT with a username and password, keep-alive
# 600 s, clean session, no subscription) to one RabbitMQ node's MQTT listener and prints
# the node's memory (management API, mem_used) before and after, per connection, as JSON.
# Bounded: N <= 20000, a 10 s socket timeout. Issue 16's capacity model (docs/cluster.md).
import base64, json, os, socket, struct, sys, time, urllib.request
n, port, user, pw = min(int(sys.argv[1]), 20000), int(sys.argv[2]), sys.argv[3], sys.argv[4]
api, auser, apw, node = sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
def mem():
    req = urllib.request.Request(f"{api}/api/nodes/{node}?memory=true")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{auser}:{apw}".encode()).decode())
    return json.load(urllib.request.urlopen(req))["mem_used"]
def s(x): b = x.encode(); return struct.pack("!H", len(b)) + b
def connect(cid):
    vh = s("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 600)
    body = vh + s(cid) + s(user) + s(pw)
    rem = len(body); enc = b""
    while True:
        d = rem % 128; rem //= 128
        enc += bytes([d | (0x80 if rem else 0)])
        if not rem: break
    k = socket.create_connection(("127.0.0.1", port), timeout=10); k.sendall(b"\x10" + enc + body)
    ack = k.recv(4)
    assert ack[:1] == b"\x20" and ack[3:4] == b"\x00", ack
    return k
time.sleep(6); m0 = mem()
socks = [connect(f"memprobe-{os.getpid()}-{i}") for i in range(n)]
time.sleep(12); m1 = mem()
print(json.dumps({"connections": n, "mem_before": m0, "mem_after": m1,
                  "bytes_per_connection": (m1 - m0) / n}))
for k in socks: k.close()
