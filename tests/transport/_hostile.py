"""Tools for tests/transport/test_hostile_packets.py: the net channel's wire format as
Python `struct`s (native/src/transport/net/packet.h), a capture of real uccl packets on
loopback (AF_PACKET, needs root), their verbatim replay (a raw IP socket), the UDP sockets a
process holds (with the kernel's per-socket drop counts), and the ranks' side of the
handshake with the attacker, which runs in the pytest process and talks to the ranks
through files in a per-run folder."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

# ---- wire format (packet.h; the host's byte order, little-endian here) -----------

MAGIC, VERSION = 0x4355, 3
DATA, ACK = 1, 2
OP_WRITE, OP_SEND, OP_READ_REQ, OP_READ_RESP, OP_ERROR, OP_NOP = 1, 2, 3, 4, 5, 6
FLAG_IMM, FLAG_LAST = 1, 2
COMMON = struct.Struct("<HBBHHIII")            # magic version type src dst src_nonce dst_nonce auth
DATA_WIRE = struct.Struct("<HBBHHIII IIIBBHIQQQ")  # + seq msg index op flags path imm total a b
ACK_FIXED = struct.Struct("<HBBHHIII HHQQQQ")     # + echo_path hold_us cum_ack echo_seq rejects sent_ns
assert COMMON.size == 20 and DATA_WIRE.size == 64 and ACK_FIXED.size == 56

# Drop reasons, as drops.h names them.
MALFORMED = "net: malformed packet"
BAD_VERSION = "net: unsupported wire version"
MISDIRECTED = "net: misdirected or stale packet"
UNKNOWN_CONN = "net: unknown connection"
STALE_PEER = "net: stale peer instance"
BAD_AUTH = "net: wrong job secret"
DUPLICATE = "net: duplicate packet"
STALE_ACK = "net: stale ack"
OUT_OF_BOUNDS = "net: write outside a registered region"


@dataclass
class Header:
    """The common header of a datagram (None if it is too short to have one)."""
    magic: int
    version: int
    type: int
    src: int
    dst: int
    src_nonce: int
    dst_nonce: int
    auth: int

    @staticmethod
    def of(payload: bytes) -> Optional["Header"]:
        return Header(*COMMON.unpack_from(payload)) if len(payload) >= COMMON.size else None

    def pack(self) -> bytes:
        return COMMON.pack(self.magic, self.version, self.type, self.src, self.dst, self.src_nonce, self.dst_nonce,
                           self.auth)


def with_common(payload: bytes, **fields) -> bytes:
    """`payload` with some common-header fields replaced (the rest verbatim)."""
    h = Header.of(payload)
    for k, v in fields.items():
        setattr(h, k, v)
    return h.pack() + payload[COMMON.size:]


def data_packet(common: Header, seq: int, msg: int, op: int, *, index: int = 0, flags: int = FLAG_LAST,
                path: int = 0, imm: int = 0, total: int = 0, a: int = 0, b: int = 0, payload: bytes = b"") -> bytes:
    """A data packet under `common` (its type set to data); every field as given, masked to its width."""
    c = common
    return DATA_WIRE.pack(c.magic, c.version, DATA, c.src, c.dst, c.src_nonce, c.dst_nonce, c.auth,
                          seq & 0xFFFFFFFF, msg & 0xFFFFFFFF, index & 0xFFFFFFFF, op, flags, path & 0xFFFF,
                          imm & 0xFFFFFFFF, total & (2**64 - 1), a & (2**64 - 1), b & (2**64 - 1)) + payload


def ack_packet(common: Header, *, echo_path: int = 0, cum_ack: int = 0, echo_seq: int = 0, rejects: int = 0,
               sent_ns: int = 0, sack: tuple = ()) -> bytes:
    c = common
    return ACK_FIXED.pack(c.magic, c.version, ACK, c.src, c.dst, c.src_nonce, c.dst_nonce, c.auth, echo_path, 0,
                          cum_ack, echo_seq, rejects, sent_ns) + b"".join(struct.pack("<Q", w) for w in sack)


def data_fields(payload: bytes) -> dict:
    names = ("seq", "msg", "index", "op", "flags", "path", "imm", "total", "a", "b")
    return dict(zip(names, DATA_WIRE.unpack_from(payload)[8:]))


# ---- where a rank listens ----------------------------------------------------------

def net_address(ep) -> tuple:
    """(ip, ports, nonce) from an endpoint's published descriptor (UDP datapath blob)."""
    d = ep._native.descriptor()
    at = d.index(struct.pack("<I", 0x55445031))
    nonce = struct.unpack_from("<I", d, at - 4)[0]
    ip = socket.inet_ntoa(d[at + 4:at + 8])
    (n,) = struct.unpack_from("<H", d, at + 8)
    ports = [socket.ntohs(p) for p in struct.unpack_from(f"<{n}H", d, at + 10)]
    return ip, ports, nonce


def udp_sockets(pid: int) -> dict:
    """The UDP sockets process `pid` holds: {local port: kernel drop count} (from /proc:
    the process's socket inodes, looked up in its namespace's /proc/PID/net/udp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = {}
    with open(f"/proc/{pid}/net/udp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[9] in inodes:
                out[int(cols[1].split(":")[1], 16)] = int(cols[12])
    return out


# ---- capture and replay on loopback ------------------------------------------------

ETH_P_ALL, ETH_P_IP, PACKET_HOST = 0x0003, 0x0800, 0


@dataclass
class Captured:
    frame: bytes      # the whole frame as it crossed lo
    dst_port: int
    payload: bytes    # the uccl datagram


class LoopbackCapture:
    """Frames on lo addressed to one of `ports` (each counted once: the receive side)."""

    def __init__(self, ports) -> None:
        self.ports = set(ports)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)

    def take(self, want, count: int, deadline_s: float) -> list:
        """Up to `count` captured frames for which want(Captured) holds, within deadline_s."""
        got, end = [], time.monotonic() + deadline_s
        while len(got) < count and time.monotonic() < end:
            try:
                frame, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            if addr[2] != PACKET_HOST or len(frame) < 14 + 20 + 8:
                continue
            if struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP or frame[14 + 9] != socket.IPPROTO_UDP:
                continue
            ihl = (frame[14] & 0xF) * 4
            udp = 14 + ihl
            dport = struct.unpack_from("!H", frame, udp + 2)[0]
            if dport not in self.ports:
                continue
            c = Captured(frame, dport, frame[udp + 8:])
            if want(c):
                got.append(c)
        return got

    def close(self) -> None:
        self.sock.close()


def segments(datagram: bytes) -> list:
    """The uccl packets in a captured datagram. Over lo a batch sent with UDP GSO crosses
    as one datagram (the receiver splits it by segment size): every segment but the last
    has the same length and each starts with the same 20-byte common header."""
    if len(datagram) < DATA_WIRE.size or Header.of(datagram).type != DATA:
        return [datagram]
    seg = datagram.find(datagram[:COMMON.size], DATA_WIRE.size)
    if seg < 0:
        return [datagram]
    return [datagram[i:i + seg] for i in range(0, len(datagram), seg)]


class FrameInjector:
    """Sends captured packets again, verbatim, from their original source address and port
    (a raw IP socket: the kernel takes them as if their sender had sent them again); a
    GSO batch goes out as the packets it carries. The IP header is the captured one (the
    kernel fills in its length and checksum); the UDP checksum is left out (0: none)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, frame: bytes) -> list:
        """Sends the uccl packets of a captured frame; returns them."""
        ip = frame[14:]
        ihl = (ip[0] & 0xF) * 4
        dst = socket.inet_ntoa(ip[16:20])
        pkts = segments(ip[ihl + 8:])
        for p in pkts:
            udp = ip[ihl:ihl + 4] + struct.pack("!HH", 8 + len(p), 0)
            self.sock.sendto(ip[:ihl] + udp + p, (dst, 0))
        return pkts

    def close(self) -> None:
        self.sock.close()


# ---- the ranks' side of the handshake ------------------------------------------------

def publish(folder: str, name: str, value) -> None:
    tmp = os.path.join(folder, f".{name}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, os.path.join(folder, name))


def read(folder: str, name: str, timeout: float = 60.0):
    """The JSON another party published under `name`; waits for it, at most `timeout` s."""
    path, end = os.path.join(folder, name), time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"{name} did not appear in {folder} within {timeout:.0f} s")
        time.sleep(0.02)
    with open(path) as f:
        return json.load(f)


def present(folder: str, name: str) -> bool:
    return os.path.exists(os.path.join(folder, name))


# Memory each rank exposes: a window for the job's own writes with guard bytes around
# it (outside the registration), a region that grants remote write but that nobody
# writes, and one that grants only remote read.
GUARD, INBOX, CANARY, READONLY = 4096, 256 << 10, 64 << 10, 64 << 10
GUARD_BYTE, CANARY_BYTE, READONLY_BYTE = 0x5A, 0xA5, 0x3C


class Regions:
    def __init__(self, ep) -> None:
        self.arena = np.full(GUARD + INBOX + GUARD, GUARD_BYTE, np.uint8)
        self.inbox = ep.register(self.arena[GUARD:GUARD + INBOX], "w")
        self.canary = ep.register(np.full(CANARY, CANARY_BYTE, np.uint8), "w")
        self.readonly = ep.register(np.full(READONLY, READONLY_BYTE, np.uint8), "r")

    def keys(self) -> dict:
        return {"inbox": int(self.inbox.key), "canary": int(self.canary.key), "readonly": int(self.readonly.key)}

    def untouched(self) -> list:
        """What changed where nothing may change: the guards, the canary, the read-only region."""
        bad = []
        for name, buf, byte in (("guard before the inbox", self.arena[:GUARD], GUARD_BYTE),
                                ("guard after the inbox", self.arena[GUARD + INBOX:], GUARD_BYTE),
                                ("canary region", self.canary.buffer, CANARY_BYTE),
                                ("read-only region", self.readonly.buffer, READONLY_BYTE)):
            diff = np.flatnonzero(np.asarray(buf) != byte)
            if diff.size:
                bad.append(f"{name}: {diff.size} bytes changed, first at offset {int(diff[0])}")
        return bad


def pattern(writer: int, it: int) -> np.ndarray:
    return np.random.default_rng(7919 * it + writer).integers(0, 256, INBOX, dtype=np.uint8)
