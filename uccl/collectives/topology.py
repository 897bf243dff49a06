"""Where the ranks are: which share a host, which hosts share a leaf (rack), ...

Sources, combined at communicator creation:

* the channels: ranks the endpoint reaches over shared memory share a host;
* `UCCL_TOPOLOGY` (set by `uccl-run --fabric`), which declares hosts and the levels above
  them; or, where it is unset, Slurm's SLURM_TOPOLOGY_ADDR (see `slurm_path`).
  UCCL_TOPOLOGY's format, innermost level first::

      UCCL_TOPOLOGY = ENTRY[;ENTRY...]   or   @FILE (entries one per line, '#' comments)
      ENTRY         = RANKS=HOST[/LEAF[/...]]
      RANKS         = N | N-M            (ranks of the job)

  e.g. ``0-1=h0/leaf0;2-3=h1/leaf0;4-5=h2/leaf1;6-7=h3/leaf1``: 4 hosts of 2 ranks on 2
  leaves. Every rank appears once, every entry names the same number of levels, and all
  ranks of one host share the levels above it. Ranks on different declared hosts use the
  net channel between them, even on one machine (so a test can emulate hosts).

Slurm (topology/tree plugin) gives each task its node's address from the top switch down,
e.g. SLURM_TOPOLOGY_ADDR=s0.leaf3.node12 with SLURM_TOPOLOGY_ADDR_PATTERN=switch.switch.node:
the switch just above the node is its leaf (leaf3), the next one up level2 (s0). The node
name keeps ranks of different nodes apart as a declared host does; which ranks share a
host still comes from the channels. Nodes at different depths keep the levels they share.

Levels are named host, leaf, then level2, level3, ... Every rank must use the same source
and declare the same topology: the communicator compares digests (a value that does not
parse included) and fails on every rank otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from typing import Optional, Sequence

from uccl.errors import InvalidArgumentError

LEVEL_NAMES = ("host", "leaf")
SLURM_ADDR, SLURM_PATTERN = "SLURM_TOPOLOGY_ADDR", "SLURM_TOPOLOGY_ADDR_PATTERN"


def level_name(k: int) -> str:
    return LEVEL_NAMES[k] if k < len(LEVEL_NAMES) else f"level{k}"


def _plural(name: str) -> str:
    return "leaves" if name == "leaf" else name + "s"


def _read_spec(spec: str) -> str:
    if spec.startswith("@"):
        try:
            with open(spec[1:]) as f:
                return f.read()
        except OSError as exc:
            raise ValueError(f"cannot read the file: {exc}") from None
    return spec


def _entries(text: str) -> list:
    lines = (line.split("#", 1)[0] for line in text.replace(";", "\n").splitlines())
    return [line.strip() for line in lines if line.strip()]


def _rank_range(spec: str, part: str) -> range:
    lo, _, hi = part.partition("-")
    try:
        first, last = int(lo), int(hi) if hi else int(lo)
    except ValueError:
        raise ValueError(f"{part!r} is not a rank or a range N-M") from None
    if first < 0 or last < first:
        raise ValueError(f"bad rank range {part!r}")
    return range(first, last + 1)


def parse(spec: str) -> list:
    """Each rank's path (host, leaf, ...) from a UCCL_TOPOLOGY value, indexed by rank;
    ValueError saying what is wrong."""
    paths: dict = {}
    for entry in _entries(_read_spec(spec)):
        ranks, eq, path = entry.partition("=")
        groups = tuple(g.strip() for g in path.split("/"))
        if not eq or not all(groups):
            raise ValueError(f"entry {entry!r} is not RANKS=HOST[/LEAF...]")
        for r in _rank_range(spec, ranks.strip()):
            if r in paths:
                raise ValueError(f"rank {r} is declared twice")
            paths[r] = groups
    if not paths:
        raise ValueError("declares no rank")
    missing = [r for r in range(max(paths) + 1) if r not in paths]
    if missing:
        raise ValueError(f"ranks {missing} are not declared")
    depths = {len(p) for p in paths.values()}
    if len(depths) != 1:
        raise ValueError(f"entries name different numbers of levels {sorted(depths)}")
    above: dict = {}
    for r in sorted(paths):
        host, up = paths[r][0], paths[r][1:]
        if above.setdefault(host, up) != up:
            raise ValueError(f"host {host!r} is placed in both {'/'.join(above[host])} "
                             f"and {'/'.join(up)}")
    return [paths[r] for r in range(len(paths))]


def _counts(paths: list) -> str:
    counts = [len({p[0] for p in paths})] + [len({p[1:k + 1] for p in paths}) for k in range(1, len(paths[0]))]
    return ", ".join(f"{n} {_plural(level_name(k))}" for k, n in enumerate(counts))


def describe(spec: str, environ=None) -> str:
    """The topology source in effect and what it says, in words, for uccl.config():
    UCCL_TOPOLOGY, else Slurm's SLURM_TOPOLOGY_ADDR, else the channels alone."""
    env = os.environ if environ is None else environ
    if spec:
        try:
            paths = parse(spec)
        except ValueError as exc:
            return f"UCCL_TOPOLOGY: invalid: {exc}"
        return f"UCCL_TOPOLOGY: {len(paths)} ranks on {_counts(paths)}"
    addr, pattern = env.get(SLURM_ADDR, ""), env.get(SLURM_PATTERN, "")
    if addr:
        try:
            path = slurm_path(addr, pattern)
        except ValueError as exc:
            return f"{SLURM_ADDR}: invalid: {exc}"
        where = ", ".join(f"{level_name(k) if k else 'node'} {g}" for k, g in enumerate(path))
        return (f"{SLURM_ADDR}={addr} ({SLURM_PATTERN}={pattern}): this rank on {where}; hosts from the "
                "channels, the other ranks' places learnt when a communicator is built")
    return "none declared: hosts from the channels (ranks that share memory), no levels above"


def slurm_path(addr: str, pattern: str) -> tuple:
    """(node, leaf, level2, ...) from a SLURM_TOPOLOGY_ADDR and its pattern (components
    'switch' or 'node', top switch first, joined by '.'); ValueError saying what is wrong."""
    names, kinds = addr.split("."), pattern.split(".")
    if len(names) != len(kinds) or kinds[-1:] != ["node"] or any(k != "switch" for k in kinds[:-1]):
        raise ValueError(f"{addr!r} does not fit {SLURM_PATTERN}={pattern!r} (switch.[...].node, one name each)")
    if not all(names):
        raise ValueError(f"{addr!r} has an empty component")
    return tuple(reversed(names))


def dense(keys: Sequence) -> list:
    """Group ids 0, 1, ... in order of first appearance."""
    ids: dict = {}
    return [ids.setdefault(k, len(ids)) for k in keys]


@dataclass(frozen=True)
class Topology:
    """The topology in effect for a communicator: levels[k][rank] is the rank's group at
    level k (0: host), ids dense from 0; `declared` is the UCCL_TOPOLOGY value used (or this
    rank's SLURM_TOPOLOGY_ADDR; '' none);
    `source` where the levels above hosts came from ('UCCL_TOPOLOGY', 'SLURM_TOPOLOGY_ADDR'
    or '' for none); `link` what carries the slowest level: 'shm' (one host), 'loopback'
    (hosts declared on one machine: the net channel through this machine's stack) or
    'network' (ranks on different machines or network namespaces)."""

    levels: tuple
    declared: str = ""
    source: str = ""
    link: str = "shm"

    @property
    def names(self) -> tuple:
        return tuple(level_name(k) for k in range(len(self.levels)))

    def groups(self, k: int) -> list:
        """The ranks of each level-k group."""
        out: dict = {}
        for rank, g in enumerate(self.levels[k]):
            out.setdefault(g, []).append(rank)
        return [out[g] for g in sorted(out)]

    def __str__(self) -> str:
        parts = [f"{_plural(name)} {self.groups(k)}" for k, name in enumerate(self.names)]
        where = {"UCCL_TOPOLOGY": f"UCCL_TOPOLOGY={self.declared}", "": "from the channels"}.get(self.source,
                                                                                                self.source)
        return "; ".join(parts) + f" ({where}; slowest level over {self.link})"


class Declared:
    """This communicator's view of the declared topology: the paths (host, leaf, ...) of its
    ranks, from UCCL_TOPOLOGY (`world_ranks`: the job ranks its ranks are) or, where that is
    unset, from SLURM_TOPOLOGY_ADDR (each rank knows only its own until `check_agreement`
    gathers them), or the reason the value does not fit, kept so that every rank can learn
    it at once."""

    def __init__(self, spec: str, world_size: int, world_ranks: Optional[Sequence[int]] = None,
                 environ=None) -> None:
        env = os.environ if environ is None else environ
        self.spec, self.paths, self.error, self.why, self.mine = spec, None, "", "", None
        self.source = "UCCL_TOPOLOGY" if spec else SLURM_ADDR if env.get(SLURM_ADDR) else ""
        if self.source == SLURM_ADDR:
            self.spec = env[SLURM_ADDR]
            try:
                self.mine = slurm_path(env[SLURM_ADDR], env.get(SLURM_PATTERN, ""))
            except ValueError as exc:
                self.why, self.error = str(exc), f"{SLURM_ADDR}={self.spec}: {exc}"
            return
        if not spec:
            return
        try:
            paths = parse(spec)
            ranks = list(world_ranks) if world_ranks is not None else list(range(world_size))
            if world_ranks is None and len(paths) != world_size:
                raise ValueError(f"declares {len(paths)} ranks for a world of {world_size}")
            if len(ranks) != world_size or any(not 0 <= r < len(paths) for r in ranks):
                raise ValueError(f"declares {len(paths)} ranks, not job ranks {ranks}")
            self.paths = [paths[r] for r in ranks]
        except ValueError as exc:
            self.why, self.error = str(exc), f"UCCL_TOPOLOGY={spec}: {exc}"

    def digest(self) -> str:
        """What every rank must agree on: the declared paths, or that Slurm says where each
        rank is (each rank's address differs), or the error."""
        what = ({"error": self.error} if self.error else {"source": SLURM_ADDR} if self.source == SLURM_ADDR
                else {"paths": self.paths})
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def view(self) -> str:
        """This rank's source and value in words, for the mismatch message."""
        shown = {"UCCL_TOPOLOGY": f"UCCL_TOPOLOGY={self.spec!r}", SLURM_ADDR: f"{SLURM_ADDR} (no UCCL_TOPOLOGY)",
                 "": "no topology (UCCL_TOPOLOGY='')"}[self.source]
        return shown + (f" (invalid: {self.why})" if self.error else "")

    def adopt_slurm(self, addresses: list) -> None:
        """The paths from every rank's Slurm address (node first), cut to the levels all
        have (nodes may hang at different depths); ValueError if they contradict."""
        depth = min(len(a) for a in addresses)
        paths = [tuple(a[:depth]) for a in addresses]
        above: dict = {}
        for p in paths:
            if above.setdefault(p[0], p[1:]) != p[1:]:
                raise ValueError(f"node {p[0]!r} is placed in both {'/'.join(above[p[0]])} and {'/'.join(p[1:])}")
        self.paths = paths

    def host_tag(self, rank: int) -> str:
        """What the endpoint adds to its host identity: ranks of different declared hosts
        (or Slurm nodes) never share memory. Short (the descriptor has little room)."""
        host = self.mine[0] if self.mine else self.paths[rank][0] if self.paths is not None else None
        return "" if host is None else hashlib.sha256(host.encode()).hexdigest()[:16]


def check_agreement(rank: int, declared: Declared, bootstrap) -> None:
    """Every rank compares its topology source and digest; a mismatch or a bad value on any
    rank raises the same InvalidArgumentError on every rank (before any channel is set up).
    With Slurm's addresses, every rank learns the others' here."""
    mine = json.dumps({"digest": declared.digest(), "view": declared.view(), "error": declared.error,
                       "slurm": declared.mine})
    seen = [json.loads(b) for b in bootstrap.allgather(mine.encode())]
    by_digest: dict = {}
    for r, s in enumerate(seen):
        by_digest.setdefault(s["digest"], []).append(r)
    if len(by_digest) > 1:
        views = "; ".join(f"ranks {rs} have {seen[rs[0]]['view']}" for rs in by_digest.values())
        raise InvalidArgumentError(f"rank {rank}: the ranks declare different topologies ({views}); "
                                   "every rank must declare the same one")
    if declared.error:
        raise InvalidArgumentError(f"rank {rank}: {declared.error}")
    if declared.source == SLURM_ADDR:
        try:
            declared.adopt_slurm([s["slurm"] for s in seen])
        except ValueError as exc:
            raise InvalidArgumentError(f"rank {rank}: {SLURM_ADDR} of the ranks: {exc}") from None


def _machine() -> str:
    """This machine and network namespace: ranks that differ here talk over a network."""
    try:
        netns = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        netns = 0
    return f"{socket.gethostname()}:{netns}"


def discover(rank: int, declared: Declared, endpoint, bootstrap) -> Topology:
    """The topology in effect: hosts from the channels (a rank and the peers it reaches over
    shared memory; a declared host boundary already keeps ranks apart there), then the
    declared levels above hosts, and what carries the slowest level."""
    world = endpoint.world_size
    host_key = min([rank] + [p for p in range(world) if p != rank and endpoint.channel(p) == "shm"])
    seen = [json.loads(b) for b in bootstrap.allgather(json.dumps([host_key, _machine()]).encode())]
    hosts = [h for h, _ in seen]
    levels = [dense(hosts)]
    if declared.paths is not None:
        depth = len(declared.paths[0])
        levels += [dense(tuple(p[1:k + 1]) for p in declared.paths) for k in range(1, depth)]
    link = "network" if len({m for _, m in seen}) > 1 else "loopback" if len(set(hosts)) > 1 else "shm"
    return Topology(tuple(tuple(level) for level in levels), declared.spec, declared.source, link)
