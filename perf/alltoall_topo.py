"""Small all_to_all with several ranks per host on an emulated leaf-spine fabric (needs
root): aggregated per host (UCCL_ALGO=aggregated: one message per rail and host pair crosses
the network) against the flat algorithms (pairwise, direct) and what the tuner picks
(auto), per size, in one launch (`uccl-run --fabric NAME --nproc-per-node P`, which declares
the hosts and leaves). Every result is checked (perf/_alltoall_topo_worker.py).

    sudo python perf/alltoall_topo.py                       # 4 hosts / 2 leaves / 2 spines, 100 Mbit/s, 2 ranks per host
    sudo python perf/alltoall_topo.py --sizes 8,4K,64K --rounds 3
    sudo python perf/alltoall_topo.py --loss 1 --json perf/results/alltoall_topo_loss1.json

Reported: the median over rounds of a call's completion time (slowest rank), and each
flat algorithm's time over the aggregated one's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_fabric_args, human, parse_size  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_alltoall_topo_worker.py")
SIZES = "8,64,512,4K,16K,32K,64K,256K,1M"


def main(argv=None) -> None:
    from uccl.fabric import emulator as fabmod
    from uccl.fabric import Fabric, FabricError, FabricSpec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fabric_args(ap, queue=False)
    ap.add_argument("--ranks-per-host", type=int, default=2)
    ap.add_argument("--sizes", default=SIZES, help="bytes per rank, comma separated")
    ap.add_argument("--algos", default="auto,aggregated,pairwise,direct")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loss", type=float, default=0.0, help="injected loss in percent")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "alltoall_topo.json"))
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    fabmod.handle_signals()
    spec = FabricSpec(hosts=args.hosts, leaves=args.leaves, spines=args.spines, rate=args.rate)
    env = {k: v for k, v in os.environ.items() if k not in ("UCCL_ALGO", "UCCL_TOPOLOGY", "UCCL_TRANSPORT")}
    load = os.getloadavg()
    try:
        with Fabric(spec) as fab, tempfile.TemporaryDirectory() as tmp:
            if args.loss:
                fab.set_loss(args.loss)
            out = os.path.join(tmp, "result.json")
            cmd = [sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name, "--nproc-per-node",
                   str(args.ranks_per_host), WORKER, "--sizes", ",".join(map(str, sizes)), "--algos", args.algos,
                   "--rounds", str(args.rounds), "--out", out]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            if proc.returncode != 0 or not os.path.exists(out):
                sys.exit(f"alltoall_topo: exit {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}")
            with open(out) as f:
                res = json.load(f)
    except FabricError as exc:
        sys.exit(f"alltoall_topo: {exc}")
    algos = args.algos.split(",")
    med = {(r["algo"], r["bytes"]): r["median_s"] for r in res["rows"]}
    print(f"{spec.describe()}; {res['world']} ranks, {args.ranks_per_host} per host; {res['topology']}; "
          f"load {load[0]:.1f} -> {os.getloadavg()[0]:.1f}; wrong results {res['wrong']}")
    print(f"{'bytes/rank':>10} " + " ".join(f"{a + ' ms':>14}" for a in algos) + "  flat best / aggregated  auto picks")
    for s in sizes:
        flat = [med[(a, s)] for a in algos if a in ("pairwise", "direct")]
        ratio = f"{min(flat) / med[('aggregated', s)]:>10.2f}x" if flat and "aggregated" in algos else ""
        print(f"{human(s):>10} " + " ".join(f"{med[(a, s)] * 1e3:>14.3f}" for a in algos) +
              f"  {ratio:>22}  {res['auto_picks'][str(s)]}")
    result = {"benchmark": "alltoall_topo", "fabric": spec.describe(), "setting": vars(args),
              "command": " ".join(sys.argv), "load_before": load, "load_after": os.getloadavg(), **res}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
