"""The figure of perf/multipath.py: completion time over the bisection ideal, per ECMP
hashing, for each variant; one panel per (collective, loss)."""

from __future__ import annotations


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result["runs"] if "ops" in r]
    losses = sorted({r["loss"] for r in result["runs"]})
    ops = result["setting"]["ops"].split(",")
    variants = result["setting"]["variants"].split(",")
    fig, axes = plt.subplots(len(ops), len(losses), figsize=(5.5 * len(losses), 3.8 * len(ops)), squeeze=False)
    markers = {"uccl sprayed": "o", "uccl 1 path": "s", "gloo (TCP)": "^"}
    for i, op in enumerate(ops):
        for j, loss in enumerate(losses):
            ax = axes[i][j]
            for k, v in enumerate(variants):
                rows = sorted((r for r in runs if r["loss"] == loss and r["variant"] == v and op in r["ops"]),
                              key=lambda r: r["seed"])
                xs = [r["seed"] - 1000 + (k - 1) * 0.12 for r in rows]
                med = [r["ops"][op]["vs_ideal"] for r in rows]
                ideal = [r["ops"][op]["ideal_s"] for r in rows]
                lo = [m - min(r["ops"][op]["seconds"]) / s for m, r, s in zip(med, rows, ideal)]
                hi = [max(r["ops"][op]["seconds"]) / s - m for m, r, s in zip(med, rows, ideal)]
                ax.errorbar(xs, med, yerr=[lo, hi], fmt=markers.get(v, "o"), capsize=3, label=v)
            for c in result.get("control", []):
                if c["loss"] == loss and op in c.get("ops", {}):
                    style = ":" if c["variant"].startswith("uccl") else "-."
                    ax.axhline(c["ops"][op]["vs_ideal"], color="tab:purple", lw=1, ls=style,
                               label=f"{c['variant']}, 1 spine carrying the bisection")
            ax.axhline(1.0, color="k", lw=0.8)
            ax.axhline(1.2, color="grey", lw=0.8, ls="--")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{op}, {loss:g}% loss")
            ax.set_xlabel("ECMP hashing (seed; ports new each run)")
            ax.set_ylabel("completion time / bisection ideal")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.suptitle(f"{result['fabric']}\n{result['setting']['bytes'] >> 20} MiB per rank; "
                 "median of iterations, bars min-max; 1.0 = bisection ideal, dashed = 1.2", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
