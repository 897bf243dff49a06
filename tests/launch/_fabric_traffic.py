"""Traffic for tests/launch/test_fabric.py, run inside a host namespace; prints one JSON line.

    tcp-sink ADDR PORT SECONDS        bytes received per second over the middle of the stream
    tcp-source ADDR PORT SECONDS      streams to ADDR:PORT
    udp-sink ADDR PORT SECONDS        counts datagrams until SECONDS pass with none
    udp-source ADDR PORT COUNT FLOWS  COUNT datagrams spread over FLOWS source ports, paced
"""

import json
import socket
import sys
import time


def tcp_sink(addr, port, seconds):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    print(json.dumps({"listening": True}), flush=True)
    conn, _ = srv.accept()
    buf = bytearray(1 << 16)
    start = time.monotonic()
    counted, t0, t1 = 0, start + seconds * 0.25, start + seconds * 0.85  # skip slow start and the tail
    while True:
        n = conn.recv_into(buf)
        now = time.monotonic()
        if not n or now > t1:
            break
        if now >= t0:
            counted += n
    print(json.dumps({"bytes_per_s": counted / (t1 - t0)}), flush=True)


def tcp_source(addr, port, seconds):
    for _ in range(50):
        try:
            s = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    data = b"x" * (1 << 16)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            s.sendall(data)
    except OSError:
        pass  # the sink stops reading first
    print(json.dumps({"done": True}), flush=True)


def udp_sink(addr, port, quiet):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((addr, port))
    print(json.dumps({"listening": True}), flush=True)
    s.settimeout(30)
    got = 0
    try:
        s.recv(2048)
        got = 1
        s.settimeout(quiet)
        while True:
            s.recv(2048)
            got += 1
    except socket.timeout:
        pass
    print(json.dumps({"received": got}), flush=True)


def udp_source(addr, port, count, flows):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    payload = b"u" * 1000
    for i in range(count):
        socks[i % flows].sendto(payload, (addr, port))
        if i % 50 == 49:
            time.sleep(0.002)  # ~20 MB/s: no queue anywhere overflows
    print(json.dumps({"sent": count}), flush=True)


if __name__ == "__main__":
    cmd, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rest = [float(x) for x in sys.argv[4:]]
    {"tcp-sink": lambda: tcp_sink(addr, port, rest[0]), "tcp-source": lambda: tcp_source(addr, port, rest[0]),
     "udp-sink": lambda: udp_sink(addr, port, rest[0]),
     "udp-source": lambda: udp_source(addr, port, int(rest[0]), int(rest[1]))}[cmd]()
