"""torch's env:// variables for a program that mpirun (OMPI_* / PMI_* variables) or srun
(SLURM_*) started without a launcher: `launcher_env` reads them, `fill_env_from_launcher`
sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT where they are missing.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import MutableMapping, Optional


def _first_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as 'gpu[003-005,9],cpu1' -> 'gpu003'."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end]
    m = re.match(r"^([^\[]*)\[([^\],\-]+)", first)
    return m.group(1) + m.group(2) if m else first


def _port_for(job: str) -> int:
    digest = hashlib.sha1(job.encode()).digest()
    return 20000 + int.from_bytes(digest[:4], "little") % 20000


def launcher_env(environ: Optional[MutableMapping[str, str]] = None) -> dict:
    """What mpirun or srun tells a process about the job, as torch's env:// variables.
    Empty when the process was started some other way."""
    env = os.environ if environ is None else environ
    out: dict = {}
    if "OMPI_COMM_WORLD_RANK" in env:
        out["RANK"], out["WORLD_SIZE"] = env["OMPI_COMM_WORLD_RANK"], env.get("OMPI_COMM_WORLD_SIZE", "1")
        out["LOCAL_RANK"] = env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")
        out["LOCAL_WORLD_SIZE"] = env.get("OMPI_COMM_WORLD_LOCAL_SIZE", out["WORLD_SIZE"])
        job = env.get("OMPI_MCA_ess_base_jobid") or env.get("OMPI_MCA_orte_ess_jobid") or env.get("PMIX_NAMESPACE", "")
    elif "PMI_RANK" in env and "PMI_SIZE" in env:  # MPICH / Hydra, Intel MPI
        out["RANK"], out["WORLD_SIZE"] = env["PMI_RANK"], env["PMI_SIZE"]
        out["LOCAL_RANK"] = env.get("MPI_LOCALRANKID", "0")
        out["LOCAL_WORLD_SIZE"] = env.get("MPI_LOCALNRANKS", out["WORLD_SIZE"])
        job = env.get("PMI_KVSNAME") or env.get("PMI_JOBID") or env.get("PMI_PORT", "")
    elif "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        out["RANK"] = env["SLURM_PROCID"]
        out["WORLD_SIZE"] = env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"]
        out["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if nodes:
            out["MASTER_ADDR"] = _first_host(nodes)
        job = f"{env.get('SLURM_JOB_ID', '')}.{env.get('SLURM_STEP_ID', '')}"
    else:
        return {}
    if "MASTER_ADDR" not in out and out.get("LOCAL_WORLD_SIZE") == out["WORLD_SIZE"]:
        out["MASTER_ADDR"] = "127.0.0.1"  # every rank on this host
    out["MASTER_PORT"] = str(_port_for(job or out["WORLD_SIZE"]))
    return out


def _mpi_master_addr() -> Optional[str]:
    """Rank 0's host name, through mpi4py, for multi-host mpirun jobs."""
    try:
        import socket

        from mpi4py import MPI
    except ImportError:
        return None
    comm = MPI.COMM_WORLD
    return comm.bcast(socket.gethostname() if comm.Get_rank() == 0 else None, root=0)


def fill_env_from_launcher() -> list[str]:
    """Sets the env:// variables a launcher would have set; returns the names it set."""
    found = launcher_env()
    if not found or ("RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ):
        return []
    if "MASTER_ADDR" not in found and "MASTER_ADDR" not in os.environ:
        addr = _mpi_master_addr()
        if addr is None:
            raise RuntimeError(
                "uccl: this mpirun job spans several hosts; set MASTER_ADDR (and MASTER_PORT) to rank 0's "
                "address, or install mpi4py so that uccl can find it")
        found["MASTER_ADDR"] = addr
    set_names = []
    for key, value in found.items():
        if key not in os.environ:
            os.environ[key] = value
            set_names.append(key)
    return set_names

