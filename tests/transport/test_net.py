"""The net channel: reliable multipath UDP. Over loopback (UCCL_TRANSPORT=net) and
between network namespaces joined by veth, with the kernel's own loss (nftables)
and rate limits (tc tbf). Every byte is checked; speed is for perf/, not here."""

import os
import pickle
import socket
import struct

import numpy as np
import pytest

from uccl.fabric.netns import list_namespaces
from uccl.testing import netns
from uccl.errors import AccessError, PeerFailureError
from uccl.testing import run_ranks
from uccl.transport import Endpoint

NET = {"UCCL_TRANSPORT": "net"}
WORKERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_net_workers.py")
SIZES = [0, 1, 4095, (1 << 20) + 3, 64 << 20]


# ---- over loopback --------------------------------------------------------------

def refused_writes(ctx):
    """Over the net the remote table is checked at the receiver: refused writes fail
    their completion with an AccessError naming both ranks, and touch nothing."""
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 1:
        target = ep.register(np.full(64, 0xAB, np.uint8), "w")
        readonly = ep.register(np.full(64, 0xAB, np.uint8), "r")
        ctx.bootstrap.broadcast(pickle.dumps((target.key, readonly.key)), root=1)
        ctx.bootstrap.barrier()
        # only the last, valid write (of ones) landed; the refused ones (of twos) did not
        assert (target.buffer == 1).all() and (readonly.buffer == 0xAB).all()
        assert not ep.poll(), "a refused write must not reach the completion queue"
        drops = ep.stats()["drops"]
        assert drops.get("net: write outside a registered region", 0) >= 3, drops
        assert ep.refused_by_us(0) == 4, ep.refused_by_us(0)  # three writes and the read
        return "ok"
    w_key, r_key = pickle.loads(ctx.bootstrap.broadcast(None, root=1))
    src = ep.register(np.full(128, 2, np.uint8), "")
    msgs = []
    for kwargs, needle in (({"remote_key": w_key, "length": 65}, "outside"),
                           ({"remote_key": w_key ^ (1 << 40), "length": 8}, "not registered"),
                           ({"remote_key": r_key, "length": 8}, "does not grant remote write")):
        key = kwargs.pop("remote_key")
        with pytest.raises(AccessError) as info:
            ep.write(1, src, key, imm=1, **kwargs).wait(timeout=30)
        assert "rank 0" in str(info.value) and "rank 1" in str(info.value) and needle in str(info.value)
        msgs.append(str(info.value))
    with pytest.raises(AccessError, match="does not grant remote read"):
        ep.read(1, src, w_key, length=8).wait(timeout=30)
    ep.write(1, ep.register(np.ones(64, np.uint8), ""), w_key).wait(timeout=30)  # the flow still works
    ctx.bootstrap.barrier()
    return msgs


def test_refused_writes_fail_with_access_error():
    msgs, ok = run_ranks(refused_writes, 2, env=NET)
    assert ok == "ok" and len(msgs) == 3


def dying_peer(ctx):
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 1:
        os._exit(3)
    with pytest.raises(PeerFailureError) as info:
        ep.recv(1, np.zeros(4)).wait(timeout=60)
    return str(info.value)


def test_silent_dead_peer_is_detected_by_probes():
    import time

    start = time.monotonic()
    msg, _ = run_ranks(dying_peer, 2, env={**NET, "UCCL_MAX_RETRIES": "8"}, timeout=90, may_die=(1,))
    assert "rank 0" in msg and "rank 1" in msg
    assert time.monotonic() - start < 45  # the wait's own timeout was 60 s


def _net_address(ep):
    """(ip, ports, nonce) from an endpoint's published descriptor (UDP datapath blob)."""
    d = ep._native.descriptor()
    at = d.index(struct.pack("<I", 0x55445031))
    nonce = struct.unpack_from("<I", d, at - 4)[0]
    ip = socket.inet_ntoa(d[at + 4:at + 8])
    (n,) = struct.unpack_from("<H", d, at + 8)
    ports = [socket.ntohs(p) for p in struct.unpack_from(f"<{n}H", d, at + 10)]
    return ip, ports, nonce


def strangers(ctx):
    """Garbage, a wrong secret, an unknown rank and a stale instance: dropped and counted;
    the real traffic that follows is intact."""
    ep = Endpoint(ctx.bootstrap)
    addrs = [pickle.loads(b) for b in ctx.bootstrap.allgather(pickle.dumps(_net_address(ep)))]
    ctx.bootstrap.barrier()
    if ctx.rank == 0:
        ip, ports, nonce = addrs[1]
        _, _, my_nonce = addrs[0]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        common = lambda src, dst_nonce, src_nonce, auth: struct.pack(  # noqa: E731  (packet.h CommonHeader)
            "<HBBHHIII", 0x4355, 3, 1, src, 1, src_nonce, dst_nonce, auth)  # version 3 (kVersion)
        pkts = [b"\x00" * 7, os.urandom(200),
                common(0, nonce, my_nonce, 0x1234) + bytes(44),       # wrong secret
                common(5, nonce, my_nonce, 0) + bytes(44),            # rank 5 is nobody we know
                common(0, nonce ^ 1, my_nonce, 0) + bytes(44),        # an earlier instance of rank 1
                common(0, nonce, my_nonce ^ 1, 0) + bytes(44)]        # an earlier instance of rank 0
        for p in pkts:
            for port in ports[:2]:
                s.sendto(p, (ip, port))
    ctx.bootstrap.barrier()
    size = (1 << 20) + 3
    inbox = ep.register(np.zeros(size, np.uint8), "w")
    keys = [int(k) for k in ctx.bootstrap.allgather(str(inbox.key).encode())]
    data = np.random.default_rng(ctx.rank).integers(0, 256, size, dtype=np.uint8)
    ep.write(1 - ctx.rank, ep.register(data, ""), keys[1 - ctx.rank], imm=5).wait(30)
    ep.wait_remote_write(1 - ctx.rank, timeout=30)
    assert np.array_equal(inbox.buffer, np.random.default_rng(1 - ctx.rank).integers(0, 256, size, dtype=np.uint8))
    ctx.bootstrap.barrier()
    return ep.stats()["drops"]


def test_packets_from_strangers_are_dropped_and_counted():
    _, drops = run_ranks(strangers, 2, env=NET)
    assert drops.get("net: malformed packet", 0) >= 4
    assert drops.get("net: wrong job secret", 0) >= 2
    assert drops.get("net: unknown connection", 0) >= 2
    assert drops.get("net: misdirected or stale packet", 0) >= 2
    assert drops.get("net: stale peer instance", 0) >= 2


def stats_and_paths(ctx, sizes):
    from test_exchange import exchange_writes  # noqa: F401  (same process layout as the shm tests)

    ep = Endpoint(ctx.bootstrap)
    peer = 1 - ctx.rank
    size = sizes[0]
    inbox = ep.register(np.zeros(size, np.uint8), "w")
    key = [int(k) for k in ctx.bootstrap.allgather(str(inbox.key).encode())][peer]
    data = ep.register(np.full(size, ctx.rank + 1, np.uint8), "")
    ep.write(peer, data, key, imm=1).wait(30)
    ep.wait_remote_write(peer, timeout=30)
    assert (inbox.buffer == peer + 1).all()
    ctx.bootstrap.barrier()
    return ep.stats()["peers"][peer]["net"]


# Which algorithm ran, and with what target, seen from what stats() reports: each
# path's final window after a transfer. stats() names neither the algorithm nor the
# target, so the tests read them from the windows' growth, which the algorithms fix
# (native/src/transport/net/cc/; a full packet's wire bytes are the mtu):
#   cubic in slow start adds every byte acked: on a path without loss, cwnd = 10 mtu + acked;
#   swift below its target adds mtu * acked / cwnd per ack: cwnd^2 grows by 2 mtu acked
#   plus at most about a packet^2 per ack, so (16 mtu)^2 + 2 mtu acked <= cwnd^2 while it
#   never decreases, and cwnd^2 <= (16 mtu)^2 + 8 mtu bytes_sent always (room included).
BUSY_PATH_PKTS = 100  # paths with fewer packets are left out: too little growth to tell apart


def _mtu() -> int:
    from uccl.config import Config

    return Config.from_env().mtu


def _clean_busy_paths(net) -> list:
    return [p for p in net["paths"]
            if p["packets_sent"] >= BUSY_PATH_PKTS and not (p["losses"] or p["timeouts"] or p["retransmits"])]


def _additive_floor(path, mtu: int) -> float:
    """The least window swift reaches when it never decreases (always below its target)."""
    return ((16 * mtu) ** 2 + 2 * mtu * path["bytes_sent"]) ** 0.5


def _swift_ceiling(path, mtu: int) -> float:
    """The most window swift can reach on a path, whatever happened on it."""
    return ((16 * mtu) ** 2 + 8 * mtu * path["bytes_sent"]) ** 0.5


@pytest.mark.parametrize("paths,cc", [(1, "swift"), (16, "swift"), (4, "cubic")])
def test_stats_per_path_and_config(paths, cc):
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    net, _ = run_ranks(stats_and_paths, 2, ([4 << 20],), env={**NET, "UCCL_NUM_PATHS": paths, "UCCL_CC": cc})
    assert len(net["paths"]) == paths
    used = [p for p in net["paths"] if p["packets_sent"] > 0]
    assert len(used) == paths if paths <= 4 else len(used) > paths // 2  # packets are sprayed
    assert net["packets_sent"] >= (4 << 20) // 1500
    assert sum(p["packets_sent"] for p in net["paths"]) == net["packets_sent"]
    assert net["srtt_us"] > 0 and all(k in net["paths"][0] for k in ("cwnd_bytes", "srtt_us", "retransmits"))
    # The algorithm asked for is the one that ran (see the window rules above).
    mtu = _mtu()
    busy = [p for p in net["paths"] if p["packets_sent"] >= BUSY_PATH_PKTS]
    assert busy, f"no path carried {BUSY_PATH_PKTS}+ packets: {net['paths']}"
    if cc == "cubic":
        # Loopback may drop a slow-start burst (full socket buffers); a path without loss
        # shows slow start exactly, and some path outgrew anything swift can reach.
        for p in _clean_busy_paths(net):
            assert p["cwnd_bytes"] >= 10 * mtu + 0.9 * p["bytes_sent"], f"not cubic's slow start: {p}"
        assert any(p["cwnd_bytes"] > _swift_ceiling(p, mtu) for p in busy), \
            f"no window grew faster than swift's can: {busy}"
    else:
        for p in busy:  # additive: cwnd ~ sqrt(acked), far below slow start's cwnd ~ acked
            assert p["cwnd_bytes"] <= _swift_ceiling(p, mtu), f"a window grown faster than swift's: {p}"


@pytest.mark.parametrize("target_us", [1, 1_000_000])
def test_swift_target_is_a_setting(target_us):
    """A target no delay reaches (1 s) leaves swift growing additively and never
    decreasing; a target every delay exceeds (1 us) makes it decrease (its flow scaling
    caps the window near 64 packets then), far below that additive floor."""
    import sys

    from uccl.config import Config

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    size = 16 << 20  # ~11,000 packets on one path: the two windows differ several times over
    net, _ = run_ranks(stats_and_paths, 2, ([size],),
                       env={**NET, "UCCL_CC": "swift", "UCCL_NUM_PATHS": 1, "UCCL_SWIFT_TARGET_US": target_us})
    assert net["packets_sent"] >= size // 1500
    (path,) = net["paths"]
    floor = _additive_floor(path, _mtu())
    if target_us == 1_000_000:
        # A timeout halves the window whatever the target (and the floor's argument then
        # holds for the halved window): the one decrease allowed here.
        floor *= 0.5 ** path["timeouts"]
        assert path["cwnd_bytes"] >= 0.9 * floor, f"swift decreased below a 1 s target: {path}, floor {floor:.0f}"
    else:
        assert path["cwnd_bytes"] < 0.5 * floor, f"swift never decreased above a 1 us target: {path}, " \
                                                f"additive floor {floor:.0f}"
    os.environ["UCCL_SWIFT_TARGET_US"] = "0"
    try:
        with pytest.raises(ValueError, match="UCCL_SWIFT_TARGET_US"):
            Config.from_env()
    finally:
        del os.environ["UCCL_SWIFT_TARGET_US"]


# ---- between network namespaces ---------------------------------------------------

@pytest.fixture
def pair():
    ok, why = netns.available()
    if not ok:
        pytest.skip(f"network namespaces unavailable: {why}")
    p = netns.NetnsPair()
    p.up()
    try:
        yield p
    finally:
        p.down()
        assert not set(p.names) & set(list_namespaces())


@pytest.mark.netns
def test_all_sizes_between_namespaces(pair):
    res = netns.run_pair(pair, f"{WORKERS}:exchange", {"sizes": SIZES}, timeout=240)
    for r in res:
        assert r["bad"] == [] and r["paths"] == 16


@pytest.mark.netns
@pytest.mark.parametrize("loss", [1.0, 5.0])
def test_kernel_injected_loss(pair, loss):
    pair.segment_in_kernel(True)  # drop single packets, not whole GSO trains
    pair.set_loss(loss)
    res = netns.run_pair(pair, f"{WORKERS}:exchange", {"sizes": [1, 4095, (1 << 20) + 3, 16 << 20], "rounds": 2},
                          timeout=280)
    for r in res:
        assert r["bad"] == []
        assert r["retransmits"] > 0  # the loss was real and repaired


@pytest.mark.netns
def test_through_a_tbf_rate_limit(pair):
    pair.set_rate("200mbit")
    res = netns.run_pair(pair, f"{WORKERS}:exchange", {"sizes": [4095, 8 << 20]}, timeout=240)
    for r in res:
        assert r["bad"] == []


@pytest.mark.netns
def test_peer_killed_mid_transfer(pair):
    res = netns.run_pair(pair, f"{WORKERS}:killed_mid_transfer", {"size": 16 << 20},
                          env={"UCCL_MAX_RETRIES": "10"}, timeout=120, may_die=(1,))
    r = res[0]
    assert r["error"] == "PeerFailureError", r
    assert "rank 0" in r["message"] and "rank 1" in r["message"]
    assert r["seconds"] < 60  # within the wait's own timeout


@pytest.mark.netns
def test_two_flows_share_a_tbf_bottleneck(pair):
    """Two uccl jobs through one 200 Mbit/s tbf converge to roughly equal shares
    without collapsing: loose ratios only (speed itself is measured in perf/)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "perf", "_netns_fair.py")
    spec = importlib.util.spec_from_file_location("_netns_fair", path)
    fair = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fair)
    r = fair.measure("200mbit", seconds=3.0, pair=pair)
    assert r["ratio"] <= 2.0, r          # each flow within 2x of the other (perf reports ~1.0)
    assert r["sum_of_link"] >= 0.5, r    # the link stays busy (perf reports ~0.9)
