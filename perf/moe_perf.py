"""One MoE layer, several ways, in one run (perf/_moe_worker.py on every rank):

    uccl overlapped     Buffer.dispatch_compute_combine (experts run as chunks land)
    uccl sequential     Buffer.dispatch -> experts -> Buffer.combine
    megatron on uccl    permute, all_to_all_single with splits, sort by expert, and back (backend "uccl")
    megatron on gloo    the same on a gloo group
    phases              dispatch, experts, combine, each between barriers
    low latency         low_latency_dispatch + low_latency_combine of 32 tokens

on one host (4 ranks over shared memory) and across an emulated fabric (one rank per host,
4 hosts / 2 leaves / 2 spines, rate-limited uplinks; needs root). The expert FFN is sized
(`--ffn auto`) so that the experts' compute takes about as long as dispatch + combine.

    python perf/moe_perf.py                           # both, defaults T=256 H=2048 E=32 k=4
    python perf/moe_perf.py --where shm --tokens 128  # quicker

Bisection ideal (fabric): the payload bytes each leaf must send to the other leaf (a token
counts once per destination rank, as it travels), over the leaf's uplink capacity.
Hidden communication = 1 - (overlapped - compute) / (dispatch + combine), from the phases.
CPU per call: the CPU seconds spent during a variant's timed calls, by kind (each rank's calling
thread and uccl engine threads; the host's user, system, softirq and idle time, which includes
other processes). CPU floor: every rank's threads plus the host's softirq (the emulated fabric's
packet forwarding) over the host's cores; on a host with fewer cores than ranks no schedule of
the same work finishes faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_moe_worker.py")
VARIANTS = ["uccl overlapped", "uccl sequential", "megatron on uccl", "megatron on gloo"]


def bisection_ideal(spec, counts: list, row_bytes: int) -> float:
    """Seconds to move the deduplicated rows that cross between leaves, at the uplinks' rate."""
    cap = sum(spec.uplink_rates()) / 8
    leaf_of = {h: leaf for leaf in range(spec.leaves) for h in spec.hosts_of(leaf)}
    worst = 0.0
    for leaf in range(spec.leaves):
        out = sum(counts[s][d] for s in range(len(counts)) for d in range(len(counts))
                  if leaf_of[s] == leaf and leaf_of[d] != leaf)
        into = sum(counts[s][d] for s in range(len(counts)) for d in range(len(counts))
                   if leaf_of[d] == leaf and leaf_of[s] != leaf)
        worst = max(worst, max(out, into) * row_bytes / cap)
    return worst


def worker_args(args) -> list:
    return [WORKER, "--tokens", str(args.tokens), "--hidden", str(args.hidden), "--experts", str(args.experts),
            "--topk", str(args.topk), "--ffn", str(args.ffn), "--dtype", args.dtype, "--iters", str(args.iters),
            "--chunk-bytes", str(args.chunk_bytes), "--compute-nice", str(args.compute_nice),
            "--max-batch-chunks", str(args.max_batch_chunks), "--lag-wait", str(args.lag_wait),
            "--header-grace", str(args.header_grace), "--fused-path", args.fused_path,
            "--variants", args.variants]


def run(cmd: list, out: str, timeout: float) -> dict:
    proc = subprocess.run(cmd + ["--out", out], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not os.path.exists(out):
        raise SystemExit(f"moe_perf: {' '.join(cmd[:6])}... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


def summarize(res: dict, spec=None) -> dict:
    """What the run measured; a variant or the phases left out of --variants are left out here."""
    med = {name: statistics.median(secs) for name, secs in res["variants"].items()}
    ph = {name: statistics.median(secs) for name, secs in res.get("phases", {}).items()}
    s = {"median_s": med, "phases_s": ph, "ffn": res["ffn"], "wrong": res["wrong"], "fused_path": res.get("fused_path")}
    comm = ph.get("dispatch", 0) + ph.get("combine", 0)
    if "uccl overlapped" in med and comm:
        s["hidden_fraction"] = 1 - (med["uccl overlapped"] - ph["compute"]) / comm
        for key, other in (("sequential", "uccl sequential"), ("megatron_uccl", "megatron on uccl"),
                           ("megatron_gloo", "megatron on gloo")):
            if other in med:  # how many times faster the overlapped layer is
                s[f"overlapped_vs_{key}"] = med[other] / med["uccl overlapped"]
    if "cpu_per_call_s" in res:  # per variant: this host's CPU per call (threads: mean over ranks)
        per_rank = res["cpu_per_call_s"]
        s["cpu_per_call_s"] = {
            name: {k: (statistics.mean(r[name][k] for r in per_rank) if not k.startswith("host")
                       else per_rank[0][name][k]) for k in per_rank[0][name]}
            for name in per_rank[0]}
        # The CPU floor: no schedule finishes a call faster than the host's cores can do its CPU
        # work (every rank's threads, and the kernel's packet forwarding in softirq).
        cores = res.get("cpus") or os.cpu_count()
        s["cpu_floor_s"] = {name: (sum(r[name]["compute"] + r[name]["engine"] + r[name]["other"] for r in per_rank)
                                   + per_rank[0][name]["host softirq"] + per_rank[0][name]["host irq"]) / cores
                            for name in per_rank[0]}
    if "low_latency" in res:
        s["low_latency_us"] = statistics.median(res["low_latency"]["seconds"]) * 1e6
    if spec is not None and ph:
        ideal = bisection_ideal(spec, res["counts"], res["row_bytes"])
        s.update(ideal_s=ideal, dispatch_vs_ideal=ph["dispatch"] / ideal, combine_vs_ideal=ph["combine"] / ideal)
    return s


def print_summary(where: str, s: dict) -> None:
    print(f"\n== {where} (expert FFN {s['ffn']}) ==")
    for name, t in s["median_s"].items():
        print(f"  {name:<18} {t * 1e3:9.1f} ms   wrong={s['wrong'][name]}")
    for name, c in s.get("cpu_per_call_s", {}).items():
        print(f"  cpu per call, {name}: per rank compute thread {c['compute'] * 1e3:.0f} ms, engines "
              f"{c['engine'] * 1e3:.0f} ms; host user+nice {(c['host user'] + c['host nice']) * 1e3:.0f}, system {c['host system'] * 1e3:.0f}, "
              f"softirq {c['host softirq'] * 1e3:.0f}, idle {c['host idle'] * 1e3:.0f} ms")
    if s.get("cpu_floor_s"):
        print("  cpu floor (this run's CPU work over the host's cores): " + ", ".join(
            f"{name} {t * 1e3:.0f} ms ({s['median_s'][name] / t:.2f}x of it)" for name, t in s["cpu_floor_s"].items()))
    if s.get("fused_path"):
        print(f"  overlapped ran the {s['fused_path'][0]} path ({s['fused_path'][1]})")
    if s["phases_s"]:
        print("  phases: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in s["phases_s"].items()))
    if "hidden_fraction" in s:
        print("  overlapped layer speed-up: " + ", ".join(f"{k.split('_vs_')[1]} {v:.2f}x" for k, v in s.items()
                                                        if k.startswith("overlapped_vs_"))
              + f"; communication hidden {s['hidden_fraction']:.0%}")
    if "ideal_s" in s:
        print(f"  bisection ideal {s['ideal_s'] * 1e3:.1f} ms: dispatch {s['dispatch_vs_ideal']:.2f}x, "
              f"combine {s['combine_vs_ideal']:.2f}x")
    if "low_latency_us" in s:
        print(f"  low-latency dispatch + combine: {s['low_latency_us']:.0f} us")


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wheres = list(result["summary"])
    fig, axes = plt.subplots(1, len(wheres), figsize=(6 * len(wheres), 4.5), squeeze=False)
    for ax, where in zip(axes[0], wheres):
        s = result["summary"][where]
        names, vals = list(s["median_s"]), list(s["median_s"].values())
        for phase, label in (("dispatch", "dispatch alone"), ("compute", "experts alone"), ("combine", "combine alone")):
            if phase in s["phases_s"]:
                names.append(label)
                vals.append(s["phases_s"][phase])
        if "low_latency_us" in s:
            names.append("low-latency dispatch + combine")
            vals.append(s["low_latency_us"] * 1e-6)
        ax.barh(names, [v * 1e3 for v in vals], color=[f"C{i}" for i in range(len(names))])
        if "ideal_s" in s:
            ax.axvline(s["ideal_s"] * 1e3, color="k", ls="--", label="bisection ideal (dispatch or combine)")
            ax.legend(loc="lower right")
        ax.invert_yaxis()
        ax.set_xlabel("ms per layer (slowest rank, median)")
        title = where.replace('; ', chr(10))
        if "overlapped_vs_sequential" in s:
            title += f"\noverlapped {s['overlapped_vs_sequential']:.2f}x sequential, hides {s['hidden_fraction']:.0%}"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--where", default="shm,fabric")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--topk", type=int, default=4)
    ap.add_argument("--ffn", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--chunk-bytes", type=int, default=256 << 10)
    ap.add_argument("--compute-nice", type=int, default=0)
    ap.add_argument("--max-batch-chunks", type=int, default=0,
                    help="Buffer(max_batch_chunks=): an expert's rows per run in the fused call (0: all)")
    ap.add_argument("--lag-wait", type=float, default=0.02,
                    help="Buffer(lag_wait=): seconds an expert waits for a lagging source's rows")
    ap.add_argument("--header-grace", type=float, default=0.05,
                    help="Buffer(header_grace=): seconds the fused call waits for late headers before it computes "
                    "its own tokens alone")
    ap.add_argument("--fused-path", default="auto", choices=("auto", "pipelined", "sequential"),
                    help="Buffer(fused_path=): auto runs the sequential composition over shared memory")
    ap.add_argument("--variants", default="overlapped,sequential,megatron-uccl,megatron-gloo,phases,low-latency")
    ap.add_argument("--ranks", type=int, default=4, help="ranks on one host (shm)")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--leaves", type=int, default=2)
    ap.add_argument("--spines", type=int, default=2)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--mtu", type=int, default=1500, help="fabric link MTU (jumbo frames: fewer packets for "
                    "the emulating kernel to forward on the host's cores)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "moe_perf.json"))
    args = ap.parse_args(argv)
    result = {"benchmark": "moe_perf", "setting": vars(args), "load_before": os.getloadavg(), "runs": {},
              "summary": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        if "shm" in args.where:
            cmd = [sys.executable, "-m", "uccl.launch.run", "--nproc-per-node", str(args.ranks), "--transport", "shm"]
            res = run(cmd + worker_args(args), out, args.timeout)
            result["runs"]["one host (shm)"] = res
            result["summary"]["one host (shm)"] = summarize(res)
            print_summary("one host (shm)", result["summary"]["one host (shm)"])
        if "fabric" in args.where:
            from uccl.fabric import Fabric, FabricSpec
            from uccl.fabric import emulator as fabmod

            fabmod.handle_signals()
            spec = FabricSpec(hosts=args.hosts, leaves=args.leaves, spines=args.spines, rate=args.rate, mtu=args.mtu)
            with Fabric(spec) as fab:
                cmd = [sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name]
                res = run(cmd + worker_args(args), out, args.timeout)
            where = f"fabric ({spec.describe()})"
            result["runs"][where] = res
            result["summary"][where] = summarize(res, spec)
            print_summary(where, result["summary"][where])
    result["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    plot(result, args.json.replace(".json", ".png"))
    print(f"\nload {result['load_before'][0]:.1f} -> {result['load_after'][0]:.1f}; "
          f"wrote {args.json} and {args.json.replace('.json', '.png')}")


if __name__ == "__main__":
    main()
