"""Two network namespaces joined by one veth, for tests and benchmarks on one machine.

    with NetnsPair() as pair:            # two hosts, 10.a.b.1 and 10.a.b.2
        pair.set_loss(1.0)                # kernel drops 1% of UDP packets (nftables numgen)
        pair.set_rate("200mbit")          # tc tbf on both veth ends
        results = run_pair(pair, "workers.py:exchange", {"sizes": [4096]})

Names are unique per pair (pid + random), and everything is removed on exit,
failures included: deleting a namespace removes its veth end, qdiscs and nft tables.
Needs root and iproute2; `available()` says whether this machine can do it. Built from the
primitives in uccl.fabric.netns (commands that fail raise FabricError).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from typing import Optional, Sequence

from uccl.fabric import netns
from uccl.fabric.netns import available

__all__ = ["NetnsPair", "available", "run_pair"]

LOSS_TABLE = "uccl_loss"  # the nftables table of the loss rule, in each host


class NetnsPair:
    """Two namespaces ("hosts" 0 and 1) joined by one veth pair."""

    def __init__(self, mtu: int = 1500, tag: Optional[str] = None) -> None:
        tag = tag or f"{os.getpid() % 100000}{random.randrange(1000):03d}"
        self.names = [f"uccl{tag}a", f"uccl{tag}b"]
        self.devs = [f"ve{tag}a", f"ve{tag}b"]  # interface names stay under 15 characters
        octet2, octet3 = 64 + random.randrange(64), random.randrange(256)
        self.addrs = [f"10.{octet2}.{octet3}.1", f"10.{octet2}.{octet3}.2"]
        self.mtu = mtu
        self._up = False

    # -- lifecycle -------------------------------------------------------
    def up(self) -> "NetnsPair":
        try:
            for ns in self.names:
                netns.add_namespace(ns)
            netns.add_veth(self.names[0], self.devs[0], self.names[1], self.devs[1])
            for i in range(2):
                netns.set_address(self.names[i], self.devs[i], f"{self.addrs[i]}/24", self.mtu)
            self._up = True
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in self.names:
            netns.delete_namespace(ns)
        self._up = False

    def __enter__(self) -> "NetnsPair":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- running things --------------------------------------------------
    def ns_run(self, host: int, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return netns.ns_run(self.names[host], *argv, check=check)

    def popen(self, host: int, argv: Sequence[str], env: Optional[dict] = None, **kw) -> subprocess.Popen:
        return netns.ns_popen(self.names[host], argv, env=env, **kw)

    # -- impairments (the kernel's own) -----------------------------------
    def set_loss(self, percent: float, hosts: Sequence[int] = (0, 1), protocols: Sequence[str] = ("udp",)) -> None:
        """Drops `percent`% of incoming packets of `protocols` at each host in `hosts` (nftables numgen)."""
        match = "meta l4proto { " + ", ".join(protocols) + " }"
        for h in hosts:
            netns.add_random_drop(self.names[h], LOSS_TABLE, "input", match, percent)

    def clear_loss(self) -> None:
        for h in range(2):
            netns.delete_table(self.names[h], LOSS_TABLE)

    def set_rate(self, rate: str, burst: str = "64kb", latency: str = "50ms", hosts: Sequence[int] = (0, 1)) -> None:
        """Token-bucket limits each host's egress on the veth (tc tbf)."""
        for h in hosts:
            netns.set_tbf(self.names[h], self.devs[h], rate, burst, latency=latency)

    def clear_rate(self) -> None:
        for h in range(2):
            netns.clear_qdisc(self.names[h], self.devs[h])

    def segment_in_kernel(self, on: bool = True) -> None:
        """Makes the veth cut UDP GSO trains into single packets as they leave (gso_max_segs 1),
        so per-packet impairments (loss) apply to each packet, not to a whole train."""
        for h in range(2):
            netns.set_segmentation(self.names[h], self.devs[h], on)


# -- running one rank per namespace --------------------------------------------


def run_pair(pair: NetnsPair, target: str, args: dict, env: Optional[dict] = None, timeout: float = 120.0,
             may_die: Sequence[int] = ()) -> list:
    """Runs `target` ("path/to/file.py:function") as rank 0 in host 0 and rank 1 in host 1;
    function(bootstrap, **args) returns something JSON-able. Returns both results
    (None for a rank in `may_die` that exited without one); raises with each rank's stderr otherwise."""
    from uccl.testing._pair_rank import RESULT_PREFIX

    port = 20000 + random.randrange(20000)  # the namespaces are fresh: nothing else listens there
    procs = []
    for rank in range(2):
        rank_env = {"RANK": rank, "WORLD_SIZE": 2, "LOCAL_RANK": 0, "MASTER_ADDR": pair.addrs[0],
                    "MASTER_PORT": port, "UCCL_TRANSPORT": "net",
                    "UCCL_NETNS_MAY_DIE": ",".join(str(r) for r in may_die), **(env or {})}
        procs.append(pair.popen(rank, [sys.executable, "-m", "uccl.testing._pair_rank", target, json.dumps(args)], env=rank_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            try:
                outs.append(p.communicate(timeout=timeout))
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate())
                outs[-1] = (outs[-1][0], outs[-1][1] + f"\n[killed after {timeout:.0f} s]")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results, failures = [], []
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        line = next((l for l in out.splitlines() if l.startswith(RESULT_PREFIX)), None)
        if line is not None and p.returncode == 0:
            results.append(json.loads(line[len(RESULT_PREFIX):]))
        elif rank in may_die:
            results.append(None)
        else:
            results.append(None)
            failures.append(f"rank {rank} (exit {p.returncode}):\n{err[-4000:]}")
    if failures:
        raise AssertionError("\n".join(failures))
    return results
