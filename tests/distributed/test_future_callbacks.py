"""Callbacks chained on a Work's future may issue another collective and wait for it, as
DDP communication hooks (PowerSGD) do: the job completes, with gloo's results.

Before the fix these hung: the callback ran on the group's only completion thread, the
one thread that could complete the inner operation. Each rank checks with a deadline, so
a hang fails the test (naming what hung) instead of stalling the suite."""

from __future__ import annotations

import time

import pytest
import torch

from tests.distributed.harness import init, init_url, transport_env
from uccl.testing import run_ranks

DEADLINE_S = 30.0  # per step: generous for two oversubscribed cores, far above the actual milliseconds


def _wait_done(fut, what: str, rank: int) -> None:
    """torch's Future.wait() has no timeout: poll with a deadline so a hang is a failure."""
    deadline = time.monotonic() + DEADLINE_S
    while not fut.done():
        if time.monotonic() > deadline:
            raise AssertionError(f"rank {rank}: {what}: the future did not complete within {DEADLINE_S:.0f} s")
        time.sleep(0.005)


def _inner_waits(ctx, url):
    """An async all_reduce whose future's callback runs another all_reduce and waits on it,
    in each way a user can wait (Work.wait, the Work's future, a blocking call)."""
    import torch.distributed as dist

    group, _ = init(ctx, url)
    r, W = ctx.rank, ctx.world_size
    total = W * (W + 1) / 2

    def via_work_wait(t):
        dist.all_reduce(t, async_op=True).wait()

    def via_future_wait(t):
        dist.all_reduce(t, async_op=True).get_future().wait()

    def via_blocking_call(t):
        dist.all_reduce(t)

    for how in (via_future_wait, via_work_wait, via_blocking_call):
        outer = torch.full((64,), float(r + 1))

        def callback(fut, how=how):
            inner = fut.value()[0] * 2  # depends on the outer result
            how(inner)
            return inner

        chained = dist.all_reduce(outer, async_op=True).get_future().then(callback)
        _wait_done(chained, f"a callback whose inner all_reduce waits {how.__name__}", r)
        assert torch.equal(outer, torch.full((64,), total)), f"{how.__name__}: outer all_reduce {outer[:4]}"
        assert torch.equal(chained.value(), torch.full((64,), 2 * total * W)), \
            f"{how.__name__}: inner all_reduce {chained.value()[:4]}"

    # Two levels, as PowerSGD chains them: each callback waits for a collective of its own.
    x = torch.full((8,), float(r + 1))

    def level(fut):
        t = fut.value()[0] if isinstance(fut.value(), list) else fut.value()
        t = t + 1
        return dist.all_reduce(t, async_op=True).get_future().wait()[0]

    chained = dist.all_reduce(x, async_op=True).get_future().then(level).then(level)
    _wait_done(chained, "two chained callbacks that each wait for an all_reduce", r)
    want = ((total + 1) * W + 1) * W
    assert torch.equal(chained.value(), torch.full((8,), want)), f"two levels: {chained.value()[:4]} != {want}"

    # Futures still complete in issue order: when one completes, every earlier one has.
    earlier_done, futs = {}, []
    for i in range(8):
        futs.append(dist.all_reduce(torch.full((4096,), float(i)), async_op=True).get_future())
        futs[-1].add_done_callback(lambda _f, i=i: earlier_done.__setitem__(i, all(f.done() for f in futs[:i])))
    for i, f in enumerate(futs):
        _wait_done(f, f"async all_reduce #{i}", r)
    deadline = time.monotonic() + DEADLINE_S
    while len(earlier_done) < len(futs) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert earlier_done == {i: True for i in range(len(futs))}, f"futures completed out of issue order: {earlier_done}"
    dist.destroy_process_group()
    return True


@pytest.mark.parametrize("transport", ["shm", "net"])
def test_callback_waiting_on_a_collective_completes(transport):
    assert run_ranks(_inner_waits, 2, args=(init_url(),), env=transport_env(transport), timeout=180) == [True, True]


STEPS, BATCH, IN, HIDDEN, CLASSES = 10, 16, 32, 48, 8


def _train_powersgd(ctx, url):
    """The same model and data trained under DDP with torch's PowerSGD hook, once over the
    uccl group and once over a gloo group of the same ranks; returns both loss curves."""
    import torch.distributed as dist
    import torch.nn as nn
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD

    group, gloo = init(ctx, url)
    r, W = ctx.rank, ctx.world_size
    g = torch.Generator().manual_seed(77)
    x = torch.randn(W, BATCH, IN, generator=g)  # the same batch every step: the loss must fall
    y = (x @ torch.randn(IN, CLASSES, generator=g)).argmax(-1)
    curves = {}
    for name, pg in (("gloo", gloo), ("uccl", group)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
        ddp = nn.parallel.DistributedDataParallel(model, process_group=pg)
        state = powerSGD.PowerSGDState(process_group=pg, matrix_approximation_rank=1, start_powerSGD_iter=2,
                                       random_seed=0)
        ddp.register_comm_hook(state, powerSGD.powerSGD_hook)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ddp(x[r]), y[r])
            loss.backward()  # the hook's chained callbacks run (and wait) here, from step 2 on
            opt.step()
            losses.append(loss.item())
        curves[name] = losses
    dist.destroy_process_group()
    return curves


def test_ddp_powersgd_hook_trains_to_gloos_losses():
    pytest.importorskip("numpy")  # PowerSGDState draws its seeds with numpy
    results = run_ranks(_train_powersgd, 2, args=(init_url(),), env=transport_env("shm"), timeout=240)
    for rank, curves in enumerate(results):
        assert len(curves["uccl"]) == STEPS
        torch.testing.assert_close(curves["uccl"], curves["gloo"], rtol=1e-5, atol=1e-6,
                                   msg=lambda m, rank=rank: f"rank {rank}: uccl vs gloo losses under PowerSGD: {m}")
    assert results[0]["uccl"][-1] < results[0]["uccl"][0], "the model did not train"
