"""Topology-aware collectives on an emulated leaf-spine fabric (needs root).

all_reduce, reduce_scatter and all_gather across every rank of a fabric with rate-limited
leaf-spine uplinks, with 1 and 2 ranks per host, in one run: uccl hierarchical (UCCL_ALGO=hierarchical: inside a host,
then inside a leaf, then across leaves, so each byte crosses the uplinks the fewest times),
uccl flat (UCCL_ALGO=flat: what the tuner picks without a topology) and torch gloo (kernel
TCP). Every variant runs through `uccl-run --fabric NAME --nproc-per-node P`, which sets
UCCL_TOPOLOGY (hosts and leaves), the same torch.distributed program as perf/multipath.py
(perf/_multipath_worker.py, results checked), over several ECMP hashings.

    sudo python perf/topo.py                                     # 4 hosts / 2 leaves / 2 spines, 100 Mbit/s
    sudo python perf/topo.py --seeds 1 --ranks-per-host 1 --ops all_reduce   # quicker

Reported per run: completion time / the bisection ideal (perf/multipath.py: for all_reduce
a leaf must export and import the whole vector once, for reduce_scatter and all_gather the
other leaves' part of it), and the bytes on leaf 0's uplinks (kernel device
counters) per payload byte that must cross, 1.0 being the minimum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_fabric_args, parse_size  # noqa: E402
from multipath import WORKER, Sampler, ideal_seconds, uplink_usage  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {  # name -> (torch backend, UCCL_ALGO)
    "uccl hierarchical": ("uccl", "hierarchical"),
    "uccl flat": ("uccl", "flat"),
    "gloo (TCP)": ("gloo", None),
}


def run_variant(fab, name: str, ranks_per_host: int, args, tmp: str) -> dict:
    backend, algo = VARIANTS[name]
    out = os.path.join(tmp, "result.json")
    if os.path.exists(out):
        os.unlink(out)
    env = dict(os.environ)
    env.pop("UCCL_ALGO", None)
    if algo:
        env["UCCL_ALGO"] = algo
    cmd = [sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name, "--nproc-per-node", str(ranks_per_host),
           WORKER, "--backend", backend, "--bytes", str(args.bytes), "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--ops", args.ops, "--out", out]
    with Sampler(fab) as sampler:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    row = {"variant": name, "ranks_per_host": ranks_per_host}
    if proc.returncode != 0 or not os.path.exists(out):
        return {**row, "failed": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    with open(out) as f:
        res = json.load(f)
    row.update(world=res["world"], bytes=res["bytes"], ops={})
    for op, r in res["ops"].items():
        ideal = ideal_seconds(fab.spec, op, res["bytes"], ranks_per_host)
        med = statistics.median(r["seconds"])
        usage = uplink_usage(sampler, fab, r["windows"])
        must_cross = ideal * sum(fab.spec.uplink_rates()) / 8 * len(r["seconds"])  # payload, all iterations
        up0 = sum(v["bytes"] for k, v in usage["links"].items() if k.startswith("l0>"))
        row["ops"][op] = {"seconds": r["seconds"], "median_s": med, "ideal_s": ideal, "vs_ideal": med / ideal,
                          "wrong": r["wrong"], "uplinks": usage, "wire_bytes_per_payload_byte": up0 / must_cross}
    return row


def summary_line(row: dict) -> str:
    head = f"seed {row['seed']} loss {row['loss']:g}% {row['ranks_per_host']}/host {row['variant']}"
    if "failed" in row:
        return f"{head}: FAILED {row['failed'][-300:]}"
    return head + ": " + "; ".join(
        f"{op} {r['median_s'] * 1e3:.0f} ms = {r['vs_ideal']:.2f}x ideal, uplink bytes / minimum "
        f"{r['wire_bytes_per_payload_byte']:.2f}, wrong {r['wrong']}" for op, r in row["ops"].items())


def summarize(runs: list) -> dict:
    out = {}
    ops = sorted({op for r in runs for op in r.get("ops", {})})
    for loss, rph, v in sorted({(r["loss"], r["ranks_per_host"], r["variant"]) for r in runs}):
        rows = [r for r in runs if (r["loss"], r["ranks_per_host"], r["variant"]) == (loss, rph, v)]
        ok = [r for r in rows if "failed" not in r]
        for op in ops:
            got = [r["ops"][op] for r in ok if op in r["ops"]]
            xs, wire = [g["vs_ideal"] for g in got], [g["wire_bytes_per_payload_byte"] for g in got]
            out[f"loss={loss:g} {op} {rph}/host {v}"] = {
                "loss": loss, "op": op, "ranks_per_host": rph, "variant": v, "runs": len(got),
                "failed": len(rows) - len(ok), "wrong": sum(g["wrong"] for g in got),
                "vs_ideal_min": min(xs) if xs else None, "vs_ideal_median": statistics.median(xs) if xs else None,
                "vs_ideal_max": max(xs) if xs else None,
                "median_s": statistics.median(g["median_s"] for g in got) if got else None,
                "wire_per_payload_max": max(wire) if wire else None}
    for loss, op, rph in sorted({(s["loss"], s["op"], s["ranks_per_host"]) for s in out.values()}):
        hier = out.get(f"loss={loss:g} {op} {rph}/host uccl hierarchical")
        for other in ("uccl flat", "gloo (TCP)"):
            them = out.get(f"loss={loss:g} {op} {rph}/host {other}")
            if hier and them and hier["median_s"] and them["median_s"]:
                out[f"loss={loss:g} {op} {rph}/host {other} median / hierarchical median"] = (them["median_s"]
                                                                                         / hier["median_s"])
    return out


def print_summary(result: dict) -> None:
    print(f"\n{result['fabric']}; {result['setting']['bytes'] >> 20} MiB per rank; "
          f"load {result['load_before'][0]:.1f} -> {result['load_after'][0]:.1f}")
    print(f"{'setting':<58} {'min':>6} {'median':>7} {'max':>6} {'uplink/min':>11}  (time / bisection ideal)")
    for key, s in result["summary"].items():
        if not isinstance(s, dict):
            print(f"{key:<58} {s:.2f}x")
        elif s["vs_ideal_min"] is None:
            print(f"{key:<58} no result ({s['failed']} failed)")
        else:
            print(f"{key:<58} {s['vs_ideal_min']:>6.2f} {s['vs_ideal_median']:>7.2f} {s['vs_ideal_max']:>6.2f} "
                  f"{s['wire_per_payload_max']:>11.2f}  wrong {s['wrong']}, failed {s['failed']}")


def plot(result: dict, path: str) -> None:
    """Per collective: time / ideal (median, min-max bars) and uplink bytes / minimum, per
    variant and ranks per host."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [s for s in result["summary"].values() if isinstance(s, dict) and s["vs_ideal_median"] is not None]
    ops = sorted({s["op"] for s in summary})
    fig, axes = plt.subplots(len(ops), 2, figsize=(12, 4.2 * len(ops)), squeeze=False)
    for (a, b), op in zip(axes, ops):
        rows = [s for s in summary if s["op"] == op]
        labels = [f"{s['variant']}\n{s['ranks_per_host']}/host" + (f", {s['loss']:g}% loss" if s["loss"] else "")
                  for s in rows]
        med = [s["vs_ideal_median"] for s in rows]
        err = [[m - s["vs_ideal_min"] for m, s in zip(med, rows)],
               [s["vs_ideal_max"] - m for m, s in zip(med, rows)]]
        colors = ["tab:blue" if "hierarchical" in s["variant"] else "tab:orange" if "flat" in s["variant"]
                  else "tab:gray" for s in rows]
        a.bar(range(len(rows)), med, yerr=err, color=colors, capsize=3)
        b.bar(range(len(rows)), [s["wire_per_payload_max"] for s in rows], color=colors)
        for ax in (a, b):
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.set_xticks(range(len(rows)), labels, fontsize=7)
        a.set_ylabel("completion time / bisection ideal")
        a.set_title(f"{result['setting']['bytes'] >> 20} MiB {op} ({result['setting']['seeds']} hashings)")
        b.set_ylabel("leaf 0 uplink bytes / minimum (worst run)")
    fig.suptitle(result["fabric"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    from uccl.fabric import emulator as fabmod
    from uccl.fabric import Fabric, FabricError, FabricSpec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fabric_args(ap)
    ap.add_argument("--bytes", type=parse_size, default=4 << 20, help="per rank (default 4M)")
    ap.add_argument("--ranks-per-host", default="1,2")
    ap.add_argument("--ops", default="all_reduce,reduce_scatter,all_gather,all_to_all")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3, help="ECMP hashings to try")
    ap.add_argument("--loss", default="0", help="loss settings in percent, comma separated")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "topo.json"))
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    if any(v not in VARIANTS for v in variants):
        ap.error(f"variants: choose from {list(VARIANTS)}")
    fabmod.handle_signals()
    spec = FabricSpec(hosts=args.hosts, leaves=args.leaves, spines=args.spines, rate=args.rate, queue=args.queue)
    load, described = os.getloadavg(), spec.describe()
    runs = []
    try:
        with Fabric(spec) as fab, tempfile.TemporaryDirectory() as tmp:
            for loss in [float(x) for x in args.loss.split(",")]:
                fab.set_loss(loss) if loss else fab.clear_loss()
                for seed in range(args.seeds):
                    fab.set_hash_seed(1000 + seed)
                    for rph in [int(x) for x in args.ranks_per_host.split(",")]:
                        for v in variants:  # interleaved: load changes hit every variant alike
                            row = run_variant(fab, v, rph, args, tmp)
                            row.update(loss=loss, seed=1000 + seed)
                            runs.append(row)
                            print(summary_line(row), flush=True)
    except FabricError as exc:
        sys.exit(f"topo: {exc}")
    result = {"benchmark": "topo", "fabric": described, "setting": vars(args), "command": " ".join(sys.argv),
              "load_before": load, "load_after": os.getloadavg(), "runs": runs, "summary": summarize(runs)}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print_summary(result)
    plot(result, args.json.replace(".json", ".png"))
    print(f"wrote {args.json} and {args.json.replace('.json', '.png')}")


if __name__ == "__main__":
    main()
