"""torch.distributed over "uccl" vs gloo, side by side in one run.

Two ranks on this host (started by this script) join a default group over uccl and a gloo
group over the same ranks; for every size, all_reduce and all_to_all_single run on both,
interleaved (gloo block, uccl block, repeated), so machine noise hits both alike. Each
figure is the best of R blocks of per-call time, the slowest rank's (as nccl-tests reports).

    python perf/torch_perf.py                          # 8 B .. 16 MiB, shm
    python perf/torch_perf.py -b 8 -e 64M -f 4 --transport net
    python perf/torch_perf.py --json perf/results/torch_perf.json --plot perf/results/torch_perf.png
    python perf/torch_perf.py --device cuda            # CUDA tensors (staged through host memory)

Targets (issue 5): all_reduce and all_to_all_single at 16 MiB >= 4x gloo; 8 B all_reduce
<= 50 us through torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from _common import human, parse_size, plot_series, size_range  # noqa: E402

OPS = ("all_reduce", "all_to_all_single")


def _iters(nbytes: int, budget: float) -> int:
    """Calls per timed block: many for small messages, few for large ones."""
    return max(3, min(2000, int(budget / max(1e-6, nbytes / 1e9 + 20e-6))))


def _bench(rank, world, sizes, repeat, budget, url, env, out_path, device):
    os.environ.update(env)
    torch.set_num_threads(1)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group("uccl", init_method=url, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    groups = {"gloo": dist.new_group(backend="gloo"), "uccl": dist.group.WORLD}
    results = []
    for op in OPS:
        for nbytes in sizes:
            n = max(world, nbytes // 4 // world * world)  # float32 elements, divisible by world
            x = torch.ones(n, device=device)
            out = torch.empty(n, device=device)
            iters = _iters(n * 4, budget)
            best = {"gloo": float("inf"), "uccl": float("inf")}

            def call(g):
                if op == "all_reduce":
                    dist.all_reduce(x, group=g)
                else:
                    dist.all_to_all_single(out, x, group=g)
            for g in groups.values():  # warm up
                for _ in range(min(iters, 5)):
                    call(g)
            for _ in range(repeat):
                for name, g in groups.items():
                    dist.barrier(group=groups["gloo"])
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        call(g)
                    if cuda:  # the copies back to the GPU are part of the operation
                        torch.cuda.synchronize()
                    dt = torch.tensor([(time.perf_counter() - t0) / iters], dtype=torch.float64)
                    dist.all_reduce(dt, op=dist.ReduceOp.MAX, group=groups["gloo"])  # the slowest rank's
                    best[name] = min(best[name], dt.item())
            results.append({"op": op, "bytes": n * 4, "gloo_us": best["gloo"] * 1e6, "uccl_us": best["uccl"] * 1e6,
                            "speedup": best["gloo"] / best["uccl"], "iters": iters})
            if rank == 0:
                r = results[-1]
                print(f"{op:>18} {human(r['bytes']):>8} {r['gloo_us']:12.1f} {r['uccl_us']:12.1f} "
                      f"{r['speedup']:8.2f}x", flush=True)
    dist.destroy_process_group()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-b", "--minbytes", default="8")
    p.add_argument("-e", "--maxbytes", default="16M")
    p.add_argument("-f", "--stepfactor", type=int, default=8)
    p.add_argument("-R", "--repeat", type=int, default=5, help="timed blocks per size and backend (best is kept)")
    p.add_argument("--budget", type=float, default=0.05, help="seconds per timed block (roughly)")
    p.add_argument("--transport", default="shm", help="UCCL_TRANSPORT (shm, net, auto)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the tensors live")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--plot", default=None, help="write a plot here (png)")
    args = p.parse_args(argv)
    sizes = size_range(parse_size(args.minbytes), parse_size(args.maxbytes), args.stepfactor)
    if parse_size(args.maxbytes) not in sizes:
        sizes.append(parse_size(args.maxbytes))
    world = 2
    import torch.multiprocessing as mp

    print(f"# torch {torch.__version__}, {world} ranks on one host ({os.cpu_count()} cpus), uccl transport "
          f"{args.transport}, {args.device} tensors; best of {args.repeat} blocks, slowest rank, float32")
    print(f"{'op':>18} {'size':>8} {'gloo (us)':>12} {'uccl (us)':>12} {'speedup':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        url = "file://" + os.path.join(tmp, f"init-{uuid.uuid4().hex}")
        out_path = os.path.join(tmp, "results.json")
        env = {"UCCL_TRANSPORT": args.transport, "OMP_NUM_THREADS": "1"}
        mp.start_processes(_bench, args=(world, sizes, args.repeat, args.budget, url, env, out_path, args.device),
                           nprocs=world, join=True, start_method="spawn")
        with open(out_path) as f:
            results = json.load(f)
    by = {(r["op"], r["bytes"]): r for r in results}
    big = max(r["bytes"] for r in results)
    small = min(r["bytes"] for r in results if r["op"] == "all_reduce")
    summary = {
        "all_reduce_16MiB_speedup": by.get(("all_reduce", big), {}).get("speedup"),
        "all_to_all_single_16MiB_speedup": by.get(("all_to_all_single", big), {}).get("speedup"),
        "all_reduce_8B_uccl_us": by.get(("all_reduce", small), {}).get("uccl_us"),
        "all_reduce_8B_gloo_us": by.get(("all_reduce", small), {}).get("gloo_us"),
    }
    print(f"# all_reduce {human(big)}: {summary['all_reduce_16MiB_speedup']:.2f}x gloo (target >= 4x); "
          f"all_to_all_single {human(big)}: {summary['all_to_all_single_16MiB_speedup']:.2f}x gloo (target >= 4x); "
          f"all_reduce {human(small)}: {summary['all_reduce_8B_uccl_us']:.1f} us (gloo "
          f"{summary['all_reduce_8B_gloo_us']:.1f} us; target <= 50 us)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"benchmark": "torch_perf", "torch": torch.__version__, "world": world,
                       "transport": args.transport, "device": args.device, "host": platform.node(), "cpus": os.cpu_count(),
                       "when": datetime.datetime.now().isoformat(timespec="seconds"), "summary": summary,
                       "results": results}, f, indent=1)
    if args.plot:
        series = {}
        for op in OPS:
            for b in ("gloo", "uccl"):
                series[f"{op} {b}"] = [(r["bytes"], r[f"{b}_us"]) for r in results if r["op"] == op]
        plot_series(args.plot, f"torch.distributed, {world} ranks on one host, {args.device} tensors: uccl vs gloo", series,
                    "time per call (us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
