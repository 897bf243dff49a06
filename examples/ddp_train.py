"""DDP over torch.distributed backend "uccl": a small model trains to the same losses as
over gloo.

Run it as is (it starts its own ranks on this host, trains once over gloo and once over
uccl from the same seeds, and prints both loss curves side by side):

    python examples/ddp_train.py                   # 2 ranks, shared memory
    python examples/ddp_train.py --world 3 --transport net
    python examples/ddp_train.py --device cuda     # CUDA tensors (ranks share the GPUs)

or under a launcher, where it trains over the backend given (uccl by default):

    uccl-run --nproc-per-node 2 examples/ddp_train.py
    torchrun --nproc-per-node 2 examples/ddp_train.py --backend gloo

With 2 ranks the gradient sums are a + b on both backends, so losses agree bit for bit;
with more, the order of the additions may differ and they agree to float tolerance. The
program never imports uccl: `init_process_group("uccl")` finds the backend through torch's
entry-point autoload (torch >= 2.5).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
import uuid

import torch
import torch.distributed as dist
import torch.nn as nn

IN, HIDDEN, CLASSES = 32, 64, 10


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, CLASSES))


def make_data(steps: int, world: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, learnable classification problem: labels from a hidden linear teacher."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(steps, world, batch, IN, generator=g)
    teacher = torch.randn(IN, CLASSES, generator=g)
    return x, (x @ teacher).argmax(-1)


def pick_device(kind: str, rank: int) -> torch.device:
    """cpu, or one of this host's GPUs (ranks beyond the GPU count share them)."""
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    index = rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def train(rank: int, world: int, backend: str, steps: int, batch: int, init_method: str = "env://",
          timeout: float = 120.0, device: str = "cpu") -> dict:
    torch.set_num_threads(1)
    kwargs = {} if init_method == "env://" else dict(init_method=init_method, rank=rank, world_size=world)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout), **kwargs)
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", rank)))
    model = nn.parallel.DistributedDataParallel(make_model().to(dev),
                                                device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    x, y = make_data(steps, world, batch)
    x, y = x.to(dev), y.to(dev)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[step, rank]), y[step, rank])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    # every rank holds the same parameters after each step: check it
    check = params.clone()
    dist.broadcast(check, src=0)
    in_sync = bool(torch.equal(check, params))
    dist.destroy_process_group()
    return {"losses": losses, "params": params.cpu(), "in_sync": in_sync, "seconds": elapsed,
            "backend": backend, "world": world,
            "device": dev.type}


def _spawned(rank, world, backend, steps, batch, url, env, out_dir, device):
    os.environ.update(env)
    result = train(rank, world, backend, steps, batch, init_method=url, device=device)
    path = os.path.join(out_dir, f"{backend}-{rank}.pt")
    torch.save(result, path + ".part")
    os.replace(path + ".part", path)  # a complete file or none


def run_local(backend: str, world: int, steps: int, batch: int, env: dict, device: str = "cpu") -> list:
    """Starts `world` ranks on this host; returns every rank's result."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        url = "file://" + os.path.join(out_dir, f"init-{uuid.uuid4().hex}")
        paths = [os.path.join(out_dir, f"{backend}-{r}.pt") for r in range(world)]
        try:
            mp.start_processes(_spawned, args=(world, backend, steps, batch, url, env, out_dir, device),
                               nprocs=world, join=True, start_method="spawn")
        except mp.ProcessExitedException as exc:
            # torch's gloo rarely aborts during interpreter exit, after destroy_process_group and after
            # the rank saved its result: the reference stands. uccl ranks get no such pardon.
            if backend != "gloo" or exc.exit_code >= 0 or not all(map(os.path.exists, paths)):
                raise
            print(f"[ddp_train] gloo rank {exc.error_index} died at exit ({exc.signal_name}) after saving "
                  "its result; using the results", file=sys.stderr)
        return [torch.load(path) for path in paths]


def compare(gloo: list, uccl: list, world: int) -> tuple[bool, float, float]:
    """(same?, max loss difference, max parameter difference) over every rank."""
    loss_diff = max(abs(a - b) for g, u in zip(gloo, uccl) for a, b in zip(g["losses"], u["losses"]))
    param_diff = max(float((g["params"] - u["params"]).abs().max()) for g, u in zip(gloo, uccl))
    if world == 2:  # a + b == b + a: bit for bit
        ok = loss_diff == 0.0 and param_diff == 0.0
    else:
        ok = loss_diff <= 1e-5 and param_diff <= 1e-5
    return ok and all(r["in_sync"] for r in gloo + uccl), loss_diff, param_diff


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default=None, help="uccl, gloo or both (default: both when run directly, "
                                                   "uccl under a launcher)")
    p.add_argument("--world", type=int, default=2, help="ranks to start when run directly")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--transport", default=None, help="UCCL_TRANSPORT for the uccl run (shm, net)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model and data live")
    args = p.parse_args(argv)

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # under uccl-run / torchrun
        backend = args.backend or "uccl"
        if args.transport:
            os.environ["UCCL_TRANSPORT"] = args.transport
        res = train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), backend, args.steps, args.batch,
                    device=args.device)
        if int(os.environ["RANK"]) == 0:
            for i, loss in enumerate(res["losses"]):
                print(f"step {i:3d}  loss {loss:.6f}")
            print(f"DDP over {backend}: {res['world']} ranks, {args.steps} steps in {res['seconds']:.2f} s, "
                  f"replicas in sync: {res['in_sync']}")
        return 0 if res["in_sync"] else 1

    backends = ["gloo", "uccl"] if args.backend in (None, "both") else [args.backend]
    env = {"UCCL_TRANSPORT": args.transport} if args.transport else {}
    results = {b: run_local(b, args.world, args.steps, args.batch, env, args.device) for b in backends}
    transport = args.transport or os.environ.get("UCCL_TRANSPORT", "auto")
    print(f"DDP, {args.world} ranks on this host ({args.device}), {args.steps} steps, batch {args.batch} per "
          f"rank (uccl transport: {transport})")
    print("step  " + "  ".join(f"{b + ' loss':>14}" for b in backends))
    for i in range(args.steps):
        print(f"{i:4d}  " + "  ".join(f"{results[b][0]['losses'][i]:14.8f}" for b in backends))
    for b in backends:
        print(f"{b}: {results[b][0]['seconds']:.2f} s, replicas in sync: {all(r['in_sync'] for r in results[b])}")
    if len(backends) == 2:
        ok, dl, dp = compare(results["gloo"], results["uccl"], args.world)
        how = "bit for bit" if args.world == 2 else "within 1e-5"
        print(f"uccl vs gloo: max |loss diff| {dl:.3g}, max |param diff| {dp:.3g} -> "
              f"{'SAME (' + how + ')' if ok else 'DIFFERENT'}")
        return 0 if ok else 1
    return 0 if all(r["in_sync"] for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
