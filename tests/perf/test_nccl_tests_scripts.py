"""The nccl-tests-style scripts under perf/: each runs (2 ranks under mpirun, peers
included), prints nccl-tests' table, and every checked cell has #wrong == 0.
Correctness only: no timing is asserted here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PERF = os.path.join(ROOT, "perf")
SCRIPTS = ["all_reduce", "all_gather", "reduce_scatter", "alltoall", "broadcast", "reduce", "sendrecv"]
QUICK = ["-b", "8", "-e", "64K", "-f", "32", "-n", "2", "-w", "1", "-c", "1"]
SIZES = [8, 256, 8192]  # what QUICK sweeps

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None


def parse_tables(out: str) -> dict[str, list[list[str]]]:
    """{backend: rows}; a row is nccl-tests' 13 columns (size .. in-place #wrong)."""
    tables, current = {}, None
    for line in out.splitlines():
        if line.startswith("# uccl") and line.strip() == "# uccl":
            current = tables.setdefault("uccl", [])
        elif line.startswith("# gloo (") or line.startswith("# mpi ("):
            current = tables.setdefault(line.split()[1], [])
        elif line.startswith("# Out of bounds values"):
            current = None
        elif current is not None and line.strip() and not line.startswith("#"):
            fields = line.split()
            assert len(fields) == 13, f"malformed row: {line!r}"
            current.append(fields)
    return tables


def check_table(out: str, backends: list[str], sizes=SIZES) -> dict:
    tables = parse_tables(out)
    assert sorted(tables) == sorted(backends), out
    for name, rows in tables.items():
        assert [int(r[0]) for r in rows] == sizes, f"{name}: sizes {[r[0] for r in rows]}\n{out}"
        for r in rows:
            for wrong_col, time_col in ((8, 5), (12, 9)):
                if r[time_col] == "N/A":  # the backend has no such call (e.g. out-of-place broadcast)
                    assert r[wrong_col] == "N/A"
                    continue
                assert float(r[time_col]) > 0
                assert r[wrong_col] == "0", f"{name}: wrong elements in {r}\n{out}"
    assert out.count("# Out of bounds values : 0 OK") == len(backends), out
    assert "FAILED" not in out
    return tables


def run_mpi(mpirun, script: str, *args: str, np_: int = 2, timeout: int = 240) -> str:
    cmd = mpirun + ["-np", str(np_), sys.executable, os.path.join(PERF, f"{script}_perf.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def peers() -> tuple[list[str], list[str]]:
    names = (["gloo"] if HAVE_TORCH else []) + ["mpi"]
    return names, (["--compare", ",".join(names)] if names else [])


needs_mpi = pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py not installed (pip install 'uccl[mpi]')")


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_under_mpirun(mpirun, script):
    names, compare = peers()
    out = run_mpi(mpirun, script, *QUICK, *compare)
    tables = check_table(out, ["uccl"] + names)
    # in-place and out-of-place where the API has them
    uccl = tables["uccl"]
    if script not in ("broadcast", "sendrecv"):
        assert all(r[5] != "N/A" and r[9] != "N/A" for r in uccl)
    assert "# Avg bus bandwidth" in out
    for peer in names:
        assert f"# uccl busbw / {peer} busbw" in out


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("script,args", [
    ("all_reduce", ["-d", "half", "-o", "max"]),
    ("all_reduce", ["-d", "int8", "-o", "prod"]),
    ("all_reduce", ["-d", "double", "-o", "avg"]),
    ("all_reduce", ["-d", "bfloat16", "-o", "min"]),
    ("reduce_scatter", ["-d", "int32", "-o", "min"]),
    ("reduce", ["-r", "1", "-d", "int32", "-o", "sum"]),
    ("broadcast", ["-r", "1", "-d", "uint8"]),
])
def test_types_ops_roots(mpirun, script, args):
    if "bfloat16" in args and not HAVE_TORCH:
        pytest.skip("bfloat16 buffers need torch")
    names, compare = peers()
    out = run_mpi(mpirun, script, *QUICK, *args, *compare)
    check_table(out, ["uccl"] + names)


@pytest.mark.mpi
@needs_mpi
def test_three_ranks_odd_sizes(mpirun):
    # 3 ranks: counts that do not divide evenly are rounded down as nccl-tests does
    out = run_mpi(mpirun, "all_gather", "-b", "12", "-e", "1200", "-f", "10", "-n", "2", "-w", "1", "-c", "1",
                  "--compare", "mpi", np_=3)
    tables = check_table(out, ["uccl", "mpi"], sizes=[12, 120, 1200])
    assert [int(r[1]) for r in tables["uccl"]] == [1, 10, 100]  # count column: per-rank elements


@pytest.mark.mpi
@needs_mpi
def test_json_and_plot(mpirun, tmp_path):
    target = tmp_path / "ar.json"
    names, compare = peers()
    run_mpi(mpirun, "all_reduce", *QUICK, *compare, "--json", str(target))
    data = json.loads(target.read_text())
    assert data["collective"] == "all_reduce" and data["ranks"] == 2
    assert [r["size"] for r in data["rows"]] == SIZES
    for row in data["rows"]:
        for name in ["uccl"] + names:
            assert set(row[name]) == {"out", "in"}
        assert row["uccl"]["out"]["wrong"] == 0 and row["uccl"]["out"]["busbw"] > 0
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "ar.png").stat().st_size > 0


@pytest.mark.skipif(not HAVE_TORCH, reason="the env:// launch path rendezvous through torch's store")
def test_under_uccl_run():
    """uccl-run / torchrun: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment."""
    if importlib.util.find_spec("uccl.launch.run") is not None:
        launcher = [sys.executable, "-m", "uccl.launch.run"]  # uccl-run
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, which uccl-run wraps
    cmd = launcher + [
        "--nproc-per-node", "2", os.path.join(PERF, "alltoall_perf.py"), *QUICK, "--compare", "gloo,mpi"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    check_table(proc.stdout, ["uccl", "gloo"])
    assert "mpi skipped" in proc.stdout


def test_world_of_one():
    """No launcher at all: a world of one, still a full table."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE") and not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    proc = subprocess.run([sys.executable, os.path.join(PERF, "all_reduce_perf.py"), *QUICK], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_table(proc.stdout, ["uccl"])


def test_busbw_factors_and_counts():
    sys.path.insert(0, PERF)
    import _nccl_tests as nt

    n = 4
    assert nt.COLLS["all_reduce"].factor(n) == pytest.approx(1.5)
    for name in ("all_gather", "reduce_scatter", "alltoall"):
        assert nt.COLLS[name].factor(n) == pytest.approx(0.75)
    for name in ("broadcast", "reduce", "sendrecv"):
        assert nt.COLLS[name].factor(n) == 1.0
    # (send, recv, count column) for 1001 elements over 4 ranks
    assert nt.COLLS["all_reduce"].counts(1001, n) == (1001, 1001, 1001)
    assert nt.COLLS["all_gather"].counts(1001, n) == (250, 1000, 250)
    assert nt.COLLS["reduce_scatter"].counts(1001, n) == (1000, 250, 250)
    assert nt.COLLS["alltoall"].counts(1001, n) == (1000, 1000, 250)
    assert nt.fmt_time(12345.6).strip() == "12346" and nt.fmt_time(123.45).strip() == "123.5"
