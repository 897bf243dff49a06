"""torch.distributed backend "uccl".

    import torch.distributed as dist
    dist.init_process_group(backend="uccl")   # no `import uccl` needed (torch.backends entry point)

Importing this package registers the backend too (torch releases before 2.5 have no
entry-point autoload: `import uccl.distributed` there). The process group class loads on
first use.
"""

from uccl.distributed.launcher_env import fill_env_from_launcher, launcher_env
from uccl.distributed.names import BACKEND_NAME
from uccl.distributed.registration import register

register()

__all__ = ["BACKEND_NAME", "ProcessGroupUCCL", "fill_env_from_launcher", "launcher_env", "register"]


def __getattr__(name):
    if name == "ProcessGroupUCCL":
        from uccl.distributed.backend import ProcessGroupUCCL

        return ProcessGroupUCCL
    raise AttributeError(name)
