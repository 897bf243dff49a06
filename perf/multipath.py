"""The flow-collision experiment on an emulated leaf-spine fabric (needs root).

all_to_all and all_reduce across every host of a fabric whose leaf-spine uplinks are
rate-limited, in one run, three ways: uccl spraying over its default paths, uccl on one
path (UCCL_NUM_PATHS=1), and torch gloo (kernel TCP). All three are launched through
`uccl-run --fabric NAME` (one rank per host, the same torch.distributed program,
perf/_multipath_worker.py). Repeated over several ECMP hashings: every run gets a new
`fib_multipath_hash_seed` and new ephemeral ports. Then again under injected loss.

    sudo python perf/multipath.py                                  # 4 hosts / 2 leaves / 2 spines, 100 Mbit/s
    sudo python perf/multipath.py --seeds 3 --loss 0 --bytes 1M    # quicker
    sudo python perf/multipath.py --mtu 9000 --json perf/results/multipath_jumbo.json

The ideal is the fabric's bisection bound: the payload bytes that must leave (or enter)
a leaf, over the capacity of that leaf's uplinks, for the busiest leaf:
    all_to_all: every rank sends bytes/H to each rank; leaf l sends
                hosts(l) * (H - hosts(l)) * bytes/H across;
    all_reduce: a leaf must export and import 2(L-1)/L * bytes (reduce-scatter + all-gather
                across leaves; with 2 leaves: bytes), whatever the algorithm;
    reduce_scatter, all_gather (perf/topo.py; bytes: the full vector): leaf l exports (or
                imports) the part of the vector that belongs to the other leaves' hosts,
                summed over its own, once: (H - hosts(l)) / H * bytes.
    ideal time = max over leaves of crossing bytes * 8 / (sum of that leaf's uplink rates).
With 4 hosts / 2 leaves / 2 spines / 100 Mbit/s and 4 MiB per rank: all_to_all sends
4 MiB each way across 2 x 100 Mbit/s: 0.168 s. Headers and acks are not payload: they
count against every transport. Per-uplink bytes come from the kernel's device counters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_fabric_args, parse_size  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_multipath_worker.py")
VARIANTS = {  # name -> (torch backend, extra uccl-run flags)
    "uccl sprayed": ("uccl", []),
    "uccl 1 path": ("uccl", ["--paths", "1"]),
    "gloo (TCP)": ("gloo", []),
}


def ideal_seconds(spec, op: str, nbytes: int, ranks_per_host: int = 1) -> float:
    """Bisection bound for one collective of `nbytes` per rank (see the module docstring);
    an all_to_all's crossing bytes grow with the ranks per host (each sends nbytes)."""
    rates = spec.uplink_rates()
    if spec.leaves < 2 or any(r is None for r in rates):
        raise SystemExit("multipath: the ideal needs >= 2 leaves and rate-limited uplinks")
    cap = sum(rates) / 8  # bytes/s out of (and into) each leaf
    worst = 0.0
    for leaf in range(spec.leaves):
        n = len(spec.hosts_of(leaf))
        if op == "all_to_all":
            crossing = n * (spec.hosts - n) * nbytes * ranks_per_host / spec.hosts
        elif op in ("reduce_scatter", "all_gather"):  # the other leaves' part of the vector, once
            crossing = max(n, spec.hosts - n) * nbytes / spec.hosts
        else:
            crossing = 2 * (spec.leaves - 1) / spec.leaves * nbytes
        worst = max(worst, crossing / cap)
    return worst


class Sampler:
    """Samples the uplink byte counters every `period` s in a thread (no processes)."""

    def __init__(self, fab, period: float = 0.05) -> None:
        self.fab, self.period, self.samples = fab, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.fab.uplink_tx_bytes()))
            self._stop.wait(self.period)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self.fab.uplink_tx_bytes()))

    def at(self, t: float) -> dict:
        """Counters at time t, interpolated between the samples around it."""
        prev = self.samples[0]
        for cur in self.samples:
            if cur[0] >= t:
                span = cur[0] - prev[0]
                w = 0.0 if span <= 0 else (t - prev[0]) / span
                return {k: prev[1][k] + w * (cur[1][k] - prev[1][k]) for k in cur[1]}
            prev = cur
        return dict(self.samples[-1][1])


def uplink_usage(sampler: Sampler, fab, windows: list) -> dict:
    """Bytes per uplink direction over the measured iterations, utilization of each, and how
    evenly each leaf's outgoing bytes spread over the spines (max share / fair share)."""
    t0, t1 = windows[0][0], windows[-1][1]
    a, b = sampler.at(t0), sampler.at(t1)
    rates = fab.spec.uplink_rates()
    busy = sum(w1 - w0 for w0, w1 in windows)
    out = {"seconds": busy, "links": {}}
    for key in a:
        spine = int(key.split(">")[0][1:] if key.startswith("s") else key.split(">")[1][1:])
        nbytes = b[key] - a[key]
        out["links"][key] = {"bytes": int(nbytes), "utilization": nbytes * 8 / (rates[spine] * (t1 - t0))}
    for leaf in range(fab.spec.leaves):
        up = [out["links"][f"l{leaf}>s{s}"]["bytes"] for s in range(fab.spec.spines)]
        out[f"l{leaf}_up_imbalance"] = max(up) / (sum(up) / len(up)) if sum(up) else None
    return out


def run_variant(fab, name: str, args, tmp: str) -> dict:
    backend, flags = VARIANTS[name]
    out = os.path.join(tmp, "result.json")
    if os.path.exists(out):
        os.unlink(out)
    cmd = [sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name, *flags, WORKER, "--backend", backend,
           "--bytes", str(args.bytes), "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--ops", args.ops, "--out", out]
    with Sampler(fab) as sampler:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0 or not os.path.exists(out):
        return {"variant": name, "failed": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    with open(out) as f:
        res = json.load(f)
    row = {"variant": name, "ops": {}, "net": res.get("net", {})}
    for op, r in res["ops"].items():
        ideal = ideal_seconds(fab.spec, op, res["bytes"])
        secs = r["seconds"]
        med = statistics.median(secs)
        usage = uplink_usage(sampler, fab, r["windows"])
        # wire bytes (headers, acks, retransmits, barriers) per payload byte that had to cross
        crossing = ideal * sum(fab.spec.uplink_rates()) / 8 * len(secs)
        up0 = sum(v["bytes"] for k, v in usage["links"].items() if k.startswith("l0>"))
        row["ops"][op] = {"seconds": secs, "median_s": med, "ideal_s": ideal, "vs_ideal": med / ideal,
                          "goodput_of_bisection": ideal / med, "wrong": r["wrong"], "uplinks": usage,
                          "wire_bytes_per_payload_byte": up0 / crossing,
                          # cores the ranks kept busy (the fabric's forwarding runs on the same CPUs)
                          "rank_cores": sum(r.get("rank_cpu_seconds", [])) / sum(secs) if secs else None}
    return row


def main(argv=None) -> None:
    from tqdm import tqdm

    from uccl.fabric import emulator as fabmod
    from uccl.fabric import Fabric, FabricError, FabricSpec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fabric_args(ap)
    ap.add_argument("--mtu", type=int, default=1500, help="link MTU (9000: jumbo frames; uccl fills it)")
    ap.add_argument("--bytes", type=parse_size, default=4 << 20, help="per rank (default 4M)")
    ap.add_argument("--ops", default="all_to_all,all_reduce")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=5, help="ECMP hashings to try")
    ap.add_argument("--loss", default="0,1", help="loss settings in percent, comma separated")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the control run on one spine carrying the whole bisection")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "multipath.json"))
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    fabmod.handle_signals()
    spec = FabricSpec(hosts=args.hosts, leaves=args.leaves, spines=args.spines, rate=args.rate, queue=args.queue,
                      mtu=args.mtu)
    losses = [float(x) for x in args.loss.split(",")]
    load, described = os.getloadavg(), spec.describe()  # before the runs change its loss and seed
    runs = []
    try:
        with Fabric(spec) as fab, tempfile.TemporaryDirectory() as tmp:
            todo = [(loss, seed, v) for loss in losses for seed in range(args.seeds) for v in variants]
            for loss, seed, variant in tqdm(todo, desc="multipath", unit="run"):
                if loss != fab.spec.loss:
                    fab.set_loss(loss) if loss else fab.clear_loss()
                fab.set_hash_seed(1000 + seed)  # new hashing for old and new flows alike
                row = run_variant(fab, variant, args, tmp)
                row.update(loss=loss, seed=1000 + seed, loss_drops=fab.loss_drops() if loss else {})
                runs.append(row)
                tqdm.write(summary_line(row))
        control = run_control(spec, args, losses, variants) if args.control else []
    except FabricError as exc:
        sys.exit(f"multipath: {exc}")
    result = {"benchmark": "multipath", "fabric": described, "setting": vars(args),
              "load_before": load, "load_after": os.getloadavg(), "runs": runs, "control": control,
              "summary": summarize(runs, losses, variants, args.ops.split(","))}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print_summary(result)
    from _multipath_plot import plot

    plot(result, args.json.replace(".json", ".png"))
    print(f"wrote {args.json} and {args.json.replace('.json', '.png')}")


def run_control(spec, args, losses: list, variants: list) -> list:
    """The same collectives on one spine whose uplinks carry the whole bisection (rate x
    spines): no path choice at all. What a transport reaches here bounds what spraying can."""
    from uccl.fabric import Fabric, FabricSpec

    fat = FabricSpec(hosts=spec.hosts, leaves=spec.leaves, spines=1, queue=spec.queue, mtu=spec.mtu,
                     rate=f"{int(sum(spec.uplink_rates()))}bit")
    rows = []
    with Fabric(fat) as fab, tempfile.TemporaryDirectory() as tmp:
        for loss in losses:
            fab.set_loss(loss) if loss else fab.clear_loss()
            for variant in [v for v in variants if v != "uccl 1 path"]:
                row = run_variant(fab, variant, args, tmp)
                row.update(loss=loss, seed=None, fabric=fat.describe())
                rows.append(row)
                print("control (1 spine, " + fat.describe().split("uplinks ")[1].split(";")[0] + "): "
                      + summary_line(row), flush=True)
    return rows


def summary_line(row: dict) -> str:
    if "failed" in row:
        return f"loss {row['loss']:g}% seed {row['seed']} {row['variant']}: FAILED {row['failed'][-300:]}"
    parts = []
    for op, r in row["ops"].items():
        links = r["uplinks"]["links"]
        imb = [r["uplinks"].get(f"l{i}_up_imbalance") for i in range(2)]
        parts.append(f"{op} {r['median_s'] * 1e3:.0f} ms = {r['vs_ideal']:.2f}x ideal "
                     f"(uplink util {min(l['utilization'] for l in links.values()):.0%}-"
                     f"{max(l['utilization'] for l in links.values()):.0%}, "
                     f"imbalance {'/'.join('-' if x is None else f'{x:.2f}' for x in imb)}, "
                     f"wire/payload {r['wire_bytes_per_payload_byte']:.2f}, wrong {r['wrong']})")
    return f"loss {row['loss']:g}% seed {row['seed']} {row['variant']}: " + "; ".join(parts)


def summarize(runs: list, losses: list, variants: list, ops: list) -> dict:
    out = {}
    for loss in losses:
        for op in ops:
            for v in variants:
                xs = [r["ops"][op]["vs_ideal"] for r in runs if r["loss"] == loss and r["variant"] == v
                      and "ops" in r and op in r["ops"]]
                wrong = sum(r["ops"][op]["wrong"] for r in runs if r["loss"] == loss and r["variant"] == v
                            and "ops" in r and op in r["ops"])
                failed = sum(1 for r in runs if r["loss"] == loss and r["variant"] == v and "failed" in r)
                out[f"loss={loss:g} {op} {v}"] = {
                    "vs_ideal_min": min(xs) if xs else None, "vs_ideal_median": statistics.median(xs) if xs else None,
                    "vs_ideal_max": max(xs) if xs else None, "runs": len(xs), "failed": failed, "wrong": wrong}
            spray, gloo = out.get(f"loss={loss:g} {op} uccl sprayed"), out.get(f"loss={loss:g} {op} gloo (TCP)")
            if spray and gloo and spray["vs_ideal_max"] and gloo["vs_ideal_median"]:
                out[f"loss={loss:g} {op} gloo median / uccl sprayed worst"] = (gloo["vs_ideal_median"]
                                                                              / spray["vs_ideal_max"])
    return out


def print_summary(result: dict) -> None:
    print(f"\n{result['fabric']}; load {result['load_before'][0]:.1f} -> {result['load_after'][0]:.1f}")
    for row in result["control"]:
        print("control, one spine carrying the bisection: " + summary_line(row))
    print(f"{'setting':<44} {'min':>6} {'median':>7} {'max':>6}  (completion time / bisection ideal)")
    for key, s in result["summary"].items():
        if isinstance(s, dict):
            if s["vs_ideal_min"] is None:
                print(f"{key:<44} no result ({s['failed']} failed)")
                continue
            failed = f", {s['failed']} failed" if s["failed"] else ""
            print(f"{key:<44} {s['vs_ideal_min']:>6.2f} {s['vs_ideal_median']:>7.2f} {s['vs_ideal_max']:>6.2f}"
                  f"  wrong {s['wrong']}{failed}")
        else:
            print(f"{key:<44} {s:.2f}x")


if __name__ == "__main__":
    main()
