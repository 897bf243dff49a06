"""One rank of tests/overlap/test_moe_fabric.py, started by `uccl-run --fabric` (one rank per
emulated host, so every peer is on the net channel): the correctness checks of test_moe.py
over torch.distributed's group, printing one line per rank when all passed."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.overlap import _moe_reference as ref  # noqa: E402
from tests.overlap.test_moe import E_PER_RANK, H, K, T, _check_dispatch_combine, expert  # noqa: E402


def main() -> None:
    from uccl.overlap.moe import Buffer

    torch.set_num_threads(1)
    dist.init_process_group(backend="uccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    ctx = SimpleNamespace(rank=rank, world_size=world)
    buf = Buffer(dist.group.WORLD, chunk_bytes=4096)
    kinds = {buf.wire.ep.channel(p) for p in range(world) if p != rank}
    for seed, kind in enumerate(ref.ROUTINGS):
        _check_dispatch_combine(buf, ctx, kind, torch.bfloat16 if seed % 2 else torch.float32, seed, T * 4, 2)
    E = E_PER_RANK * world
    for seed, kind in enumerate(ref.ROUTINGS):
        x, idx, w = ref.inputs(kind, rank, T * 4, H, E, K, seed, torch.float32)
        out = buf.dispatch_compute_combine(x, idx, w, lambda le, t: expert(rank, le, t), E)
        torch.testing.assert_close(out, ref.moe_output(x, idx, w, expert, E, world), rtol=1e-4, atol=1e-4)
    print(f"rank {rank} ok channels={sorted(kinds)}", flush=True)
    buf.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
