"""uccl's replacements of torch.distributed.monitored_barrier and init_process_group
(uccl.distributed.torch_patches) act on uccl groups and jobs only: gloo groups and gloo
jobs behave exactly as with torch's functions, and UCCL_TORCH_PATCHES=0 turns both off."""

import datetime
import os
import subprocess
import sys
import textwrap
import time

from tests.distributed.harness import init_url
from uccl.testing import run_ranks

# What mpirun tells a rank, without torchrun's variables (one rank: MASTER_ADDR is local).
MPIRUN_ENV = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
              "OMPI_COMM_WORLD_LOCAL_SIZE": "1", "OMPI_MCA_ess_base_jobid": f"{os.getpid()}{time.time_ns()}"}


def _gloo_monitored(ctx, url, patched):
    import torch.distributed as dist

    from uccl.distributed import torch_patches
    from uccl.distributed.backend import ProcessGroupUCCL

    if patched:
        torch_patches.install_monitored_barrier(ProcessGroupUCCL)
    assert getattr(dist.monitored_barrier, "_uccl_patch", False) == patched
    dist.init_process_group("gloo", init_method=url, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=datetime.timedelta(seconds=30))
    dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))  # everyone arrives
    if ctx.rank == 1:
        time.sleep(3)  # misses the second one, alive meanwhile
        return None
    try:
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=1), wait_all_ranks=True)
    except Exception as exc:  # noqa: BLE001 - the type is part of what must match
        return type(exc).__name__, str(exc).splitlines()[0]
    return "passed"


def test_monitored_barrier_on_gloo_is_torchs():
    env = {"OMP_NUM_THREADS": "1"}
    patched = run_ranks(_gloo_monitored, 2, args=(init_url(), True), env=env, timeout=120)
    torchs = run_ranks(_gloo_monitored, 2, args=(init_url(), False), env=env, timeout=120)
    assert patched[0] == torchs[0] and "1 failed to pass" in torchs[0][1], (patched, torchs)


def run_python(code: str, **env) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                                              "LOCAL_RANK", "UCCL_TORCH_PATCHES")}
    full.update(env, OMP_NUM_THREADS="1", UCCL_TRANSPORT="shm")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout + res.stderr[-3000:]
    return res.stdout


def test_init_process_group_fills_mpirun_env_for_uccl_only():
    run_python("""
        import os
        import torch.distributed as dist
        assert dist.init_process_group._uccl_patch      # installed by `import torch` (entry point)
        try:
            dist.init_process_group("gloo")             # torch's behaviour: env:// needs RANK
            raise SystemExit("gloo initialised without RANK")
        except ValueError as exc:
            assert "RANK" in str(exc), exc
        assert "RANK" not in os.environ and "MASTER_ADDR" not in os.environ
        dist.init_process_group("uccl")                 # a uccl job: mpirun's variables are used
        assert os.environ["RANK"] == "0" and dist.get_world_size() == 1
        assert dist.monitored_barrier() is None         # reaches the uccl group
        dist.destroy_process_group()
        print("OK")
    """, **MPIRUN_ENV)


def test_switch_turns_both_patches_off():
    run_python("""
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d
        import uccl.distributed
        assert not hasattr(dist.init_process_group, "_uccl_patch")
        assert not hasattr(c10d.init_process_group, "_uccl_patch")
        try:
            dist.init_process_group("uccl")
            raise SystemExit("mpirun's variables were used although the patches are off")
        except ValueError as exc:
            assert "RANK" in str(exc), exc
        uccl.distributed.fill_env_from_launcher()
        dist.init_process_group("uccl")
        assert not hasattr(dist.monitored_barrier, "_uccl_patch")
        try:
            dist.monitored_barrier()
            raise SystemExit("torch's monitored_barrier accepted a uccl group")
        except ValueError as exc:
            assert "GLOO" in str(exc), exc
        assert dist.group.WORLD.monitored_barrier() is None
        dist.destroy_process_group()
        print("OK")
    """, UCCL_TORCH_PATCHES="0", **MPIRUN_ENV)
