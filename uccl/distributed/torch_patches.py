"""The two torch.distributed functions uccl replaces, and when.

Each replacement decides per call whether the call is uccl's; every other call (gloo,
nccl, mpi groups, other backends) goes to torch's own function with the same arguments,
so its behaviour, errors and warnings are torch's. Torch's function stays reachable as
the replacement's `__wrapped__`.

1. torch.distributed.monitored_barrier
   What: a call whose group (or the default group, for group=None) is a uccl process group
   runs that group's monitored_barrier (gloo's semantics: rank 0 reports the ranks that
   did not arrive in time).
   Why: torch's function raises "only implemented for GLOO backend" before it looks at the
   group, so without this a uccl group could only be reached as group.monitored_barrier().
   When: installed when the first uccl process group is created.

2. torch.distributed.init_process_group
   What: a call whose backend names uccl ("uccl", "cpu:uccl,cuda:nccl") and that uses the
   env:// rendezvous (no store; init_method None or env://) first fills RANK, WORLD_SIZE,
   LOCAL_RANK, MASTER_ADDR and MASTER_PORT from what mpirun or srun set (only the ones not
   set already: launcher_env.fill_env_from_launcher).
   Why: so that a program started by mpirun or srun needs no launcher.
   When: installed when the backend is registered (at `import torch` through the
   torch.backends entry point, or at `import uccl.distributed`).

UCCL_TORCH_PATCHES=0 installs neither (read when each would be installed). Then
monitored_barrier on a uccl group raises torch's error (call group.monitored_barrier()
instead), and under mpirun/srun set the variables yourself or call
uccl.distributed.fill_env_from_launcher() before init_process_group.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import os

from uccl.config import SETTINGS_BY_ENV
from uccl.distributed.names import BACKEND_NAME

ENV_SWITCH = "UCCL_TORCH_PATCHES"


def enabled() -> bool:
    return bool(SETTINGS_BY_ENV[ENV_SWITCH].read())


def names_uccl(backend) -> bool:
    """Whether a backend argument ("uccl", "cpu:gloo,cuda:uccl", Backend) selects uccl anywhere."""
    if backend is None:
        return False
    parts = str(backend).lower().replace(":", ",").split(",")
    return BACKEND_NAME in (p.strip() for p in parts)


def _replace(name: str, replacement) -> None:
    """Puts `replacement` where both torch.distributed.NAME and distributed_c10d.NAME are found."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    setattr(c10d, name, replacement)
    setattr(dist, name, replacement)


def _installed(name: str) -> bool:
    import torch.distributed.distributed_c10d as c10d

    return getattr(getattr(c10d, name), "_uccl_patch", False)


def install_monitored_barrier(group_class: type) -> None:
    """Patch 1 (idempotent); `group_class` is ProcessGroupUCCL."""
    if not enabled() or _installed("monitored_barrier"):
        return
    import torch.distributed.distributed_c10d as c10d

    from uccl.distributed._compat import default_group

    original = c10d.monitored_barrier

    @functools.wraps(original)
    def monitored_barrier(group=None, timeout=None, wait_all_ranks: bool = False):
        pg = group if group is not None else default_group()
        if not isinstance(pg, group_class):
            return original(group, timeout, wait_all_ranks)
        if timeout is not None and not isinstance(timeout, datetime.timedelta):
            timeout = datetime.timedelta(seconds=float(timeout))
        return pg.monitored_barrier(timeout, wait_all_ranks=wait_all_ranks)

    monitored_barrier._uccl_patch = True  # type: ignore[attr-defined]
    _replace("monitored_barrier", monitored_barrier)


def install_init_process_group() -> None:
    """Patch 2 (idempotent)."""
    if not enabled() or _installed("init_process_group"):
        return
    import torch.distributed.distributed_c10d as c10d

    from uccl.distributed.launcher_env import fill_env_from_launcher

    original = c10d.init_process_group

    signature = inspect.signature(original)

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        try:
            given = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:  # torch's own function reports bad arguments
            given = {}
        init_method = given.get("init_method")
        if (names_uccl(given.get("backend")) and given.get("store") is None
                and (init_method is None or str(init_method).startswith("env://"))
                and ("RANK" not in os.environ or "MASTER_ADDR" not in os.environ)):
            fill_env_from_launcher()
        return original(*args, **kwargs)

    init_process_group._uccl_patch = True  # type: ignore[attr-defined]
    _replace("init_process_group", init_process_group)
