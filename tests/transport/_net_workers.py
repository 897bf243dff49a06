"""Rank functions run inside network namespaces by tests/transport/test_net.py
(through uccl.testing.netns.run_pair): each takes the bootstrap and returns JSON-able results."""

import os
import time

import numpy as np

from uccl.transport import Endpoint


def pattern(src: int, dst: int, size: int, salt: int = 0) -> np.ndarray:
    return np.random.default_rng(1000 * src + dst + size + 7 * salt).integers(0, 256, size, dtype=np.uint8)


def exchange(bs, sizes, rounds=1):
    """Both ranks write to and send to each other; every byte is checked."""
    ep = Endpoint(bs)
    peer = 1 - bs.rank
    assert ep.channel(peer) == "net"
    bad = []
    for size in sizes:
        for rnd in range(rounds):
            inbox = ep.register(np.zeros(size, np.uint8), "w")
            key = [int(k) for k in bs.allgather(str(inbox.key).encode())][peer]
            out = ep.register(pattern(bs.rank, peer, size, rnd), "")
            msg_in = np.zeros(size, np.uint8)
            r = ep.recv(peer, msg_in, tag=rnd)
            w = ep.write(peer, out, key, imm=size & 0xFFFFFFFF)
            s = ep.send(peer, pattern(bs.rank, peer, size, rnd + 100), tag=rnd)
            w.wait(120)
            s.wait(120)
            c = ep.wait_remote_write(peer, timeout=120)
            r.wait(120)
            if c.len != size or c.imm != size & 0xFFFFFFFF:
                bad.append(f"size {size}: completion {c}")
            if not np.array_equal(inbox.buffer, pattern(peer, bs.rank, size, rnd)):
                bad.append(f"size {size} round {rnd}: written bytes differ")
            if not np.array_equal(msg_in, pattern(peer, bs.rank, size, rnd + 100)):
                bad.append(f"size {size} round {rnd}: message bytes differ")
            bs.barrier()
            inbox.deregister()
            out.deregister()
    net = ep.stats()["peers"][peer]["net"]
    return {"bad": bad, "retransmits": net["retransmits"], "paths": len(net["paths"]),
            "drops": net["drops"], "sent": net["packets_sent"]}


def killed_mid_transfer(bs, size):
    """Rank 1 dies while rank 0 streams writes to it; rank 0 must raise, naming rank 1."""
    from uccl.errors import PeerFailureError, UcclTimeoutError

    ep = Endpoint(bs)
    peer = 1 - bs.rank
    inbox = ep.register(np.zeros(size, np.uint8), "w")
    key = [int(k) for k in bs.allgather(str(inbox.key).encode())][peer]
    if bs.rank == 1:
        bs.store.set("netns/receiving", b"1")
        time.sleep(0.3)  # let the transfer get going
        os._exit(9)
    bs.store.get("netns/receiving")
    src = ep.register(np.ones(size, np.uint8), "")
    start = time.monotonic()
    try:
        for _ in range(1000):
            ep.write(peer, src, key).wait(timeout=60)
    except (PeerFailureError, UcclTimeoutError) as exc:
        return {"error": type(exc).__name__, "message": str(exc), "seconds": time.monotonic() - start}
    return {"error": None}
