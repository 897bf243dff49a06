"""What the overlap ops need from a torch process group: uccl's process group under it
(its Communicator and Endpoint), or None where the group runs on another backend."""

from __future__ import annotations

from typing import Any, Optional

import torch


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


def group_transport(endpoint) -> str:
    """'net' when any peer is reached over the net channel, else 'shm'. The same on every
    rank: with ranks on more than one host every rank has a peer on another host."""
    kinds = {endpoint.channel(p) for p in range(endpoint.world_size) if p != endpoint.rank}
    return "net" if "net" in kinds else "shm"
