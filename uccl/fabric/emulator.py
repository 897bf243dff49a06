"""An emulated leaf-spine datacenter fabric on one machine (network namespaces).

    from uccl.fabric import Fabric, FabricSpec
    with Fabric(FabricSpec(hosts=4, leaves=2, spines=2, rate="100mbit")) as fab:
        fab.exec(0, ["ping", "-c1", fab.addr(3)])
        print(fab.status())

Every host, leaf and spine is a namespace. Hosts hang off their leaf on a point-to-point
/31 veth ("eth0" in the host); each leaf has one veth uplink to every spine, rate-limited
in both directions with tc tbf and a bounded queue. Leaves reach the other leaves'
hosts over ECMP nexthop routes (one per spine) hashed on the L4 5-tuple
(`fib_multipath_hash_policy=1`, set in every router namespace, since the namespace that
forwards is the one whose policy counts). Optional random loss (nftables numgen) drops
packets as they enter the fabric at a leaf, so every host-to-host packet sees it once.

Addressing (the same in every fabric: the namespaces keep them apart):
    host k of leaf l     10.0.l.(2k+1)/31, gateway 10.0.l.(2k)     leaf l owns 10.0.l.0/24
    uplink leaf l-spine s  10.(100+s).l.0 (leaf) <-> 10.(100+s).l.1 (spine), /31

Names are unique per fabric ("uf" + pid + random tag), the state of a fabric is kept in
/run/uccl-fabric/NAME.json so the CLI can find it again, and everything is removed on
exit, on error and on SIGINT/SIGTERM (`down()`, also run by atexit as a last resort).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import random
import re
import signal
import subprocess
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from uccl.fabric import netns
from uccl.fabric.netns import FabricError, available, check_available
from uccl.units import parse_rate, parse_size

log = logging.getLogger("uccl.fabric")

STATE_DIR = "/run/uccl-fabric"
NAME_RE = re.compile(r"^uf\d+[0-9a-f]{3}$")
NS_RE = re.compile(r"^(uf\d+[0-9a-f]{3})-[hls]\d+$")  # a fabric's namespaces: NAME-h0, NAME-l1, NAME-s0
HOST_DEV = "eth0"
LOSS_TABLE = "uccl_fabric"  # the nftables table of the loss rule, in each leaf

__all__ = ["Fabric", "FabricError", "FabricSpec", "Link", "available", "check_available", "handle_signals",
           "list_fabrics", "rate_bps", "remove_stale", "size_bytes", "stale_namespaces"]


# ---- specification ----------------------------------------------------------------

def rate_bps(text: str) -> float:
    """tc-style rates: '100mbit', '1gbit', '500kbit', '12000' (bit/s)."""
    try:
        value = parse_rate(str(text))
    except ValueError:
        raise FabricError(f"{text!r} is not a rate (try 100mbit, 1gbit)") from None
    if value <= 0:
        raise FabricError(f"rate {text!r} must be positive")
    return value


def size_bytes(text: Union[str, int]) -> int:
    """tc-style sizes: '64kb', '1mb', '1500' (bytes)."""
    try:
        value = parse_size(text)
    except ValueError:
        raise FabricError(f"{text!r} is not a size (try 64kb)") from None
    if value <= 0:
        raise FabricError(f"size {text!r} must be positive")
    return value


@dataclass
class FabricSpec:
    """What to build. `rate` is one rate for every uplink or one per spine ("100mbit/50mbit":
    an asymmetric fabric); `host_rate` limits host links too (hosts_per_leaf * host_rate over
    spines * rate is the oversubscription); None means unlimited."""

    hosts: int = 4
    leaves: int = 2
    spines: int = 2
    rate: Optional[str] = "100mbit"
    host_rate: Optional[str] = None
    queue: str = "64kb"            # tbf queue limit per link direction (bytes)
    loss: float = 0.0              # percent of packets dropped as they enter the fabric
    mtu: int = 1500
    hash_seed: Optional[int] = None  # net.ipv4.fib_multipath_hash_seed (kernel >= 6.11)
    segment: bool = True           # gso_max_segs 1 on hosts: single packets on the wire

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for field in ("hosts", "leaves", "spines"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise FabricError(f"{field} must be a positive integer, got {getattr(self, field)!r}")
        if self.hosts < self.leaves:
            raise FabricError(f"{self.hosts} hosts cannot fill {self.leaves} leaves (need hosts >= leaves)")
        if self.leaves > 1 and self.spines > 100:
            raise FabricError("at most 100 spines")
        if self.leaves > 250 or self.hosts_per_leaf_max() > 127:
            raise FabricError("at most 250 leaves and 127 hosts per leaf")
        if not 0.0 <= float(self.loss) < 100.0:
            raise FabricError(f"loss must be a percentage in [0, 100), got {self.loss}")
        if not 576 <= int(self.mtu) <= 65535:
            raise FabricError(f"mtu must be in [576, 65535], got {self.mtu}")
        self.uplink_rates()  # parses (raises on bad input)
        if self.host_rate:
            rate_bps(self.host_rate)
        size_bytes(self.queue)

    def hosts_per_leaf_max(self) -> int:
        return -(-self.hosts // self.leaves)

    def leaf_of(self, host: int) -> int:
        """Hosts fill leaves in order, as evenly as possible (4 hosts / 2 leaves: 0,1 | 2,3)."""
        base, extra = divmod(self.hosts, self.leaves)
        bounds, at = [], 0
        for leaf in range(self.leaves):
            at += base + (1 if leaf < extra else 0)
            bounds.append(at)
        return next(leaf for leaf, end in enumerate(bounds) if host < end)

    def hosts_of(self, leaf: int) -> list[int]:
        return [h for h in range(self.hosts) if self.leaf_of(h) == leaf]

    def uplink_rates(self) -> list[Optional[float]]:
        """Rate of the uplinks to each spine, bit/s (None: unlimited)."""
        if not self.rate:
            return [None] * self.spines
        parts = [p for p in re.split(r"[/,]", str(self.rate)) if p.strip()]
        if len(parts) not in (1, self.spines):
            raise FabricError(f"rate {self.rate!r}: give one rate or one per spine ({self.spines})")
        rates = [rate_bps(p) for p in parts]
        return rates * self.spines if len(rates) == 1 else rates

    @classmethod
    def parse(cls, text: str) -> "FabricSpec":
        """'hosts=4,leaves=2,spines=2,rate=100mbit,loss=1' (rates per spine joined by '/')."""
        kwargs: dict = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in fields:
                raise FabricError(f"fabric spec {text!r}: {item!r} is not one of "
                                  f"{', '.join(k + '=' for k in fields)}")
            kind = type(fields[key].default) if fields[key].default is not None else str
            if key == "hash_seed":
                kind = int
            try:
                if kind is bool:
                    kwargs[key] = value.strip().lower() in ("1", "true", "yes", "on")
                elif value.strip().lower() in ("none", "") and key in ("rate", "host_rate", "hash_seed"):
                    kwargs[key] = None
                else:
                    kwargs[key] = kind(value.strip())
            except ValueError:
                raise FabricError(f"fabric spec: {key}={value!r} is not a valid {kind.__name__}") from None
        return cls(**kwargs)

    def describe(self) -> str:
        rates = ", ".join("unlimited" if r is None else f"{r / 1e6:g} Mbit/s" for r in self.uplink_rates())
        extra = [f"host links {self.host_rate}" if self.host_rate else "host links unlimited",
                 f"queue {self.queue}"] + ([f"MTU {self.mtu}"] if self.mtu != 1500 else [])
        if self.loss:
            extra.append(f"{self.loss:g}% loss")
        if self.hash_seed is not None:
            extra.append(f"hash seed {self.hash_seed}")
        return (f"{self.hosts} hosts / {self.leaves} leaves / {self.spines} spines, uplinks {rates}; "
                + ", ".join(extra))


# ---- lifetime of the fabrics this process owns ------------------------------------

_LIVE: dict[str, "Fabric"] = {}  # fabrics this process owns, removed at exit whatever happens


@atexit.register
def _remove_live_fabrics() -> None:
    for fab in list(_LIVE.values()):
        fab.down()


def handle_signals() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C (SystemExit), so `finally` blocks remove fabrics."""
    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


# ---- the fabric -------------------------------------------------------------------

@dataclass
class Link:
    """One veth: `a` end in namespace `ns_a`, `b` end in `ns_b`; rate limits on both egresses."""
    kind: str            # "host" or "uplink"
    ns_a: str
    dev_a: str
    addr_a: str
    ns_b: str
    dev_b: str
    addr_b: str
    rate: Optional[float]
    label: str


class Fabric:
    """A leaf-spine fabric of namespaces. Use as a context manager, or up()/down()."""

    def __init__(self, spec: Optional[FabricSpec] = None, name: Optional[str] = None, **kw) -> None:
        self.spec = spec or FabricSpec(**kw)
        self.name = name or f"uf{os.getpid() % 100000}{random.randrange(4096):03x}"
        if not NAME_RE.match(self.name):
            raise FabricError(f"fabric name {self.name!r} must look like uf<digits><3 hex>")
        s = self.spec
        self.host_ns = [f"{self.name}-h{i}" for i in range(s.hosts)]
        self.leaf_ns = [f"{self.name}-l{i}" for i in range(s.leaves)]
        self.spine_ns = [f"{self.name}-s{i}" for i in range(s.spines)]
        self.links: list[Link] = []
        for leaf in range(s.leaves):
            for k, h in enumerate(s.hosts_of(leaf)):
                self.links.append(Link("host", self.host_ns[h], HOST_DEV, f"10.0.{leaf}.{2 * k + 1}",
                                       self.leaf_ns[leaf], f"h{h}", f"10.0.{leaf}.{2 * k}",
                                       rate_bps(s.host_rate) if s.host_rate else None, f"h{h}-l{leaf}"))
        if s.leaves > 1:
            for leaf in range(s.leaves):
                for sp, rate in enumerate(s.uplink_rates()):
                    self.links.append(Link("uplink", self.leaf_ns[leaf], f"s{sp}", f"10.{100 + sp}.{leaf}.0",
                                           self.spine_ns[sp], f"l{leaf}", f"10.{100 + sp}.{leaf}.1", rate,
                                           f"l{leaf}-s{sp}"))
        self.owner = os.getpid()
        self.detached = False
        self._up = False

    # -- addresses ---------------------------------------------------------------
    def addr(self, host: int) -> str:
        return self._host_link(host).addr_a

    def ifname(self, host: int) -> str:
        return HOST_DEV

    def _host_link(self, host: int) -> Link:
        if not 0 <= host < self.spec.hosts:
            raise FabricError(f"host {host} is not in this fabric (hosts 0..{self.spec.hosts - 1})")
        return next(l for l in self.links if l.kind == "host" and l.ns_a == self.host_ns[host])

    @property
    def namespaces(self) -> list[str]:
        ns = self.host_ns + self.leaf_ns
        return ns + (self.spine_ns if self.spec.leaves > 1 else [])

    @property
    def routers(self) -> list[str]:
        return self.leaf_ns + (self.spine_ns if self.spec.leaves > 1 else [])

    # -- lifecycle ---------------------------------------------------------------
    def up(self) -> "Fabric":
        check_available()
        _LIVE[self.name] = self
        try:
            self._build()
            self._up = True
            self.save()
        except BaseException:
            self.down()
            raise
        log.info("fabric %s up: %s", self.name, self.spec.describe())
        return self

    def _build(self) -> None:
        s = self.spec
        for ns in self.namespaces:
            netns.add_namespace(ns, ipv6=False)  # IPv4 only: clean link counters
        for ns in self.routers:
            # the namespace that forwards hashes: L4 policy and forwarding in each router
            self.ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
                    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
            if s.hash_seed is not None:
                if not os.path.exists("/proc/sys/net/ipv4/fib_multipath_hash_seed"):
                    raise FabricError("hash_seed needs a kernel with net.ipv4.fib_multipath_hash_seed (>= 6.11)")
                self.ns(ns, "sysctl", "-qw", f"net.ipv4.fib_multipath_hash_seed={s.hash_seed}")
        for l in self.links:
            netns.add_veth(l.ns_a, l.dev_a, l.ns_b, l.dev_b)
            for ns, dev, addr in ((l.ns_a, l.dev_a, l.addr_a), (l.ns_b, l.dev_b, l.addr_b)):
                netns.set_address(ns, dev, f"{addr}/31", s.mtu)
                if s.segment:
                    netns.set_segmentation(ns, dev)
                if l.rate:
                    self._tbf(ns, dev, l.rate)
        for h in range(s.hosts):
            self.ns(self.host_ns[h], "ip", "route", "add", "default", "via", self._host_link(h).addr_b)
        for leaf in range(s.leaves if s.leaves > 1 else 0):  # one leaf: no spines, no routes between leaves
            others = [f"10.0.{o}.0/24" for o in range(s.leaves) if o != leaf]
            hops = []
            for sp in range(s.spines):
                hops += ["nexthop", "via", f"10.{100 + sp}.{leaf}.1", "dev", f"s{sp}"]
            for prefix in others:  # ECMP over every spine
                self.ns(self.leaf_ns[leaf], "ip", "route", "add", prefix, *hops)
            for sp in range(s.spines):
                self.ns(self.spine_ns[sp], "ip", "route", "add", f"10.0.{leaf}.0/24", "via",
                        f"10.{100 + sp}.{leaf}.0", "dev", f"l{leaf}")
        if s.loss:
            self.set_loss(s.loss)

    def _tbf(self, ns: str, dev: str, rate: float) -> None:
        # burst: 1 ms of line rate but at least 4 frames, so tbf never starves a frame
        burst = max(4 * (self.spec.mtu + 14), int(rate / 8 * 1e-3))
        netns.set_tbf(ns, dev, f"{int(rate)}bit", str(burst), limit=str(size_bytes(self.spec.queue)))

    def down(self) -> None:
        """Removes every namespace of this fabric (their veths, qdiscs and nft tables go with
        them) after stopping any process still inside one. Safe to call twice."""
        for ns in self.namespaces:
            netns.kill_processes(ns)
        for ns in self.namespaces:
            netns.delete_namespace(ns)
        try:
            os.unlink(self.state_path(self.name))
        except FileNotFoundError:
            pass
        _LIVE.pop(self.name, None)
        self._up = False

    def __enter__(self) -> "Fabric":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def detach(self) -> None:
        """Leaves the fabric up after this process exits (`uccl-fabric up --detach`)."""
        self.detached = True
        self.save()
        _LIVE.pop(self.name, None)

    # -- state (for the CLI) -----------------------------------------------------
    @staticmethod
    def state_path(name: str) -> str:
        return os.path.join(STATE_DIR, f"{name}.json")

    def save(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(self.state_path(self.name), "w") as f:
            json.dump({"name": self.name, "spec": dataclasses.asdict(self.spec), "owner": self.owner,
                       "detached": self.detached}, f)

    @classmethod
    def attach(cls, name: Optional[str] = None) -> "Fabric":
        """The fabric `name` made by another process (or the only one, if name is None)."""
        if name is None:
            names = list_fabrics()
            if not names:
                raise FabricError("no fabric is up (start one with `uccl-fabric up`)")
            if len(names) > 1:
                raise FabricError(f"several fabrics are up ({', '.join(names)}): name one with --name")
            name = names[0]
        try:
            with open(cls.state_path(name)) as f:
                state = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            raise FabricError(f"no fabric named {name!r} (see `uccl-fabric status`)") from None
        fab = cls(FabricSpec(**state["spec"]), name=name)
        fab.owner, fab.detached, fab._up = state["owner"], state["detached"], True
        return fab

    # -- running things ----------------------------------------------------------
    def ns(self, ns: str, *argv: str, check: bool = True, input: Optional[str] = None,
           capture: bool = True) -> subprocess.CompletedProcess:
        return netns.ns_run(ns, *argv, check=check, input=input, capture=capture)

    def resolve(self, node: Union[int, str]) -> str:
        """A node by host index (0, "3", "h3") or router name ("l0", "leaf0", "s1", "spine1")."""
        text = str(node).strip()
        m = re.fullmatch(r"(h|host|l|leaf|s|spine)?(\d+)", text)
        if not m:
            raise FabricError(f"{node!r} is not a node (h0.., l0.., s0..)")
        kind, idx = (m.group(1) or "h")[0], int(m.group(2))
        table = {"h": self.host_ns, "l": self.leaf_ns, "s": self.spine_ns}[kind]
        if idx >= len(table) or (kind == "s" and self.spec.leaves == 1):
            raise FabricError(f"{node!r} is not in this fabric ({self.spec.describe()})")
        return table[idx]

    def exec(self, node: Union[int, str], argv: Sequence[str], check: bool = False) -> subprocess.CompletedProcess:
        return self.ns(self.resolve(node), *argv, check=check)

    def popen(self, node: Union[int, str], argv: Sequence[str], env: Optional[dict] = None,
              **kw) -> subprocess.Popen:
        return netns.ns_popen(self.resolve(node), argv, env=env, **kw)

    # -- impairments -------------------------------------------------------------
    def set_loss(self, percent: float) -> None:
        """Drops `percent`% of packets entering the fabric (at their leaf, from a host), counted."""
        self.clear_loss()
        for ns in self.leaf_ns:
            netns.add_random_drop(ns, LOSS_TABLE, "forward", 'iifname "h*"', percent, counter=True)
        self.spec.loss = float(percent)

    def clear_loss(self) -> None:
        for ns in self.leaf_ns:
            netns.delete_table(ns, LOSS_TABLE)
        self.spec.loss = 0.0

    def set_hash_seed(self, seed: int) -> None:
        """Re-hashes every ECMP decision (new flows and old ones alike)."""
        for ns in self.routers:
            self.ns(ns, "sysctl", "-qw", f"net.ipv4.fib_multipath_hash_seed={int(seed)}")
        self.spec.hash_seed = int(seed)

    # -- counters ----------------------------------------------------------------
    def uplink_tx_bytes(self) -> dict[str, int]:
        """Bytes sent so far on each uplink direction: 'l0>s1' (leaf 0 up to spine 1) and
        's1>l0' (spine 1 down to leaf 0), from the kernel's device counters."""
        out = {}
        for leaf, ns in enumerate(self.leaf_ns):
            devs = netns.read_netdev(ns)
            for sp in range(self.spec.spines if self.spec.leaves > 1 else 0):
                out[f"l{leaf}>s{sp}"] = devs[f"s{sp}"]["tx_bytes"]
        for sp, ns in enumerate(self.spine_ns if self.spec.leaves > 1 else []):
            devs = netns.read_netdev(ns)
            for leaf in range(self.spec.leaves):
                out[f"s{sp}>l{leaf}"] = devs[f"l{leaf}"]["tx_bytes"]
        return out

    def qdisc_stats(self, ns: str) -> dict[str, dict]:
        return netns.tbf_stats(ns)

    def loss_drops(self) -> dict[str, int]:
        """Packets the loss rule dropped at each leaf."""
        return {f"l{leaf}": netns.counted_packets(ns, LOSS_TABLE) for leaf, ns in enumerate(self.leaf_ns)}

    def status(self) -> dict:
        """Topology and per-link byte/packet/drop counters, as a dict (the CLI prints it)."""
        links = []
        dev_cache = {ns: netns.read_netdev(ns) for ns in self.namespaces}
        q_cache = {ns: self.qdisc_stats(ns) for ns in self.namespaces}
        for l in self.links:
            a, b = dev_cache[l.ns_a].get(l.dev_a, {}), dev_cache[l.ns_b].get(l.dev_b, {})
            qa, qb = q_cache[l.ns_a].get(l.dev_a, {}), q_cache[l.ns_b].get(l.dev_b, {})
            links.append({"link": l.label, "kind": l.kind, "rate_bps": l.rate,
                          "a": f"{l.ns_a}:{l.dev_a} {l.addr_a}", "b": f"{l.ns_b}:{l.dev_b} {l.addr_b}",
                          "a_to_b": {"bytes": a.get("tx_bytes"), "packets": a.get("tx_packets"),
                                     "drops": qa.get("drops", 0) + a.get("tx_dropped", 0)},
                          "b_to_a": {"bytes": b.get("tx_bytes"), "packets": b.get("tx_packets"),
                                     "drops": qb.get("drops", 0) + b.get("tx_dropped", 0)}})
        return {"name": self.name, "spec": dataclasses.asdict(self.spec), "describe": self.spec.describe(),
                "hosts": [{"host": h, "ns": self.host_ns[h], "addr": self.addr(h), "ifname": HOST_DEV,
                           "leaf": self.spec.leaf_of(h)} for h in range(self.spec.hosts)],
                "links": links, "loss_drops": self.loss_drops() if self.spec.loss else {},
                "routes": {ns: self.ns(ns, "ip", "route", "show", check=False).stdout.strip()
                           for ns in self.leaf_ns}}


def list_fabrics() -> list[str]:
    """Names of the fabrics with state on this machine (live or left by a dead process)."""
    try:
        return sorted(f[:-5] for f in os.listdir(STATE_DIR) if f.endswith(".json") and NAME_RE.match(f[:-5]))
    except FileNotFoundError:
        return []


def stale_namespaces() -> list[str]:
    """Namespaces named like a fabric's whose fabric has no state file any more, or whose
    owner died without detaching (a SIGKILLed run)."""
    names = set(list_fabrics())
    out = []
    for ns in netns.list_namespaces():
        m = NS_RE.match(ns)
        if not m:
            continue
        fab = m.group(1)
        if fab not in names:
            out.append(ns)
            continue
        try:
            with open(Fabric.state_path(fab)) as f:
                st = json.load(f)
            if not st.get("detached") and not _alive(st.get("owner", 0)):
                out.append(ns)
        except (OSError, json.JSONDecodeError):
            out.append(ns)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True


def remove_stale() -> list[str]:
    """Removes what a killed run left behind; returns the namespaces removed."""
    gone = stale_namespaces()
    for ns in gone:
        netns.kill_processes(ns)
        netns.delete_namespace(ns)
    for fab in list_fabrics():
        try:
            with open(Fabric.state_path(fab)) as f:
                st = json.load(f)
        except (OSError, json.JSONDecodeError):
            st = {}
        if not st.get("detached") and not _alive(st.get("owner", 0)):
            os.unlink(Fabric.state_path(fab))
    return gone

