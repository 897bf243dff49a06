"""Helpers shared by the benchmarks: size parsing, sweeps, plots."""

from __future__ import annotations

from uccl.units import parse_rate as rate_bps, parse_size  # noqa: F401  (the benchmarks' flags)


def add_fabric_args(ap, queue: bool = True) -> None:
    """The leaf-spine fabric's flags, with the benchmarks' default: 4 hosts / 2 leaves /
    2 spines, 100 Mbit/s uplinks (uccl.fabric.FabricSpec)."""
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--leaves", type=int, default=2)
    ap.add_argument("--spines", type=int, default=2)
    ap.add_argument("--rate", default="100mbit", help="uplink rate (tc style)")
    if queue:
        ap.add_argument("--queue", default="64kb", help="tbf queue per uplink direction")


def size_range(lo: int, hi: int, factor: int) -> list[int]:
    sizes, s = [], lo
    while s <= hi:
        sizes.append(s)
        s = s * factor if factor > 1 else s + max(1, -factor)
    return sizes


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if float(n).is_integer() else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def plot_series(path: str, title: str, series: dict, ylabel: str, xlabel: str = "message size") -> None:
    """One line per series of (size, value) points, log-log, sizes labelled in bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ticks = [x for x in sorted({x for pts in series.values() for x, _ in pts})]
    if ticks:
        step = max(1, len(ticks) // 10)
        ax.set_xticks(ticks[::step])
        ax.set_xticklabels([human(t) for t in ticks[::step]], rotation=30)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def send_writes(ep, peer: int, src, rkey: int, size: int, iters: int, depth: int) -> None:
    """The sending side of a timed write stream: `iters` writes of `size` bytes with up to
    `depth` in flight, the last one carrying an immediate; returns once the receiver has
    answered it (with a zero-length write of its own)."""
    pending = []
    for i in range(iters):
        pending.append(ep.write(peer, src, rkey, length=size, imm=1 if i == iters - 1 else None))
        if len(pending) >= depth:
            pending.pop(0).wait()
    for r in pending:
        r.wait()
    ep.wait_remote_write(peer)


def pingpong_one_way_us(ep, peer: int, initiator: bool, src, rkey: int, size: int, iters: int, warmup: int) -> float:
    """One-way latency through Python: a ping-pong of writes-with-immediate, round trip / 2."""
    import time

    for i in range(warmup + iters):
        if i == warmup:
            t0 = time.perf_counter()
        if initiator:
            ep.write(peer, src, rkey, length=size, imm=i).wait()
            ep.wait_remote_write(peer)
        else:
            ep.wait_remote_write(peer)
            ep.write(peer, src, rkey, length=size, imm=i).wait()
    return (time.perf_counter() - t0) / iters / 2 * 1e6
