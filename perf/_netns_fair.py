"""Fairness of the net channel at one bottleneck: two independent uccl jobs (two
rank pairs, each its own bootstrap, endpoints and flow) stream writes from host 0
to host 1 of one namespace pair at the same time, through a tbf limit on host 0's
veth. Each sender counts the bytes whose writes completed inside a shared
wall-clock window; the driver reports each share, their sum against the link rate
and Jain's index ((x1 + x2)^2 / (2 (x1^2 + x2^2)); 1 = equal shares, 0.5 = one takes all).

    python perf/_netns_fair.py --rate 200mbit --seconds 5 --json perf/results/p2p_net_fair.json

tests/transport/test_net.py runs measure() briefly and asserts the ratio loosely.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))
from _common import rate_bps  # noqa: E402


def stream_rank(bs, start_at, seconds, chunk=1 << 20, depth=4):
    """Rank 0 keeps `depth` writes of `chunk` bytes in flight from start_at for `seconds`;
    returns the bytes completed inside that window. Rank 1 only receives."""
    from uccl.transport import Endpoint

    ep = Endpoint(bs)
    peer = 1 - bs.rank
    inbox = ep.register(np.zeros(chunk, np.uint8), "w")
    rkey = [int(k) for k in bs.allgather(str(inbox.key).encode())][peer]
    if bs.rank == 1:
        ep.wait_remote_write(peer, timeout=seconds + 120)  # rank 0's last write says "done"
        return {}
    src = ep.register(np.ones(chunk, np.uint8), "")
    time.sleep(max(0.0, start_at - time.time()))  # both jobs start together (one host clock)
    late = time.time() - start_at
    end = start_at + seconds
    done, pending = 0, []
    while time.time() < end:
        pending.append(ep.write(peer, src, rkey))
        if len(pending) >= depth:
            pending.pop(0).wait(120)
            if time.time() <= end:
                done += chunk
    for w in pending:
        w.wait(120)
    ep.write(peer, src, rkey, length=0, imm=1).wait(120)
    net = ep.stats()["peers"][peer]["net"]
    return {"bytes": done, "seconds": seconds, "late_s": late, "retransmits": net["retransmits"], "timeouts": net["timeouts"],
            "srtt_us": net["srtt_us"], "cwnd_pkts": [round(p["cwnd_bytes"] / 1472, 2) for p in net["paths"]]}


def jain(xs) -> float:
    s, q = sum(xs), sum(x * x for x in xs)
    return s * s / (len(xs) * q) if q else 0.0


def measure(rate="200mbit", seconds=5.0, env=None, flows=2, pair=None) -> dict:
    """Runs `flows` concurrent uccl jobs through one tbf (on `pair`, or a fresh
    namespace pair); returns shares and fairness."""
    import contextlib

    from uccl.testing import netns

    with (contextlib.nullcontext(pair) if pair else netns.NetnsPair()) as pair:
        pair.set_rate(rate, hosts=(0,))
        start_at = time.time() + 6.0  # room for both jobs to start their processes and bootstrap
        args = {"start_at": start_at, "seconds": seconds}
        with ThreadPoolExecutor(flows) as pool:
            futs = [pool.submit(netns.run_pair, pair, f"{HERE}:stream_rank", args, env, seconds + 180)
                    for _ in range(flows)]
            res = [f.result()[0] for f in futs]
    gbps = [r["bytes"] * 8 / r["seconds"] / 1e9 for r in res]
    link = rate_bps(rate) / 1e9
    return {"rate": rate, "seconds": seconds, "flows_gbps": gbps, "sum_of_link": sum(gbps) / link,
            "ratio": max(gbps) / min(gbps) if min(gbps) > 0 else float("inf"), "jain": jain(gbps),
            "retransmits": [r["retransmits"] for r in res], "timeouts": [r["timeouts"] for r in res],
            "late_s": [r["late_s"] for r in res], "end_state": [{k: r[k] for k in ("srtt_us", "cwnd_pkts")} for r in res]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="200mbit")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--flows", type=int, default=2)
    ap.add_argument("--paths", type=int, default=None, help="UCCL_NUM_PATHS")
    ap.add_argument("--cc", default=None, help="UCCL_CC")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from uccl.testing import netns

    ok, why = netns.available()
    if not ok:
        sys.exit(f"fairness: cannot create network namespaces here ({why})")
    env = {}
    if args.paths:
        env["UCCL_NUM_PATHS"] = args.paths
    if args.cc:
        env["UCCL_CC"] = args.cc
    runs = []
    print(f"{args.flows} uccl flows through one tbf {args.rate} (paths={args.paths or 'default'} "
          f"cc={args.cc or 'default'}, {args.seconds:g} s each run)")
    print(f"{'run':>4} {'flows Mbit/s':>24} {'max/min':>8} {'sum/link':>9} {'Jain':>6} {'retx':>12}")
    for i in range(args.runs):
        r = measure(args.rate, args.seconds, env, args.flows)
        runs.append(r)
        flows = " ".join(f"{g * 1e3:.1f}" for g in r["flows_gbps"])
        print(f"{i:>4} {flows:>24} {r['ratio']:>8.2f} {r['sum_of_link']:>9.0%} {r['jain']:>6.3f} "
              f"{str(r['retransmits']):>12}", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"benchmark": "fairness", "transport": "net", "setting": vars(args), "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
