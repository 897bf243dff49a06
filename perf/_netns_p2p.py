"""p2p_perf --transport net: uccl's net channel between two network namespaces
joined by a veth pair, with a plain TCP stream between the same two hosts in the
same run as the peer. Impairments come from the kernel: --loss PCT (nftables
numgen drops, applied to the TCP peer too), --rate RATE (tc tbf on both ends).

    python perf/p2p_perf.py --transport net -b 16M -e 16M --json perf/results/p2p_net.json
    python perf/p2p_perf.py --transport net -b 16M -e 16M --loss 1
    python perf/p2p_perf.py --transport net -b 16M -e 16M --rate 200mbit
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import parse_size, pingpong_one_way_us, plot_series, rate_bps, send_writes, size_range  # noqa: E402

HERE = os.path.abspath(__file__)


def cpu_s() -> float:
    """CPU seconds (user + system, every thread) this process has used: goodput
    per CPU second does not depend on what else the machine runs."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---- run inside the namespaces (one process per host) -------------------------

def uccl_rank(bs, sizes, budget, lat_iters, depth):
    from uccl.transport import Endpoint

    ep = Endpoint(bs)
    peer = 1 - bs.rank
    top = max(sizes)
    src = ep.register(np.random.default_rng(7).integers(0, 256, top, dtype=np.uint8), "")
    inbox = ep.register(np.zeros(top, np.uint8), "w")
    rkey = [int(k) for k in bs.allgather(str(inbox.key).encode())][peer]
    rows = []
    for size in sizes:
        iters = int(max(4, min(20000, budget // max(size, 1))))
        row = {"size": size, "iters": iters}
        if size <= (1 << 20):  # latency: ping-pong of writes-with-immediate, one-way = rtt / 2
            bs.barrier()
            row["latency_us"] = pingpong_one_way_us(ep, peer, bs.rank == 0, src, rkey, size, min(lat_iters, iters), 5)
        # goodput: rank 0 keeps `depth` writes in flight; rank 1 answers the last one
        inbox.buffer[:size] = 0
        bs.barrier()
        c0 = cpu_s()
        t0 = time.perf_counter()
        if bs.rank == 0:
            send_writes(ep, peer, src, rkey, size, iters, depth)
            row["seconds"] = time.perf_counter() - t0
            row["cpu_s"] = cpu_s() - c0
            row["goodput_gbps"] = size * iters * 8 / row["seconds"] / 1e9
        else:
            ep.wait_remote_write(peer)
            row["cpu_s"] = cpu_s() - c0
            row["correct"] = bool(np.array_equal(inbox.buffer[:size], src.buffer[:size]))
            ep.write(peer, src, rkey, length=0, imm=0).wait()
        rows.append(row)
    bs.barrier()
    stats = ep.stats()["peers"][peer].get("net", {})
    return {"rows": rows, "net": {k: v for k, v in stats.items() if k != "paths"},
            "paths": [{k: p[k] for k in ("packets_sent", "retransmits", "srtt_us", "cwnd_bytes")}
                      for p in stats.get("paths", [])]}


def tcp_rank(bs, total, chunk, addr, port):
    """A plain TCP stream of `total` bytes, host 0 -> host 1, sent from and received into
    `chunk`-byte buffers (uccl moves messages of that size from and into buffers of that size)."""
    if bs.rank == 1:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, port))
        srv.listen(1)
        bs.barrier()
        conn, _ = srv.accept()
        buf = memoryview(bytearray(chunk))
        c0 = cpu_s()
        got = 0
        while got < total:  # fill the buffer front to back, one message after another, as uccl's inbox is
            off = got % chunk
            n = conn.recv_into(buf[off:], min(chunk - off, total - got))
            if not n:
                break
            got += n
        conn.sendall(b"k")
        cpu = cpu_s() - c0
        conn.close()
        srv.close()
        return {"received": got, "cpu_s": cpu}
    bs.barrier()
    sock = socket.create_connection((addr, port))
    data = memoryview(np.random.default_rng(1).integers(0, 256, chunk, dtype=np.uint8).tobytes())
    c0 = cpu_s()
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        sock.sendall(data[:n])
        sent += n
    sock.recv(1)
    seconds = time.perf_counter() - t0
    cpu = cpu_s() - c0
    sock.close()
    return {"seconds": seconds, "goodput_gbps": total * 8 / seconds / 1e9, "cpu_s": cpu, "bytes": total}


# ---- the driver (root namespace) ---------------------------------------------

def main(argv=None) -> None:
    from uccl.testing import netns

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--minbytes", type=parse_size, default=4096)
    ap.add_argument("-e", "--maxbytes", type=parse_size, default=64 << 20)
    ap.add_argument("-f", "--stepfactor", type=int, default=4)
    ap.add_argument("--transport", default="net")
    ap.add_argument("--paths", type=int, default=None, help="UCCL_NUM_PATHS (default: the config's)")
    ap.add_argument("--cc", default=None, help="UCCL_CC")
    ap.add_argument("--mtu", type=int, default=None, help="UCCL_MTU (UDP payload per packet)")
    ap.add_argument("--link-mtu", type=int, default=1500, help="veth MTU")
    ap.add_argument("--loss", type=float, default=0.0, help="percent of packets the kernel drops")
    ap.add_argument("--rate", default=None, help="tbf rate limit on the veth, e.g. 200mbit")
    ap.add_argument("--budget", type=parse_size, default=1 << 30, help="bytes moved per size")
    ap.add_argument("--depth", type=int, default=4, help="writes kept in flight")
    ap.add_argument("--segment-in-kernel", action="store_true",
                    help="cut GSO trains on the veth so loss applies per packet (set by default with --loss)")
    ap.add_argument("--tcp-chunk", type=parse_size, default=None,
                    help="bytes per TCP send/recv call, from/into a buffer that size (default: the largest "
                         "message size, so both transports stream from and into buffers of the same size)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the namespaces get removed
    ok, why = netns.available()
    if not ok:
        sys.exit(f"p2p_perf --transport net: cannot create network namespaces here ({why})")
    sizes = size_range(args.minbytes, args.maxbytes, args.stepfactor)
    env = {}
    if args.paths:
        env["UCCL_NUM_PATHS"] = args.paths
    if args.cc:
        env["UCCL_CC"] = args.cc
    if args.mtu:
        env["UCCL_MTU"] = args.mtu
    with netns.NetnsPair(mtu=args.link_mtu) as pair:
        if args.loss or args.segment_in_kernel:
            pair.segment_in_kernel(True)
        if args.loss:
            pair.set_loss(args.loss, protocols=("udp", "tcp"))
        if args.rate:
            pair.set_rate(args.rate)
        tcp_total = int(min(args.budget, 4 << 30))
        if args.loss:  # TCP crawls under loss: a shorter stream gives the same rate
            tcp_total = int(min(tcp_total, 64 << 20))
        if args.rate:  # keep the run short on a slow link
            tcp_total = int(min(tcp_total, rate_bps(args.rate) / 8 * 5))
        tcp_chunk = args.tcp_chunk or max(sizes)
        tcp_res = netns.run_pair(pair, f"{HERE}:tcp_rank", {"total": tcp_total, "chunk": tcp_chunk,
                                                              "addr": pair.addrs[1], "port": 5201}, timeout=600)
        tcp = tcp_res[0]
        tcp["cpu_s_per_gb"] = (tcp["cpu_s"] + tcp_res[1]["cpu_s"]) / (tcp["bytes"] / 1e9)
        budget = args.budget if not args.rate else int(min(args.budget, rate_bps(args.rate) / 8 * 5))
        res = netns.run_pair(pair, f"{HERE}:uccl_rank", {"sizes": sizes, "budget": budget, "lat_iters": 500,
                                                          "depth": args.depth}, env=env, timeout=1200)
    rows = res[0]["rows"]
    for r, r1 in zip(rows, res[1]["rows"]):
        r["correct"] = r1["correct"]
        r["cpu_s_per_gb"] = (r["cpu_s"] + r1["cpu_s"]) / (r["size"] * r["iters"] / 1e9)  # both hosts
        r["vs_tcp"] = r["goodput_gbps"] / tcp["goodput_gbps"]
        if args.rate:
            r["of_link"] = r["goodput_gbps"] * 1e9 / rate_bps(args.rate)
    setting = (f"paths={args.paths or 'default'} cc={args.cc or 'default'} loss={args.loss}% "
               f"rate={args.rate or 'none'} link-mtu={args.link_mtu}")
    print(f"uccl net channel between two namespaces ({setting})")
    print(f"TCP stream, same hosts, same run: {tcp['goodput_gbps']:.3f} Gbit/s, "
          f"{tcp['cpu_s_per_gb']:.3f} CPU s/GB (both hosts)")
    print(f"{'size':>12} {'one-way us':>11} {'Gbit/s':>9} {'vs TCP':>7} {'of link':>8} {'correct':>8} "
          f"{'CPU s/GB':>9} {'vs TCP':>7}")
    for r in rows:
        lat = f"{r['latency_us']:.1f}" if "latency_us" in r else "-"
        link = f"{r['of_link']:.0%}" if "of_link" in r else "-"
        print(f"{r['size']:>12} {lat:>11} {r['goodput_gbps']:>9.3f} {r['vs_tcp']:>7.2f} {link:>8} "
              f"{'yes' if r['correct'] else 'NO':>8} {r['cpu_s_per_gb']:>9.3f} "
              f"{r['cpu_s_per_gb'] / tcp['cpu_s_per_gb']:>7.2f}")
    net = res[0]["net"]
    print(f"sender: {net.get('packets_sent')} packets, {net.get('retransmits')} retransmits, "
          f"{net.get('timeouts')} timeouts, srtt {net.get('srtt_us', 0):.0f} us; receiver drops "
          f"{res[1]['net'].get('drops')}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        out = {"benchmark": "p2p_perf", "transport": "net", "setting": vars(args), "tcp": tcp, "rows": rows,
               "sender_net": net, "receiver_net": res[1]["net"], "sender_paths": res[0]["paths"]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        plot_series(args.json.replace(".json", ".png"), f"uccl net channel vs TCP ({setting})",
                    {"uccl write goodput": [(r["size"], r["goodput_gbps"]) for r in rows],
                     "TCP stream": [(r["size"], tcp["goodput_gbps"]) for r in rows]},
                    ylabel="Gbit/s")


if __name__ == "__main__":
    main()
