"""Runs torch.distributed programs on local ranks with backend "uccl" next to a gloo group
over the same ranks, so every check compares uccl's result with gloo's on the same inputs."""

from __future__ import annotations

import datetime
import os
import tempfile
import uuid

import torch

from uccl.testing import run_ranks

TRANSPORTS = ["shm", "net"]


def transport_env(transport: str) -> dict:
    return {"UCCL_TRANSPORT": transport, "OMP_NUM_THREADS": "1"}


def init_url() -> str:
    return "file://" + os.path.join(tempfile.gettempdir(), f"uccl-dist-{uuid.uuid4().hex}")


def init(ctx, url: str, timeout: float = 60.0, backend: str = "uccl"):
    """Joins the default group (uccl) and returns (uccl group, gloo group over the same ranks)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=url, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=datetime.timedelta(seconds=timeout))
    gloo = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))
    return dist.group.WORLD, gloo


def assert_same(got, want, label: str) -> None:
    """Exact for integers and bools, float tolerance otherwise (reduction order differs)."""
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{label}: {len(got)} results, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{label}[{i}]")
        return
    assert got.dtype == want.dtype and got.shape == want.shape, \
        f"{label}: got {got.dtype}{tuple(got.shape)}, expected {want.dtype}{tuple(want.shape)}"
    if want.dtype.is_floating_point or want.dtype.is_complex:
        tol = {torch.float16: 2e-2, torch.bfloat16: 5e-2}.get(want.dtype, 1e-5)
        torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m: f"{label}: {m}")
    else:
        assert torch.equal(got, want), f"{label}: {got} != {want}"


def rand(shape, dtype: torch.dtype, seed: int, small: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g)
    if dtype.is_floating_point:
        # products over 4 ranks stay finite and well-conditioned
        return (torch.rand(shape, generator=g) + 0.5).to(dtype) if small else torch.randn(shape, generator=g).to(dtype)
    lo, hi = (0, 4) if dtype == torch.uint8 else ((-2, 3) if small else (-100, 100))
    return torch.randint(lo, hi, shape, generator=g).to(dtype)


def all_to_all_list(outs, ins, group, gloo) -> None:
    """dist.all_to_all, except on the gloo group: gloo in some torch releases (2.11) has no
    list all_to_all, so its reference goes through all_to_all_single (equal blocks)."""
    import torch.distributed as dist

    if group is not gloo:
        dist.all_to_all(outs, ins, group=group)
        return
    flat_out = torch.empty(sum(o.numel() for o in outs), dtype=outs[0].dtype, device=outs[0].device)
    dist.all_to_all_single(flat_out, torch.cat([t.reshape(-1) for t in ins]), group=group)
    for o, piece in zip(outs, flat_out.split([o.numel() for o in outs])):
        o.copy_(piece.view(o.shape))
