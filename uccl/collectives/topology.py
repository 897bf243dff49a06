"""Where the ranks are: which share a host, which hosts share a leaf (rack), ...

Two sources, combined at communicator creation:

* the channels: ranks the endpoint reaches over shared memory share a host;
* `UCCL_TOPOLOGY` (set by `uccl-run --fabric`), which declares hosts and the levels above
  them. Its format, innermost level first::

      UCCL_TOPOLOGY = ENTRY[;ENTRY...]   or   @FILE (entries one per line, '#' comments)
      ENTRY         = RANKS=HOST[/LEAF[/...]]
      RANKS         = N | N-M            (ranks of the job)

  e.g. ``0-1=h0/leaf0;2-3=h1/leaf0;4-5=h2/leaf1;6-7=h3/leaf1``: 4 hosts of 2 ranks on 2
  leaves. Every rank appears once, every entry names the same number of levels, and all
  ranks of one host share the levels above it. Ranks on different declared hosts use the
  net channel between them, even on one machine (so a test can emulate hosts).

Levels are named host, leaf, then level2, level3, ... Every rank must declare the same
topology: the communicator compares digests and fails on every rank otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional, Sequence

from uccl.errors import InvalidArgumentError

LEVEL_NAMES = ("host", "leaf")


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


def describe(spec: str) -> str:
    """A UCCL_TOPOLOGY value in words, for uccl.config()."""
    if not spec:
        return "none declared: hosts from the channels (ranks that share memory), no levels above"
    try:
        paths = parse(spec)
    except ValueError as exc:
        return f"invalid: {exc}"
    counts = [len({p[0] for p in paths})] + [len({p[1:k + 1] for p in paths}) for k in range(1, len(paths[0]))]
    return f"{len(paths)} ranks on " + ", ".join(f"{n} {_plural(level_name(k))}" for k, n in enumerate(counts))


def dense(keys: Sequence) -> list:
    """Group ids 0, 1, ... in order of first appearance."""
    ids: dict = {}
    return [ids.setdefault(k, len(ids)) for k in keys]


@dataclass(frozen=True)
class Topology:
    """The topology in effect for a communicator: levels[k][rank] is the rank's group at
    level k (0: host), ids dense from 0; `declared` is the UCCL_TOPOLOGY value used ('' none)."""

    levels: tuple
    declared: str = ""

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
        return "; ".join(parts) + (f" (UCCL_TOPOLOGY={self.declared})" if self.declared else " (from the channels)")


class Declared:
    """This communicator's view of UCCL_TOPOLOGY: the paths of its ranks (`world_ranks`:
    the job ranks its ranks are), or the reason the value does not fit, kept so that every
    rank can learn it at once (see `check_agreement`)."""

    def __init__(self, spec: str, world_size: int, world_ranks: Optional[Sequence[int]] = None) -> None:
        self.spec, self.paths, self.error = spec, None, ""
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
            self.error = f"UCCL_TOPOLOGY={spec}: {exc}"

    def digest(self) -> str:
        what = {"paths": self.paths} if self.paths is not None else {"error": self.error}
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def host_tag(self, rank: int) -> str:
        """What the endpoint adds to its host identity: ranks of different declared hosts
        never share memory. Short (the descriptor has little room)."""
        if self.paths is None:
            return ""
        return hashlib.sha256(self.paths[rank][0].encode()).hexdigest()[:16]


def check_agreement(rank: int, declared: Declared, bootstrap) -> None:
    """Every rank compares UCCL_TOPOLOGY digests; a mismatch or a bad value raises the same
    InvalidArgumentError on every rank (before any channel is set up)."""
    mine = json.dumps({"digest": declared.digest(), "spec": declared.spec, "error": declared.error})
    seen = [json.loads(b) for b in bootstrap.allgather(mine.encode())]
    by_digest: dict = {}
    for r, s in enumerate(seen):
        by_digest.setdefault(s["digest"], []).append(r)
    if len(by_digest) > 1:
        views = "; ".join(f"ranks {rs} have UCCL_TOPOLOGY={seen[rs[0]]['spec']!r}" for rs in by_digest.values())
        raise InvalidArgumentError(f"rank {rank}: the ranks declare different topologies ({views}); "
                                   "every rank must declare the same one")
    if declared.error:
        raise InvalidArgumentError(f"rank {rank}: {declared.error}")


def discover(rank: int, declared: Declared, endpoint, bootstrap) -> Topology:
    """The topology in effect: hosts from the channels (a rank and the peers it reaches over
    shared memory; a declared host boundary already keeps ranks apart there), then the
    declared levels above hosts."""
    world = endpoint.world_size
    host_key = min([rank] + [p for p in range(world) if p != rank and endpoint.channel(p) == "shm"])
    hosts = [int(b) for b in bootstrap.allgather(str(host_key).encode())]
    levels = [dense(hosts)]
    if declared.paths is not None:
        depth = len(declared.paths[0])
        levels += [dense(tuple(p[1:k + 1]) for p in declared.paths) for k in range(1, depth)]
    return Topology(tuple(tuple(level) for level in levels), declared.spec)
