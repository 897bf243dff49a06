"""CUDA tensors over backend "uccl": every operation against gloo on CPU copies of the same
inputs, the ordering on the caller's CUDA stream (producers first, consumers after, the
host not held), futures, and DDP on the GPU. Ranks share the host's GPUs (one is enough).
Skipped where torch sees no CUDA device."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.harness import all_to_all_list, assert_same, init, init_url, rand, transport_env
from uccl.testing import run_ranks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# GPU cycles for torch.cuda._sleep: long enough (well over 0.1 s at any clock) that a host
# which waited for the kernel would find the stream idle afterwards.
SLEEP_CYCLES = 1_000_000_000


def _dev(r: int) -> torch.device:
    index = r % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _check(groups, fn, label):
    """fn(group, device) -> tensors; uccl on CUDA, gloo on the CPU, same inputs."""
    uccl, gloo = groups
    dev = torch.cuda.current_device()
    got = fn(uccl, torch.device("cuda", dev))
    want = fn(gloo, torch.device("cpu"))
    if isinstance(got, (list, tuple)):
        got = [g.cpu() for g in got]
    else:
        got = got.cpu()
    assert_same(got, want, label)


def check_operations(groups, r, W):
    import torch.distributed as dist

    R = dist.ReduceOp
    for dtype, op, n in [(torch.float32, R.SUM, 1000), (torch.float32, R.AVG, 7), (torch.float16, R.SUM, 513),
                         (torch.bfloat16, R.MAX, 64), (torch.int64, R.MIN, 100), (torch.float32, R.SUM, 1 << 20),
                         (torch.complex64, R.SUM, 33)]:
        x = rand((n,), dtype, 100 + r, small=True)

        def ar(g, d):
            t = x.to(d)
            dist.all_reduce(t, op=op, group=g)
            return t
        _check(groups, ar, f"all_reduce {dtype} {op} n={n}")

        def red(g, d):
            t = x.to(d)
            dist.reduce(t, dst=W - 1, op=op, group=g)
            return t if r == W - 1 else torch.zeros(0)
        _check(groups, red, f"reduce {dtype} {op}")

    x = rand((37, 5), torch.float32, 200 + r)
    xs = rand((W * 12,), torch.float32, 300 + r)
    dist_ops = {
        "broadcast": lambda g, d: (lambda t: (dist.broadcast(t, src=1 % W, group=g), t)[1])(x.to(d)),
        "all_gather": lambda g, d: (lambda outs: (dist.all_gather(outs, x.to(d), group=g), outs)[1])(
            [torch.zeros_like(x, device=d) for _ in range(W)]),
        "all_gather_into_tensor": lambda g, d: (lambda out: (dist.all_gather_into_tensor(out, x.to(d), group=g),
                                                             out)[1])(torch.zeros(W * 37, 5, device=d)),
        "reduce_scatter": lambda g, d: (lambda out: (dist.reduce_scatter(out, list(xs.to(d).chunk(W)), group=g),
                                                     out)[1])(torch.zeros(12, device=d)),
        "reduce_scatter_tensor": lambda g, d: (lambda out: (dist.reduce_scatter_tensor(out, xs.to(d), group=g),
                                                            out)[1])(torch.zeros(12, device=d)),
        "all_to_all": lambda g, d: (lambda outs: (all_to_all_list(outs, list(xs.to(d).chunk(W)), g, groups[1]),
                                                  outs)[1])([torch.zeros(12, device=d) for _ in range(W)]),
        "gather": lambda g, d: (lambda outs: (dist.gather(x.to(d), outs, dst=0, group=g), outs)[1])(
            [torch.zeros_like(x, device=d) for _ in range(W)] if r == 0 else None) or [],
        "scatter": lambda g, d: (lambda out: (dist.scatter(out, [c.contiguous() for c in xs.to(d).chunk(W)]
                                                           if r == 0 else None, src=0, group=g), out)[1])(
            torch.zeros(12, device=d)),
    }
    for name, fn in dist_ops.items():
        _check(groups, fn, name)

    # all_to_all_single with uneven splits: rank r sends (r + p + 1) rows to peer p
    send_splits = [r + p + 1 for p in range(W)]
    recv_splits = [p + r + 1 for p in range(W)]
    a = rand((sum(send_splits), 3), torch.float32, 400 + r)

    def a2a(g, d):
        out = torch.zeros(sum(recv_splits), 3, device=d)
        dist.all_to_all_single(out, a.to(d), recv_splits, send_splits, group=g)
        return out
    _check(groups, a2a, "all_to_all_single")

    # non-contiguous: a transposed view, reduced in place (written back through the view)
    base = rand((6, 9), torch.float32, 500 + r)

    def nc(g, d):
        t = base.to(d).t()
        dist.all_reduce(t, group=g)
        return t.contiguous()
    _check(groups, nc, "all_reduce non-contiguous")
    dist.barrier(group=groups[0])
    return True


def check_p2p(groups, r, W):
    import torch.distributed as dist

    dev = torch.device("cuda", torch.cuda.current_device())
    right, left = (r + 1) % W, (r - 1) % W
    x = torch.arange(1000, device=dev, dtype=torch.float32) + 1000 * r
    got = torch.zeros(1000, device=dev)
    reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, x, right, group=groups[0], tag=3),
                                   dist.P2POp(dist.irecv, got, left, group=groups[0], tag=3)])
    for q in reqs:
        q.wait()
    assert torch.equal(got.cpu(), torch.arange(1000, dtype=torch.float32) + 1000 * left)
    if r == 0:
        dist.send(x * 2, dst=1, group=groups[0])
    elif r == 1:
        y = torch.zeros(1000, device=dev)
        dist.recv(y, src=0, group=groups[0])
        assert torch.equal(y.cpu(), (torch.arange(1000, dtype=torch.float32)) * 2)
    return True


def check_stream_order(groups, r, W):
    """The caller's stream orders everything: a producer still running when the call is
    made, a consumer enqueued right after wait(); the host never waits for the producer."""
    import torch.distributed as dist

    dev = torch.device("cuda", torch.cuda.current_device())
    n = 8 << 20  # 32 MiB: the copy back takes long enough to be caught unordered
    want = float(sum(range(1, W + 1)))
    for side in (False, True):  # the default stream, then a stream of the caller's own
        stream = torch.cuda.Stream(dev) if side else torch.cuda.current_stream(dev)
        with torch.cuda.stream(stream):
            t = torch.zeros(n, device=dev)
            torch.cuda._sleep(SLEEP_CYCLES)
            t.fill_(r + 1)  # the producer: the input is only right once the sleep ends
            work = dist.all_reduce(t, async_op=True, group=groups[0])
            assert not stream.query(), "the host waited for the producer kernel"
            work.wait()
            total = t.sum()  # the consumer, enqueued at once
            first = t[:4].clone()
        torch.cuda.synchronize(dev)
        assert first.tolist() == [want] * 4, f"stream ordering (side={side}): read {first.tolist()}"
        assert float(total) == want * n, f"stream ordering (side={side}): sum {float(total)}"
    # a future's value is ordered too (DDP's reducer and comm hooks read it this way)
    t = torch.full((n,), float(r + 1), device=dev)
    fut = dist.all_reduce(t, async_op=True, group=groups[0]).get_future()
    doubled = fut.then(lambda f: f.value()[0] * 2).wait()
    assert float(doubled.sum()) == 2 * want * n
    assert float(fut.wait()[0][-1]) == want
    return True


def _job(ctx, url, parts):
    _dev(ctx.rank)
    groups = init(ctx, url)
    done = {name: globals()[f"check_{name}"](groups, ctx.rank, ctx.world_size) for name in parts}
    import torch.distributed as dist

    dist.destroy_process_group()
    return done


PARTS = ["operations", "p2p", "stream_order"]


@pytest.mark.parametrize("transport", ["shm", "net"])
@pytest.mark.parametrize("world", [2, 3])
def test_cuda_tensors_match_gloo(world, transport):
    results = run_ranks(_job, world, args=(init_url(), PARTS), env=transport_env(transport), timeout=300)
    assert all(res == {p: True for p in PARTS} for res in results)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_on_cuda_matches_gloo(world):
    from tests.distributed.test_ddp import _example

    ex = _example()
    env = transport_env("shm")
    gloo = ex.run_local("gloo", world, 12, 32, env, "cuda")
    uccl = ex.run_local("uccl", world, 12, 32, env, "cuda")
    ok, loss_diff, param_diff = ex.compare(gloo, uccl, world)
    assert ok, f"uccl vs gloo on CUDA: loss diff {loss_diff}, param diff {param_diff}"
    assert uccl[0]["device"] == "cuda" and uccl[0]["losses"][-1] < uccl[0]["losses"][0]
