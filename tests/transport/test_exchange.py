"""Ranks exchange data over the transport; every byte is checked."""

import pickle

import numpy as np
import pytest

from uccl.testing import run_ranks
from uccl.transport import ANY_SOURCE, Endpoint

SIZES = [0, 1, 4095, (1 << 20) + 3, 64 << 20]


def pattern(src: int, dst: int, size: int) -> np.ndarray:
    return np.random.default_rng(1000 * src + dst + size).integers(0, 256, size, dtype=np.uint8)


def exchange_writes(ctx, sizes):
    ep = Endpoint(ctx.bootstrap)
    peers = [p for p in range(ctx.world_size) if p != ctx.rank]
    for size in sizes:
        inbox = {p: ep.register(np.zeros(size, np.uint8), "w") for p in peers}
        keys = [pickle.loads(b) for b in ctx.bootstrap.allgather(pickle.dumps({p: m.key for p, m in inbox.items()}))]
        for p in peers:
            out = ep.register(pattern(ctx.rank, p, size), "")
            ep.write(p, out, keys[p][ctx.rank], imm=size & 0xFFFFFFFF).wait()
            out.deregister()
        for _ in peers:
            c = ep.wait_remote_write(timeout=60)
            assert c.imm == size & 0xFFFFFFFF and c.len == size
        for p in peers:
            assert np.array_equal(inbox[p].buffer, pattern(p, ctx.rank, size)), f"size {size} from {p}"
        ctx.bootstrap.barrier()
        for m in inbox.values():
            m.deregister()
    return "ok"


def exchange_messages(ctx, sizes):
    ep = Endpoint(ctx.bootstrap)
    peers = [p for p in range(ctx.world_size) if p != ctx.rank]
    for size in sizes:
        recvs = {p: (np.zeros(size, np.uint8), None) for p in peers}
        recvs = {p: (buf, ep.recv(p, buf, tag=7)) for p, (buf, _) in recvs.items()}
        sends = [ep.send(p, pattern(ctx.rank, p, size), tag=7) for p in peers]
        for s in sends:
            s.wait(timeout=60)
        for p, (buf, req) in recvs.items():
            c = req.wait(timeout=60)
            assert c.peer == p and c.len == size
            assert np.array_equal(buf, pattern(p, ctx.rank, size)), f"size {size} from {p}"
    return "ok"


def one_sided_reads(ctx):
    ep = Endpoint(ctx.bootstrap)
    size = (1 << 20) + 3
    mine = ep.register(pattern(ctx.rank, ctx.rank, size), "r")
    keys = [int(k) for k in ctx.bootstrap.allgather(str(mine.key).encode())]
    peer = (ctx.rank + 1) % ctx.world_size
    dst = ep.register(np.zeros(size, np.uint8), "")
    ep.read(peer, dst, keys[peer]).wait()
    assert np.array_equal(dst.buffer, pattern(peer, peer, size))
    ctx.bootstrap.barrier()
    return "ok"


def tagged_and_any_source(ctx):
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 0:
        # Tags select messages; from one sender, same-tag messages keep their order.
        first, second, other = np.zeros(4, np.int32), np.zeros(4, np.int32), np.zeros(4, np.int32)
        r_other = ep.recv(1, other, tag=9)
        r1, r2 = ep.recv(1, first, tag=3), ep.recv(1, second, tag=3)
        for r in (r_other, r1, r2):
            r.wait(timeout=30)
        assert first.tolist() == [1] * 4 and second.tolist() == [2] * 4 and other.tolist() == [9] * 4
        seen = set()
        for _ in range(ctx.world_size - 1):
            buf = np.zeros(1, np.int64)
            c = ep.recv(ANY_SOURCE, buf, tag=5).wait(timeout=30)
            assert buf[0] == c.peer * 10
            seen.add(c.peer)
        assert seen == set(range(1, ctx.world_size))
    else:
        if ctx.rank == 1:
            for value, tag in ((1, 3), (2, 3), (9, 9)):
                ep.send(0, np.full(4, value, np.int32), tag=tag).wait()
        ep.send(0, np.array([ctx.rank * 10], np.int64), tag=5).wait()
    ctx.bootstrap.barrier()
    return "ok"


# "auto" picks shared memory on one host; "net" forces the net channel (UDP over loopback).
TRANSPORTS = [{}, {"UCCL_TRANSPORT": "net"}]
TRANSPORT_IDS = ["auto", "net"]


@pytest.mark.parametrize("env", TRANSPORTS, ids=TRANSPORT_IDS)
@pytest.mark.parametrize("world", [2, 4])
def test_one_sided_writes_all_sizes(world, env):
    assert run_ranks(exchange_writes, world, (SIZES,), env=env, timeout=240) == ["ok"] * world


@pytest.mark.parametrize("env", TRANSPORTS, ids=TRANSPORT_IDS)
@pytest.mark.parametrize("world", [2, 4])
def test_messages_all_sizes(world, env):
    assert run_ranks(exchange_messages, world, (SIZES,), env=env, timeout=240) == ["ok"] * world


@pytest.mark.parametrize("env", TRANSPORTS, ids=TRANSPORT_IDS)
def test_one_sided_reads(env):
    assert run_ranks(one_sided_reads, 3, env=env) == ["ok"] * 3


@pytest.mark.parametrize("env", TRANSPORTS, ids=TRANSPORT_IDS)
def test_tags_order_and_any_source(env):
    assert run_ranks(tagged_and_any_source, 4, env=env) == ["ok"] * 4


def test_channel_is_shared_memory_on_one_host():
    assert run_ranks(_channel_kinds, 2) == [["shm", "shm"]] * 2


def test_net_transport_forces_the_net_channel():
    kinds = run_ranks(_channel_kinds, 2, env={"UCCL_TRANSPORT": "net"})
    assert kinds == [["shm", "net"], ["net", "shm"]]  # a rank reaches itself through memory


def _channel_kinds(ctx):
    ep = Endpoint(ctx.bootstrap)
    return [ep.channel(p) for p in range(ctx.world_size)]
