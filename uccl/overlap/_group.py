"""What the overlap code needs from a group (a torch ProcessGroup, a uccl Communicator or
a Bootstrap): uccl's process group under it (its Communicator and Endpoint) for the TP ops,
which move pieces on the group's endpoint; and a bootstrap over the same ranks for the MoE
Buffer, which opens a dedicated Endpoint next to the group's collectives (its immediates
never mix with theirs).

Every rank of the group must call `bootstrap_for` in the same order: each call takes a
fresh key space in the group's store.
"""

from __future__ import annotations

import itertools
import os
import socket
from typing import Any, Optional

import torch

from uccl.errors import InvalidArgumentError
from uccl.transport.bootstrap import Bootstrap, StoreBootstrap

_calls = itertools.count()


def resolve_group(group: Any = None):
    """A torch ProcessGroup from a group, a group name (as torch's ops pass it) or None (WORLD)."""
    import torch.distributed as dist

    if group is None:
        return dist.group.WORLD
    if isinstance(group, str):
        from torch.distributed import distributed_c10d as c10d

        return c10d._resolve_process_group(group)
    return group


def uccl_process_group(group: Any = None) -> Optional[Any]:
    """The ProcessGroupUCCL behind `group`, or None when the group is not a uccl group."""
    from uccl.distributed.backend import ProcessGroupUCCL

    pg = resolve_group(group)
    if isinstance(pg, ProcessGroupUCCL):
        return pg
    try:
        view = pg._get_backend(torch.device("cpu"))
    except (RuntimeError, AttributeError, ValueError):
        return None
    pg = getattr(view, "_pg", view)
    return pg if isinstance(pg, ProcessGroupUCCL) else None


def _where() -> bytes:
    """This process's host and network namespace (ranks in different namespaces of one
    machine are different hosts to the net channel: an emulated fabric)."""
    try:
        netns = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        netns = 0
    return f"{socket.gethostname()}/{netns}".encode()


def group_transport(pg) -> str:
    """How the group's ranks reach each other: 'shm' (every peer over shared memory),
    'loopback' (the net channel, every peer on this host and network namespace: its wire
    is this host's CPU) or 'net' (some peer on another host). Asked of every rank once
    per group (an allgather on the group's bootstrap, on its first use), so the answer is
    the same on every rank."""
    cached = pg.__dict__.get("_uccl_overlap_transport")
    if cached is None:
        comm = pg.communicator
        ep = comm.endpoint
        kinds = {ep.channel(p) for p in range(ep.world_size) if p != ep.rank}
        places = set(comm.bootstrap.allgather(_where()))
        cached = "net" if len(places) > 1 else ("shm" if kinds <= {"shm"} else "loopback")
        pg.__dict__["_uccl_overlap_transport"] = cached
    return cached


def all_gather_single(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    """dist.all_gather_single where torch has it (2.13 deprecates all_gather_into_tensor), else the latter."""
    import torch.distributed as dist

    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(out, inp, group=group)


def reduce_scatter_single(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    """dist.reduce_scatter_single where torch has it, else reduce_scatter_tensor; summing."""
    import torch.distributed as dist

    (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(out, inp, group=group)



def _torch_store(group) -> Any:
    """The store the group was formed over (ProcessGroupUCCL keeps it; others use the default one)."""
    store = getattr(group, "_store", None)
    if store is not None:
        return store
    from torch.distributed import distributed_c10d as c10d

    return c10d._get_default_store()


def group_rank_size(group) -> tuple[int, int]:
    if isinstance(group, Bootstrap):
        return group.rank, group.world_size
    if hasattr(group, "bootstrap") and hasattr(group, "endpoint"):  # a uccl Communicator
        return group.rank, group.world_size
    return group.rank(), group.size()


def bootstrap_for(group, purpose: str) -> Bootstrap:
    """A bootstrap over the same ranks as `group`, in a key space of its own."""
    n = next(_calls)
    if isinstance(group, Bootstrap):
        # same store (or MPI communicator), separate rounds: split with one color
        sub = group.split(0)
        if sub is None:
            raise InvalidArgumentError(f"rank {group.rank}: {purpose}: could not form a sub-bootstrap")
        return sub
    if hasattr(group, "bootstrap") and hasattr(group, "endpoint"):
        return bootstrap_for(group.bootstrap, purpose)
    if not all(hasattr(group, a) for a in ("rank", "size")):
        raise InvalidArgumentError(f"{purpose}: expected a torch ProcessGroup, a uccl Communicator or a "
                                   f"Bootstrap, got {type(group).__name__}")
    rank, size = group.rank(), group.size()
    name = getattr(group, "group_name", "") or "default"
    return StoreBootstrap(_torch_store(group), rank, size, prefix=f"uccl-{purpose}/{name}/{n}")
