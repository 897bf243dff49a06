"""A bootstrap for a dedicated uccl Endpoint over the ranks of a torch ProcessGroup, a uccl
Communicator or a Bootstrap, so that overlap code can open its own transport next to
the group's collectives (its immediates never mix with theirs).

Every rank of the group must call `bootstrap_for` in the same order: each call takes a
fresh key space in the group's store.
"""

from __future__ import annotations

import itertools
from typing import Any

from uccl.errors import InvalidArgumentError
from uccl.transport.bootstrap import Bootstrap, StoreBootstrap

_calls = itertools.count()


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
