"""Every torch.distributed operation over backend "uccl" against gloo on the same random
inputs, at world sizes 2, 3 and 4, over shared memory and over the net channel.

One spawned job per (world, transport) runs every check (ranks are oversubscribed on a
two-core machine; spawning is the expensive part)."""

from __future__ import annotations

import zlib

import pytest
import torch

from tests.distributed.harness import TRANSPORTS, all_to_all_list, assert_same, init, init_url, rand, transport_env
from uccl.testing import run_ranks

REDUCE_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.int8,
                 torch.uint8, torch.bool]
MOVE_DTYPES = [torch.float32, torch.int64, torch.bfloat16, torch.uint8, torch.bool, torch.complex64]


def _ops_for(dtype):
    import torch.distributed as dist

    R = dist.ReduceOp
    ops = [R.SUM, R.PRODUCT, R.MIN, R.MAX]
    if dtype.is_floating_point:
        ops.append(R.AVG)
    return ops


def _both(groups, fn):
    """fn(group) -> tensors; returns (uccl's, gloo's)."""
    return fn(groups[0]), fn(groups[1])


def check_reductions(groups, r, W):
    import torch.distributed as dist

    n_checks = 0
    for dtype in REDUCE_DTYPES:
        for op in _ops_for(dtype):
            for n in (1, 7, 1000):
                seed = zlib.crc32(f"{dtype}{op}{n}".encode()) % 100000
                x = rand((n,), dtype, seed * 10 + r, small=True)

                def ar(g):
                    t = x.clone()
                    dist.all_reduce(t, op=op, group=g)
                    return t
                u, gl = _both(groups, ar)
                assert_same(u, gl, f"all_reduce {dtype} {op} n={n}")
                root = n % W

                def red(g):
                    t = x.clone()
                    dist.reduce(t, dst=root, op=op, group=g)
                    return t
                u, gl = _both(groups, red)
                if r == root:
                    assert_same(u, gl, f"reduce {dtype} {op} n={n}")
                xs = rand((n * W,), dtype, seed * 10 + 5 + r, small=True)

                def rst(g):
                    out = torch.zeros(n, dtype=dtype)
                    dist.reduce_scatter_tensor(out, xs.clone(), op=op, group=g)
                    return out
                assert_same(*_both(groups, rst), f"reduce_scatter_tensor {dtype} {op} n={n}")

                def rsl(g):
                    out = torch.zeros(n, dtype=dtype)
                    dist.reduce_scatter(out, list(xs.clone().chunk(W)), op=op, group=g)
                    return out
                assert_same(*_both(groups, rsl), f"reduce_scatter {dtype} {op} n={n}")
                n_checks += 4
    # a large one (pipelined in chunks), complex, coalesced, 2-D
    big = rand((300_001,), torch.float32, 99 + r)
    u, gl = _both(groups, lambda g: (lambda t: (dist.all_reduce(t, group=g), t)[1])(big.clone()))
    assert_same(u, gl, "all_reduce large")
    cx = rand((33,), torch.complex64, 7 + r)
    u, gl = _both(groups, lambda g: (lambda t: (dist.all_reduce(t, group=g), t)[1])(cx.clone()))
    assert_same(u, gl, "all_reduce complex")
    ts = [rand((5,), torch.float32, 11 + r), rand((3, 4), torch.float32, 13 + r)]

    def coal(g):
        c = [t.clone() for t in ts]
        dist.all_reduce_coalesced(c, group=g)
        return c
    assert_same(*_both(groups, coal), "all_reduce_coalesced")
    m = rand((6, 5), torch.int64, 17 + r)
    u, gl = _both(groups, lambda g: (lambda t: (dist.all_reduce(t, op=dist.ReduceOp.MAX, group=g), t)[1])(m.clone()))
    assert_same(u, gl, "all_reduce 2-D")
    return n_checks + 4


def check_movement(groups, r, W):
    import torch.distributed as dist

    for dtype in MOVE_DTYPES:
        for n in (1, 13, 4099):
            s = zlib.crc32(f"{dtype}{n}".encode()) % 100000
            x = rand((n,), dtype, s * 10 + r)
            for root in range(W):
                def bc(g):
                    t = x.clone()
                    dist.broadcast(t, src=root, group=g)
                    return t
                assert_same(*_both(groups, bc), f"broadcast {dtype} n={n} root={root}")

            def ag(g):
                outs = [torch.zeros(n, dtype=dtype) for _ in range(W)]
                dist.all_gather(outs, x.clone(), group=g)
                return outs
            assert_same(*_both(groups, ag), f"all_gather {dtype} n={n}")

            def agt(g):
                out = torch.zeros(n * W, dtype=dtype)
                dist.all_gather_into_tensor(out, x.clone(), group=g)
                return out
            assert_same(*_both(groups, agt), f"all_gather_into_tensor {dtype} n={n}")
            root = (n + 1) % W

            def ga(g):
                outs = [torch.zeros(n, dtype=dtype) for _ in range(W)] if r == root else None
                dist.gather(x.clone(), outs, dst=root, group=g)
                return outs if outs is not None else []
            if dtype.is_complex:  # gloo's gather and scatter have no complex types: compare with the inputs
                assert_same(ga(groups[0]), [rand((n,), dtype, s * 10 + q) for q in range(W)] if r == root else [],
                            f"gather {dtype} n={n}")
            else:
                assert_same(*_both(groups, ga), f"gather {dtype} n={n}")
            xs = [rand((n,), dtype, s * 10 + 100 + i) for i in range(W)]

            def sc(g):
                out = torch.zeros(n, dtype=dtype)
                dist.scatter(out, [t.clone() for t in xs] if r == root else None, src=root, group=g)
                return out
            if dtype.is_complex:
                assert_same(sc(groups[0]), xs[r], f"scatter {dtype} n={n}")
            else:
                assert_same(*_both(groups, sc), f"scatter {dtype} n={n}")
            xa = rand((n * W,), dtype, s * 10 + 50 + r)

            def a2a_even(g):
                out = torch.zeros(n * W, dtype=dtype)
                dist.all_to_all_single(out, xa.clone(), group=g)
                return out
            assert_same(*_both(groups, a2a_even), f"all_to_all_single {dtype} n={n}")
            # split sizes: rank i sends split[i][j] rows to rank j (same matrix on every rank)
            gen = torch.Generator().manual_seed(s)
            split = torch.randint(0, 5, (W, W), generator=gen).tolist()
            cols = 3
            inp = rand((sum(split[r]), cols), dtype, s * 10 + 70 + r)

            def a2a_v(g):
                out = torch.zeros(sum(split[q][r] for q in range(W)), cols, dtype=dtype)
                dist.all_to_all_single(out, inp.clone(), [split[q][r] for q in range(W)], split[r], group=g)
                return out
            assert_same(*_both(groups, a2a_v), f"all_to_all_single splits {dtype} n={n}")
            ins = [rand((3, 2), dtype, s + 7 * j + r) for j in range(W)]  # gloo wants equal sizes

            def a2a_list(g):
                outs = [torch.zeros(3, 2, dtype=dtype) for q in range(W)]
                all_to_all_list(outs, [t.clone() for t in ins], g, groups[1])
                return outs
            assert_same(*_both(groups, a2a_list), f"all_to_all {dtype} n={n}")


def check_objects(groups, r, W):
    import torch.distributed as dist

    obj = {"rank": r, "data": list(range(r + 2)), "s": "x" * (r * 100)}
    for g in groups:
        out = [None] * W
        dist.all_gather_object(out, obj, group=g)
        assert out == [{"rank": q, "data": list(range(q + 2)), "s": "x" * (q * 100)} for q in range(W)]
        objs = [obj, 3.5, "abc"] if r == 1 else [None, None, None]
        dist.broadcast_object_list(objs, src=1, group=g)
        assert objs == [{"rank": 1, "data": [0, 1, 2], "s": "x" * 100}, 3.5, "abc"]
        gathered = [None] * W if r == 0 else None
        dist.gather_object(("r", r), gathered, dst=0, group=g)
        if r == 0:
            assert gathered == [("r", q) for q in range(W)]
        got = [None]
        dist.scatter_object_list(got, [q * q for q in range(W)] if r == W - 1 else None, src=W - 1, group=g)
        assert got == [r * r]


def check_noncontiguous(groups, r, W):
    """Collectives handle non-contiguous tensors (results as on contiguous copies; gloo's
    own all_reduce / all_to_all_single write strided tensors as if they were contiguous);
    send/recv reject them as gloo does."""
    import torch.distributed as dist

    uccl, gloo = groups
    base = rand((8, 4), torch.float32, 200 + r)
    t = base.clone()
    view = t[:, 1]
    dist.all_reduce(view, group=uccl)
    want = base[:, 1].contiguous()
    dist.all_reduce(want, group=gloo)
    assert_same(view, want, "all_reduce non-contiguous")
    untouched = base.clone()
    untouched[:, 1] = 0
    t[:, 1] = 0
    assert torch.equal(t, untouched), "all_reduce non-contiguous wrote outside its view"
    t = base.clone()
    dist.broadcast(t[:, 2], src=W - 1, group=uccl)
    want = base[:, 2].contiguous()
    dist.broadcast(want, src=W - 1, group=gloo)
    assert_same(t[:, 2].contiguous(), want, "broadcast non-contiguous")
    outs = [torch.zeros(8, 2)[:, 0] for _ in range(W)]
    dist.all_gather(outs, base[:, 3], group=uccl)
    wants = [torch.zeros(8) for _ in range(W)]
    dist.all_gather(wants, base[:, 3].contiguous(), group=gloo)
    assert_same([o.contiguous() for o in outs], wants, "all_gather non-contiguous")
    out = torch.zeros(2 * W, 3)[:, 1]
    dist.all_to_all_single(out, base[: 2 * W, 0] if 2 * W <= 8 else base.reshape(-1)[: 2 * W], group=uccl)
    want = torch.zeros(2 * W)
    dist.all_to_all_single(want, (base[: 2 * W, 0] if 2 * W <= 8 else base.reshape(-1)[: 2 * W]).contiguous(),
                           group=gloo)
    assert_same(out.contiguous(), want, "all_to_all_single non-contiguous")
    for g in groups:
        with pytest.raises(RuntimeError, match="contiguous"):
            dist.send(base[:, 0], (r + 1) % W, group=g)


def check_p2p(groups, r, W):
    import torch.distributed as dist

    uccl, _ = groups
    nxt, prv = (r + 1) % W, (r - 1) % W
    # a ring with tags, received out of tag order
    for dtype in (torch.float32, torch.int64, torch.complex64):
        a, b = rand((17,), dtype, 300 + r), rand((5,), dtype, 400 + r)
        sends = [dist.isend(a, nxt, tag=3, group=uccl), dist.isend(b, nxt, tag=9, group=uccl)]
        ra, rb = torch.zeros(17, dtype=dtype), torch.zeros(5, dtype=dtype)
        dist.recv(rb, prv, tag=9, group=uccl)
        dist.recv(ra, prv, tag=3, group=uccl)
        for w in sends:
            w.wait()
        assert_same(ra, rand((17,), dtype, 300 + prv), f"send/recv tag 3 {dtype}")
        assert_same(rb, rand((5,), dtype, 400 + prv), f"send/recv tag 9 {dtype}")
    # blocking send / recv
    if r == 0:
        dist.send(torch.arange(6), W - 1, group=uccl)
    elif r == W - 1:
        t = torch.zeros(6, dtype=torch.int64)
        dist.recv(t, 0, group=uccl)
        assert torch.equal(t, torch.arange(6))
    # isend / irecv
    out = torch.zeros(1000)
    reqs = [dist.isend(rand((1000,), torch.float32, 500 + r), nxt, group=uccl), dist.irecv(out, prv, group=uccl)]
    for q in reqs:
        q.wait()
        assert q.is_completed()
    assert_same(out, rand((1000,), torch.float32, 500 + prv), "isend/irecv")
    # any-source receive: everybody sends to rank 0
    if r == 0:
        seen = set()
        for _ in range(W - 1):
            t = torch.zeros(3, dtype=torch.int64)
            src = dist.recv(t, group=uccl, tag=11)
            assert torch.equal(t, torch.full((3,), src)), (src, t)
            seen.add(src)
        assert seen == set(range(1, W))
        t = torch.zeros(1)
        w = dist.irecv(t, group=uccl, tag=12)  # any source, async
        w.wait()
        assert t.item() == W - 1
    else:
        dist.send(torch.full((3,), r, dtype=torch.int64), 0, group=uccl, tag=11)
        if r == W - 1:
            dist.send(torch.ones(1) * r, 0, group=uccl, tag=12)
    # batch_isend_irecv: a ring in both directions
    recv_l, recv_r = torch.zeros(4), torch.zeros(4)
    ops = [dist.P2POp(dist.isend, torch.full((4,), float(r)), nxt, group=uccl),
           dist.P2POp(dist.isend, torch.full((4,), float(r) + 0.5), prv, group=uccl),
           dist.P2POp(dist.irecv, recv_l, prv, group=uccl),
           dist.P2POp(dist.irecv, recv_r, nxt, group=uccl)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    assert torch.equal(recv_l, torch.full((4,), float(prv))) and torch.equal(recv_r, torch.full((4,), nxt + 0.5))


def check_async(groups, r, W):
    import torch.distributed as dist

    uccl, gloo = groups
    xs = [rand((100 * (i + 1),), torch.float32, 600 + 10 * i + r) for i in range(5)]
    ts = [x.clone() for x in xs]
    works = [dist.all_reduce(t, group=uccl, async_op=True) for t in ts]
    out = torch.zeros(50 * W)
    works.append(dist.all_gather_into_tensor(out, torch.full((50,), float(r)), group=uccl, async_op=True))
    futs = [w.get_future() for w in works]
    torch.futures.wait_all(futs)
    for i, (w, f) in enumerate(zip(works, futs)):
        w.wait()
        assert w.is_completed()
        assert f.done()
    for i, t in enumerate(ts):
        want = xs[i].clone()
        dist.all_reduce(want, group=gloo)
        assert_same(t, want, f"async all_reduce {i}")
        assert_same(futs[i].value()[0], want, f"future value {i}")
    assert torch.equal(out, torch.arange(W).repeat_interleave(50).float())
    # a chained future, as DDP's comm hooks use them
    t = torch.ones(10)
    fut = dist.all_reduce(t, group=uccl, async_op=True).get_future().then(lambda f: f.value()[0] * 2)
    assert torch.equal(fut.wait(), torch.full((10,), 2.0 * W))
    w = dist.barrier(group=uccl, async_op=True)
    w.wait()
    for op in (lambda g: dist.broadcast(torch.ones(3), 0, group=g, async_op=True),
               lambda g: dist.all_to_all_single(torch.zeros(W), torch.ones(W), group=g, async_op=True)):
        w = op(uccl)
        w.wait()
        assert w.is_completed()
    dist.barrier(group=uccl)
    dist.monitored_barrier(group=uccl, wait_all_ranks=True)


def check_groups(groups, r, W):
    import torch.distributed as dist

    members = list(range(W - 1)) if W > 2 else [0, 1]
    sub_u = dist.new_group(members, backend="uccl")
    sub_g = dist.new_group(members, backend="gloo")
    if r in members:
        x = rand((64,), torch.float32, 700 + r)
        u, g = x.clone(), x.clone()
        dist.all_reduce(u, group=sub_u)
        dist.all_reduce(g, group=sub_g)
        assert_same(u, g, "new_group all_reduce")
        outs_u = [torch.zeros(2) for _ in members]
        dist.all_gather(outs_u, torch.full((2,), float(r)), group=sub_u)
        assert torch.equal(torch.stack(outs_u), torch.tensor([[float(q)] * 2 for q in members]))
        # group ranks vs global ranks: broadcast from global rank members[-1]
        t = torch.full((3,), float(r))
        dist.broadcast(t, src=members[-1], group=sub_u)
        assert torch.equal(t, torch.full((3,), float(members[-1])))
        assert dist.get_backend(sub_u) == "uccl"
    # new_subgroups: groups of size 1 or 2
    size = 2 if W % 2 == 0 else 1
    cur, subs = dist.new_subgroups(group_size=size, backend="uccl")
    t = torch.full((1,), float(r))
    dist.all_reduce(t, group=cur)
    base = r - r % size
    assert t.item() == sum(range(base, base + size)), (t, r)
    for s in subs:
        dist.destroy_process_group(s)


def check_split_group(groups, r, W):
    """dist.split_group needs a device bound to the default group; CPU-only hosts have
    none, so torch's accelerator probe is pointed at the CPU for this check."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    default = c10d._get_default_group()
    old = (torch.accelerator.is_available, torch.accelerator.current_accelerator, default.bound_device_id)
    torch.accelerator.is_available = lambda: True
    torch.accelerator.current_accelerator = lambda *a, **k: torch.device("cpu")
    try:
        default.bound_device_id = torch.device("cpu", 0)
        halves = [list(range(0, W, 2)), list(range(1, W, 2))]
        pg = dist.split_group(split_ranks=halves)
        mine = halves[r % 2]
        assert pg is not None and pg.size() == len(mine), pg
        t = torch.full((5,), float(r))
        dist.all_reduce(t, group=pg)
        assert torch.equal(t, torch.full((5,), float(sum(mine))))
        assert dist.get_backend(pg) == "uccl"
    finally:
        torch.accelerator.is_available, torch.accelerator.current_accelerator = old[0], old[1]
        default.bound_device_id = old[2]


def check_errors(groups, r, W):
    """Wrong calls raise as gloo's do (same exception types)."""
    import torch.distributed as dist

    uccl, gloo = groups
    for g in (uccl, gloo):
        with pytest.raises(RuntimeError, match="PREMUL_SUM"):
            dist.all_reduce(torch.ones(2), op=dist._make_nccl_premul_sum(2.0), group=g)
        with pytest.raises(RuntimeError, match="non-integral"):
            dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BAND, group=g)
        with pytest.raises(RuntimeError, match="invalid root rank"):
            opts = dist.BroadcastOptions()
            opts.rootRank = W
            g.broadcast([torch.ones(2)], opts).wait()
        with pytest.raises(RuntimeError, match="invalid output tensor list"):
            dist.all_gather([torch.zeros(2)] * (W + 1), torch.ones(2), group=g)
        with pytest.raises(RuntimeError, match="invalid tensor size"):
            dist.all_gather([torch.zeros(3)] * W, torch.ones(2), group=g)
        with pytest.raises(RuntimeError, match="invalid tensor type"):
            dist.all_gather_into_tensor(torch.zeros(2 * W, dtype=torch.float64), torch.ones(2), group=g)
        with pytest.raises(RuntimeError, match="Split sizes doesn't match"):
            dist.all_to_all_single(torch.zeros(W + 1), torch.ones(W + 1), [1] * W, [1] * W, group=g)
        with pytest.raises(ValueError, match="complex"):
            dist.all_reduce(torch.ones(2, dtype=torch.complex64), op=dist.ReduceOp.MAX, group=g)
        with pytest.raises(RuntimeError, match="Invalid scalar type"):
            dist.all_reduce(torch.ones(2, dtype=torch.int16), group=g)
    with pytest.raises(RuntimeError, match="invalid .*size"):
        dist.all_gather_into_tensor(torch.zeros(2 * W + 1), torch.ones(2), group=uccl)
    with pytest.raises(RuntimeError, match="invalid input tensor size"):
        dist.reduce_scatter_tensor(torch.zeros(3), torch.ones(2 * W), group=uccl)  # gloo aborts the process here
    dist.barrier(group=uccl)


def _job(ctx, url, parts):
    groups = init(ctx, url)
    r, W = ctx.rank, ctx.world_size
    done = {}
    for name in parts:
        out = globals()[f"check_{name}"](groups, r, W)
        done[name] = out if out is not None else True
    import torch.distributed as dist

    dist.destroy_process_group()
    return done


ALL_PARTS = ["reductions", "movement", "objects", "noncontiguous", "p2p", "async", "groups", "split_group", "errors"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_operation_matches_gloo(world, transport):
    env = transport_env(transport)
    results = run_ranks(_job, world, args=(init_url(), ALL_PARTS), env=env, timeout=600)
    assert all(set(res) == set(ALL_PARTS) for res in results)
