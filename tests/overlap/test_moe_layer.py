"""MoELayer trains: its outputs and the gradients of inputs, router and experts (fused and
sequential paths) match a single-process reference layer that holds every expert."""

from __future__ import annotations

import pytest
import torch

from uccl.testing import run_ranks

HID, FFN, E_PER_RANK, TOPK, TOKENS = 32, 48, 2, 2, 24


def _params(num_experts: int):
    """The same router and experts on every rank (and in the reference), from one seed."""
    from uccl.overlap.moe.layer import Expert

    torch.manual_seed(1234)
    router = torch.nn.Linear(HID, num_experts, bias=False)
    experts = [Expert(HID, FFN) for _ in range(num_experts)]
    return router, experts


def _tokens(rank: int):
    g = torch.Generator().manual_seed(77 + rank)
    return torch.randn(TOKENS, HID, generator=g), torch.randn(TOKENS, HID, generator=g)


def reference(world: int):
    """One process, every expert: outputs and gradients for the whole global batch."""
    from uccl.overlap.moe.layer import route

    num_experts = E_PER_RANK * world
    router, experts = _params(num_experts)
    results = []
    loss = 0
    xs = []
    for r in range(world):
        x, g = _tokens(r)
        x.requires_grad_(True)
        idx, w = route(router(x), TOPK)
        out = torch.zeros(TOKENS, HID)
        for t in range(TOKENS):
            for j in range(TOPK):
                out[t] = out[t] + w[t, j] * experts[int(idx[t, j])](x[t:t + 1])[0]
        loss = loss + (out * g).sum()
        xs.append(x)
        results.append(out.detach())
    loss.backward()
    return results, [x.grad for x in xs], router.weight.grad, [[p.grad for p in e.parameters()] for e in experts]


def _layer_worker(ctx, fused):
    from uccl.overlap.moe import Buffer, MoELayer

    torch.set_num_threads(1)
    R, me = ctx.world_size, ctx.rank
    num_experts = E_PER_RANK * R
    layer = MoELayer(HID, FFN, num_experts, TOPK, buffer=Buffer(ctx.bootstrap, chunk_bytes=1024), fused=fused)
    router, experts = _params(num_experts)
    layer.router.load_state_dict(router.state_dict())
    for le in range(layer.local_experts):
        layer.experts[le].load_state_dict(experts[layer.first_expert + le].state_dict())
    x, g = _tokens(me)
    x.requires_grad_(True)
    out = layer(x)
    (out * g).sum().backward()
    expert_grads = [[p.grad.numpy() for p in e.parameters()] for e in layer.experts]
    layer.buffer.destroy()
    return out.detach().numpy(), x.grad.numpy(), layer.router.weight.grad.numpy(), expert_grads


@pytest.mark.parametrize("transport,world,fused", [("shm", 2, True), ("shm", 3, False),
                                                   pytest.param("net", 2, True, marks=pytest.mark.long)])
def test_layer_matches_single_process_reference(transport, world, fused):
    want_out, want_dx, want_router, want_experts = reference(world)
    got = run_ranks(_layer_worker, world, args=(fused,), env={"UCCL_TRANSPORT": transport, "OMP_NUM_THREADS": "1"},
                    timeout=120)
    close = dict(rtol=1e-4, atol=1e-5)
    router_sum = 0
    for r, (out, dx, router_grad, expert_grads) in enumerate(got):
        torch.testing.assert_close(torch.from_numpy(out), want_out[r], **close, msg=lambda m: f"rank {r} out: {m}")
        torch.testing.assert_close(torch.from_numpy(dx), want_dx[r], **close, msg=lambda m: f"rank {r} dx: {m}")
        router_sum = router_sum + torch.from_numpy(router_grad)
        for le, grads in enumerate(expert_grads):
            for p, (gp, wp) in enumerate(zip(grads, want_experts[r * E_PER_RANK + le])):
                torch.testing.assert_close(torch.from_numpy(gp), wp, **close,
                                           msg=lambda m: f"rank {r} expert {le} param {p}: {m}")
    # the router is data-parallel: its gradient is the sum over ranks of each rank's tokens
    torch.testing.assert_close(router_sum, want_router, **close)
