"""Registers "uccl" as a torch.distributed backend.

`register()` runs when uccl.distributed is imported, and through the `torch.backends`
entry point at the end of `import torch` (torch 2.5 onward), so that
`init_process_group(backend="uccl")` works in a program that never imports uccl. It must
stay cheap: the process group itself (and the native module) loads on first use.

It also installs the init_process_group patch (uccl.distributed.torch_patches) that lets
a program started by mpirun or srun call `init_process_group("uccl")` with no launcher
(uccl.distributed.launcher_env).
"""

from __future__ import annotations

import warnings

from uccl.config import SETTINGS_BY_ENV
from uccl.distributed.names import BACKEND_NAME, DEVICES

_registered = False


def _create_process_group(dist_backend_opts, backend_options=None):
    from uccl.distributed.backend import ProcessGroupUCCL

    return ProcessGroupUCCL.from_backend_options(dist_backend_opts, backend_options)


def register() -> None:
    """Registers the backend (idempotent)."""
    global _registered
    if _registered:
        return
    import torch.distributed as dist

    if not dist.is_available():
        return
    from uccl.distributed._compat import register_backend

    register_backend(BACKEND_NAME, _create_process_group, DEVICES)
    from uccl.distributed.torch_patches import install_init_process_group

    install_init_process_group()
    _registered = True


def autoload() -> None:
    """The `torch.backends` entry point: never lets `import torch` fail because of uccl."""
    try:
        if not SETTINGS_BY_ENV["UCCL_TORCH_AUTOLOAD"].read():
            return
        register()
    except Exception as exc:  # pragma: no cover - defensive: torch would refuse to import
        warnings.warn(f"uccl: could not register the torch.distributed backend: {exc}", stacklevel=2)


# -- mpirun / srun without a launcher ------------------------------------------------------------
