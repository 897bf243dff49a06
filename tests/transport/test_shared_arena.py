"""Endpoint.alloc_shared: arena blocks that same-host peers write into with memcpy."""

import pickle

import numpy as np

from uccl.testing import run_ranks
from uccl.transport import Endpoint


def pattern(src: int, size: int) -> np.ndarray:
    return np.random.default_rng(src + size).integers(0, 256, size, dtype=np.uint8)


def writes_into_shared_blocks(ctx, size):
    ep = Endpoint(ctx.bootstrap)
    peers = [p for p in range(ctx.world_size) if p != ctx.rank]
    block = ep.alloc_shared(size * ctx.world_size)
    assert block is not None and len(block) == size * ctx.world_size
    inbox = np.frombuffer(block, dtype=np.uint8)
    mine = ep.register(inbox, "w")
    keys = [pickle.loads(b) for b in ctx.bootstrap.allgather(pickle.dumps(mine.key))]
    out = ep.register(pattern(ctx.rank, size), "")
    for p in peers:
        ep.write(p, out, keys[p], remote_offset=ctx.rank * size, imm=ctx.rank).wait(timeout=60)
    got = sorted(ep.wait_remote_write(timeout=60).imm for _ in peers)
    assert got == peers
    for p in peers:
        assert np.array_equal(inbox[p * size:(p + 1) * size], pattern(p, size)), f"rank {ctx.rank}: from {p}"
    ctx.bootstrap.barrier()
    # the arena is finite: a request beyond it is refused with None (callers fall back to their own memory)
    assert ep.alloc_shared(1 << 40) is None
    mine.deregister()
    ep.close()
    inbox[:] = 1  # the block outlives close(): it keeps the segment mapped
    return True


def test_peers_write_into_shared_blocks():
    assert all(run_ranks(writes_into_shared_blocks, 3, args=((1 << 20) + 8,), env={"UCCL_TRANSPORT": "shm"},
                         timeout=120))
