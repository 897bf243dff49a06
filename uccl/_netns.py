"""Network namespaces joined by veth, for tests and benchmarks on one machine.

    with NetnsPair() as pair:            # two hosts, 10.a.b.1 and 10.a.b.2
        pair.set_loss(1.0)                # kernel drops 1% of UDP packets (nftables numgen)
        pair.set_rate("200mbit")          # tc tbf on both veth ends
        proc = pair.popen(0, [sys.executable, "worker.py"], env=...)

Names are unique per pair (pid + random), and everything is removed on exit,
failures included: deleting a namespace removes its veth end, qdiscs and nft tables.
Needs root and `ip`; `available()` says whether this machine can do it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from typing import Optional, Sequence


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def available() -> tuple[bool, str]:
    """(True, "") if namespaces can be made here, else (False, why)."""
    if os.geteuid() != 0:
        return False, "needs root"
    if shutil.which("ip") is None:
        return False, "needs iproute2 (ip)"
    name = f"uccl-probe-{os.getpid()}-{random.randrange(1 << 30)}"
    try:
        _run("ip", "netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        return False, f"ip netns add failed: {getattr(exc, 'stderr', exc)}"
    _run("ip", "netns", "del", name, check=False)
    return True, ""


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
                _run("ip", "netns", "add", ns)
                self.ns_run(self.names.index(ns), "ip", "link", "set", "lo", "up")
            _run("ip", "link", "add", self.devs[0], "netns", self.names[0], "type", "veth", "peer", "name",
                 self.devs[1], "netns", self.names[1])
            for i in range(2):
                self.ns_run(i, "ip", "addr", "add", f"{self.addrs[i]}/24", "dev", self.devs[i])
                self.ns_run(i, "ip", "link", "set", self.devs[i], "mtu", str(self.mtu), "up")
            self._up = True
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in self.names:
            _run("ip", "netns", "del", ns, check=False)
        self._up = False

    def __enter__(self) -> "NetnsPair":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- running things --------------------------------------------------
    def ns_run(self, host: int, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", self.names[host], *argv, check=check)

    def popen(self, host: int, argv: Sequence[str], env: Optional[dict] = None, **kw) -> subprocess.Popen:
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        return subprocess.Popen(["ip", "netns", "exec", self.names[host], *argv], env=full_env, **kw)

    # -- impairments (the kernel's own) -----------------------------------
    def set_loss(self, percent: float, hosts: Sequence[int] = (0, 1), protocols: Sequence[str] = ("udp",)) -> None:
        """Drops `percent`% of incoming packets of `protocols` at each host in `hosts` (nftables numgen)."""
        threshold = int(round(percent * 100))  # out of 10000
        match = "meta l4proto { " + ", ".join(protocols) + " }"
        for h in hosts:
            script = ("table inet uccl_loss {\n  chain input {\n"
                      "    type filter hook input priority 0; policy accept;\n"
                      f"    {match} numgen random mod 10000 < {threshold} drop\n  }}\n}}\n")
            subprocess.run(["ip", "netns", "exec", self.names[h], "nft", "-f", "-"], input=script, text=True,
                           check=True, capture_output=True)

    def clear_loss(self) -> None:
        for h in range(2):
            self.ns_run(h, "nft", "delete", "table", "inet", "uccl_loss", check=False)

    def set_rate(self, rate: str, burst: str = "64kb", latency: str = "50ms", hosts: Sequence[int] = (0, 1)) -> None:
        """Token-bucket limits each host's egress on the veth (tc tbf)."""
        for h in hosts:
            self.ns_run(h, "tc", "qdisc", "replace", "dev", self.devs[h], "root", "tbf", "rate", rate, "burst", burst,
                        "latency", latency)

    def clear_rate(self) -> None:
        for h in range(2):
            self.ns_run(h, "tc", "qdisc", "del", "dev", self.devs[h], "root", check=False)

    def segment_in_kernel(self, on: bool = True) -> None:
        """Makes the veth cut UDP GSO trains into single packets as they leave (gso_max_segs 1),
        so per-packet impairments (loss) apply to each packet, not to a whole train."""
        for h in range(2):
            self.ns_run(h, "ip", "link", "set", self.devs[h], "gso_max_segs", "1" if on else "65535")


# -- running one rank per namespace --------------------------------------------

_RESULT = "UCCL_NETNS_RESULT "


def run_pair(pair: NetnsPair, target: str, args: dict, env: Optional[dict] = None, timeout: float = 120.0,
             may_die: Sequence[int] = ()) -> list:
    """Runs `target` ("path/to/file.py:function") as rank 0 in host 0 and rank 1 in host 1;
    function(bootstrap, **args) returns something JSON-able. Returns both results
    (None for a rank in `may_die` that exited without one); raises with each rank's stderr otherwise."""
    import json
    import sys

    port = 20000 + random.randrange(20000)  # the namespaces are fresh: nothing else listens there
    procs = []
    for rank in range(2):
        rank_env = {"RANK": rank, "WORLD_SIZE": 2, "LOCAL_RANK": 0, "MASTER_ADDR": pair.addrs[0],
                    "MASTER_PORT": port, "UCCL_TRANSPORT": "net",
                    "UCCL_NETNS_MAY_DIE": ",".join(str(r) for r in may_die), **(env or {})}
        procs.append(pair.popen(rank, [sys.executable, "-m", "uccl._netns", target, json.dumps(args)], env=rank_env,
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
        line = next((l for l in out.splitlines() if l.startswith(_RESULT)), None)
        if line is not None and p.returncode == 0:
            results.append(json.loads(line[len(_RESULT):]))
        elif rank in may_die:
            results.append(None)
        else:
            results.append(None)
            failures.append(f"rank {rank} (exit {p.returncode}):\n{err[-4000:]}")
    if failures:
        raise AssertionError("\n".join(failures))
    return results


def _rank_main(target: str, args_json: str) -> None:
    import importlib.util
    import json

    from uccl.transport.bootstrap import bootstrap_from_env

    path, func = target.rsplit(":", 1)
    spec = importlib.util.spec_from_file_location("_uccl_netns_target", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bs = bootstrap_from_env(timeout=60)
    result = getattr(module, func)(bs, **json.loads(args_json))
    # Rank 0 hosts the store: it leaves only after every other rank is done with it.
    if bs.rank == 0:
        may_die = {int(r) for r in os.environ.get("UCCL_NETNS_MAY_DIE", "").split(",") if r}
        for r in range(1, bs.world_size):
            if r not in may_die:
                bs.store.get(f"netns/done/{r}")
    else:
        bs.store.set(f"netns/done/{bs.rank}", b"1")
    print(_RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    import sys

    _rank_main(sys.argv[1], sys.argv[2])
