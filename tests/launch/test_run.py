"""uccl-run: torchrun's flags on torch's elastic launcher, uccl options as UCCL_* variables;
and init_process_group("uccl") with no launcher under mpirun."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    dist.init_process_group("uccl")          # no import of uccl: entry-point autoload
    r, w = dist.get_rank(), dist.get_world_size()
    t = torch.full((1000,), float(r + 1))
    dist.all_reduce(t)
    assert t[0].item() == w * (w + 1) / 2, t[0]
    env = {k: os.environ.get(k) for k in ("UCCL_TRANSPORT", "UCCL_NUM_PATHS", "UCCL_CC", "UCCL_IFNAME")}
    print(f"worker {r}/{w} ok local_rank={os.environ.get('LOCAL_RANK')} env={env}", flush=True)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def worker(tmp_path):
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return str(path)


def _uccl_run(*args, timeout=240):
    exe = shutil.which("uccl-run")
    cmd = [exe] if exe else [sys.executable, "-m", "uccl.launch.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("UCCL_TRANSPORT", None)
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=env)


def test_master_flags_and_uccl_options(worker):
    out = _uccl_run("--nproc-per-node", "2", "--nnodes", "1", "--node-rank", "0", "--master-addr", "127.0.0.1",
                    "--master-port", str(_free_port()), "--max-restarts", "0", "--transport", "shm", "--paths", "4",
                    "--cc", "cubic", "--ifname", "lo", worker)
    assert out.returncode == 0, out.stdout + out.stderr
    for r in range(2):
        assert f"worker {r}/2 ok" in out.stdout, out.stdout + out.stderr
    assert "'UCCL_TRANSPORT': 'shm', 'UCCL_NUM_PATHS': '4', 'UCCL_CC': 'cubic', 'UCCL_IFNAME': 'lo'" in out.stdout


def test_rdzv_flags(worker):
    out = _uccl_run("--nproc_per_node", "3", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                    f"127.0.0.1:{_free_port()}", "--rdzv-id", "t1", "--max-restarts", "0", worker)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok local_rank=") == 3, out.stdout


def test_failing_worker_fails_the_launch(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys; sys.exit(7)\n")
    out = _uccl_run("--nproc-per-node", "2", "--master-port", str(_free_port()), "--max-restarts", "0", str(bad))
    assert out.returncode != 0


def test_uccl_options_are_checked():
    out = _uccl_run("--transport", "carrier-pigeon", "x.py")
    assert out.returncode != 0 and "invalid choice" in out.stderr
    out = _uccl_run("--paths", "0", "x.py")
    assert out.returncode != 0 and "--paths" in out.stderr


def test_help_lists_torchrun_and_uccl_flags():
    out = _uccl_run("--help")
    for flag in ("--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--rdzv-backend",
                 "--rdzv-endpoint", "--max-restarts", "--transport", "--paths", "--cc", "--ifname"):
        assert flag in out.stdout, flag


@pytest.mark.mpi
def test_mpirun_without_launcher(worker, mpirun):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    out = subprocess.run(mpirun + ["-np", "2", sys.executable, worker], capture_output=True, text=True,
                         timeout=240, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "worker 0/2 ok" in out.stdout and "worker 1/2 ok" in out.stdout, out.stdout


def test_slurm_and_mpi_variables_map_to_torch_env():
    from uccl.distributed.launcher_env import _first_host, launcher_env

    assert _first_host("gpu[003-005,9],cpu1") == "gpu003"
    assert _first_host("node7") == "node7"
    slurm = launcher_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
                          "SLURM_STEP_NODELIST": "n[10-11]", "SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0"})
    assert slurm["RANK"] == "5" and slurm["WORLD_SIZE"] == "8" and slurm["LOCAL_RANK"] == "1"
    assert slurm["MASTER_ADDR"] == "n10" and 20000 <= int(slurm["MASTER_PORT"]) < 40000
    again = launcher_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_NODELIST": "n[10-11]",
                          "SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0"})
    assert again["MASTER_PORT"] == slurm["MASTER_PORT"]  # every rank derives the same port
    ompi = launcher_env({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                         "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_MCA_ess_base_jobid": "77"})
    assert ompi["RANK"] == "1" and ompi["WORLD_SIZE"] == "2" and ompi["MASTER_ADDR"] == "127.0.0.1"
    pmi = launcher_env({"PMI_RANK": "0", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"})
    assert pmi["RANK"] == "0" and "MASTER_ADDR" not in pmi  # several hosts: rank 0's address comes from mpi4py
    assert launcher_env({}) == {}
