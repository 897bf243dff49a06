"""Network-namespace primitives: the one place uccl drives `ip`, `tc` and `nft`.

Namespaces, veth pairs, addresses, routes' prerequisites, tc tbf rate limits, random
loss with nftables `numgen`, and reading a namespace's device counters. The fabric
emulator (uccl.fabric.emulator) and the two-host test pair (uccl.testing.netns) are both
built from these. Every command that fails raises FabricError with the tool's own message.
Needs root (CAP_NET_ADMIN) and iproute2; `available()` says whether this machine can.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
from typing import Optional, Sequence


class FabricError(RuntimeError):
    """Anything that stops namespaces or a fabric from being built or used, said in one sentence."""


def run(argv: Sequence[str], check: bool = True, input: Optional[str] = None,
        capture: bool = True) -> subprocess.CompletedProcess:
    """Runs a command; raises FabricError if it is missing or (with check) fails."""
    try:
        res = subprocess.run(list(argv), capture_output=capture, text=True, input=input)
    except FileNotFoundError as exc:
        raise FabricError(f"{argv[0]} is not installed ({exc})") from None
    if check and res.returncode != 0:
        raise FabricError(f"`{' '.join(argv)}` failed: {(res.stderr or res.stdout or '').strip()}")
    return res


def ns_run(ns: str, *argv: str, check: bool = True, input: Optional[str] = None,
           capture: bool = True) -> subprocess.CompletedProcess:
    """Runs a command inside namespace `ns`."""
    return run(["ip", "netns", "exec", ns, *argv], check=check, input=input, capture=capture)


def ns_popen(ns: str, argv: Sequence[str], env: Optional[dict] = None, **kw) -> subprocess.Popen:
    """Starts a process inside namespace `ns` with this process's environment plus `env`."""
    full = dict(os.environ)
    full.update({k: str(v) for k, v in (env or {}).items()})
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=full, **kw)


def check_available() -> None:
    """Raises one clear FabricError if namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise FabricError("uccl-fabric needs root (CAP_NET_ADMIN) to create network namespaces; run it with sudo")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise FabricError(f"uccl-fabric needs `{tool}` (iproute2), which is not installed")
    probe = f"ufprobe{os.getpid()}{random.randrange(1 << 20):05x}"
    res = run(["ip", "netns", "add", probe], check=False)
    if res.returncode != 0:
        raise FabricError(f"this machine cannot create network namespaces: {res.stderr.strip()}")
    run(["ip", "netns", "del", probe], check=False)


def available() -> tuple[bool, str]:
    """(True, "") if namespaces can be made here, else (False, why)."""
    try:
        check_available()
        return True, ""
    except FabricError as exc:
        return False, str(exc)


def list_namespaces() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"], check=False).stdout.splitlines()
            if line.split()]


# ---- building ------------------------------------------------------------------------

def add_namespace(ns: str, ipv6: bool = True) -> None:
    """A namespace with its loopback up; ipv6=False keeps router solicitations and DAD
    noise out of the link counters."""
    run(["ip", "netns", "add", ns])
    ns_run(ns, "ip", "link", "set", "lo", "up")
    if not ipv6:
        ns_run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")


def kill_processes(ns: str) -> None:
    """SIGKILLs every process still inside namespace `ns`."""
    for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_namespace(ns: str) -> None:
    """Removes a namespace (its veth ends, qdiscs and nft tables go with it); no error if gone."""
    run(["ip", "netns", "del", ns], check=False)


def add_veth(ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> None:
    """A veth pair with end `dev_a` in `ns_a` and `dev_b` in `ns_b`."""
    run(["ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b])


def set_address(ns: str, dev: str, cidr: str, mtu: int) -> None:
    """Gives `dev` the address `cidr` (10.0.0.1/24) and MTU, and brings it up."""
    ns_run(ns, "ip", "addr", "add", cidr, "dev", dev)
    ns_run(ns, "ip", "link", "set", dev, "mtu", str(mtu), "up")


def set_segmentation(ns: str, dev: str, on: bool = True) -> None:
    """gso_max_segs 1 makes `dev` cut GSO trains into single packets as they leave, so
    per-packet impairments (loss, hashing, counters) act on real packets."""
    ns_run(ns, "ip", "link", "set", dev, "gso_max_segs", "1" if on else "65535")


def set_tbf(ns: str, dev: str, rate: str, burst: str, limit: Optional[str] = None,
            latency: Optional[str] = None) -> None:
    """Token-bucket limit on `dev`'s egress (tc tbf); queue bounded by `limit` bytes or `latency`."""
    bound = ["limit", limit] if limit is not None else ["latency", latency or "50ms"]
    ns_run(ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", burst, *bound)


def clear_qdisc(ns: str, dev: str) -> None:
    ns_run(ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)


def add_random_drop(ns: str, table: str, hook: str, match: str, percent: float, counter: bool = False) -> None:
    """Drops `percent`% of the packets matching `match` at netfilter hook `hook` (input,
    forward) in an nftables table of its own (nftables numgen, in steps of 0.01%)."""
    threshold = int(round(float(percent) * 100))  # out of 10000
    script = (f"table inet {table} {{\n  chain {hook} {{\n"
              f"    type filter hook {hook} priority 0; policy accept;\n"
              f"    {match} numgen random mod 10000 < {threshold}{' counter' if counter else ''} drop\n  }}\n}}\n")
    ns_run(ns, "nft", "-f", "-", input=script)


def delete_table(ns: str, table: str) -> None:
    ns_run(ns, "nft", "delete", "table", "inet", table, check=False)


# ---- reading counters -------------------------------------------------------------------

_libc = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns failed")


def read_netdev(ns: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev of namespace `ns` without starting a process: this thread enters the
    namespace, reads its own view, and comes back."""
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    except FileNotFoundError:
        raise FabricError(f"namespace {ns} is gone (removed behind this fabric's back?)") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            with open("/proc/thread-self/net/dev") as f:
                text = f.read()
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
    out = {}
    for line in text.splitlines()[2:]:
        dev, _, rest = line.partition(":")
        v = [int(x) for x in rest.split()]
        out[dev.strip()] = {"rx_bytes": v[0], "rx_packets": v[1], "rx_dropped": v[3],
                            "tx_bytes": v[8], "tx_packets": v[9], "tx_dropped": v[11]}
    return out


def tbf_stats(ns: str) -> dict[str, dict]:
    """Drops, overlimits and backlog of every root tbf qdisc in `ns`, by device."""
    res = ns_run(ns, "tc", "-s", "-j", "qdisc", "show", check=False)
    out = {}
    try:
        for q in json.loads(res.stdout or "[]"):
            if q.get("root") and q.get("kind") == "tbf":
                out[q["dev"]] = {"drops": q.get("drops", 0), "overlimits": q.get("overlimits", 0),
                                 "backlog": q.get("backlog", 0)}
    except json.JSONDecodeError:
        pass
    return out


def counted_packets(ns: str, table: str) -> int:
    """Packets counted by the rules of nftables table `table` in `ns` (0 if it is absent)."""
    res = ns_run(ns, "nft", "-j", "list", "table", "inet", table, check=False)
    n = 0
    if res.returncode == 0:
        for item in json.loads(res.stdout).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    n += expr["counter"]["packets"]
    return n
