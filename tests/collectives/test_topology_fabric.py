"""The topology `uccl-run --fabric` declares: on an emulated fabric (network namespaces,
built here and removed in `finally`), 2 ranks on each of 4 hosts on 2 leaves see their
hosts and leaves, take the hierarchical all_reduce, and get correct results; every
collective x dtype x op matches numpy there (tests/collectives/test_topology.py's check)."""

import subprocess
import sys
import textwrap

import pathlib

import pytest

from uccl.fabric import emulator as fabmod
from uccl.fabric import FabricSpec
from uccl.fabric.ranks import topology_spec
from uccl.testing.fabric import run_on_fabric

OK, WHY = fabmod.available()

WORKER = textwrap.dedent("""
    import torch, torch.distributed as dist
    dist.init_process_group("uccl")
    r, W = dist.get_rank(), dist.get_world_size()
    view = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
    comm = getattr(view, "_pg", view).communicator
    n = (1 << 20) // W * W
    x = torch.arange(n, dtype=torch.float32).remainder(1000) * (r + 1)
    dist.all_reduce(x)
    want = torch.arange(n, dtype=torch.float32).remainder(1000) * (W * (W + 1) / 2)
    gathered = torch.empty(n * W)
    dist.all_gather_into_tensor(gathered, torch.full((n,), float(r)))
    ok = torch.equal(x, want) and torch.equal(gathered, torch.arange(W).repeat_interleave(n).float())
    print(f"rank {r} levels={comm.topology().levels} algo={comm.algorithm('all_reduce', 4 * n)[0]} ok={ok}",
          flush=True)
    dist.barrier()
    dist.destroy_process_group()
""")


def test_the_fabric_launcher_declares_hosts_and_leaves():
    class Fab:  # what topology_spec reads of a fabric
        spec = FabricSpec(hosts=3, leaves=2, spines=1)
    assert topology_spec(Fab, 2) == "0-1=h0/leaf0;2-3=h1/leaf0;4-5=h2/leaf1"


@pytest.mark.netns
@pytest.mark.skipif(not OK, reason=f"cannot build a fabric here: {WHY}")
def test_two_ranks_per_host_on_a_fabric_run_hierarchical(tmp_path):
    res = run_on_fabric(tmp_path / "worker.py", WORKER)
    assert res.returncode == 0, res.stdout + res.stderr
    levels = ((0, 0, 1, 1, 2, 2, 3, 3), (0, 0, 0, 0, 1, 1, 1, 1))
    for r in range(8):
        assert f"rank {r} levels={levels} algo=hierarchical ok=True" in res.stdout, res.stdout + res.stderr


ALL_COLLECTIVES = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    sys.path.insert(0, sys.argv[1])
    from tests.collectives.test_topology import _all_collectives
    from uccl.transport.bootstrap import bootstrap_from_env
    b = bootstrap_from_env()
    algo, levels = _all_collectives(SimpleNamespace(bootstrap=b, rank=b.rank, world_size=b.world_size), 1 << 20)
    print(f"rank {b.rank} levels={levels} algo={algo} ok", flush=True)
""")


def _every_collective_on_a_fabric(tmp_path, ranks_per_host, levels):
    root = pathlib.Path(__file__).resolve().parents[2]
    res = run_on_fabric(tmp_path / "all_collectives.py", ALL_COLLECTIVES, ranks_per_host, args=(root,),
                        env={"UCCL_ALGO": "hierarchical"}, timeout=800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    for r in range(4 * ranks_per_host):
        assert f"rank {r} levels={levels} algo=hierarchical ok" in res.stdout, res.stdout + res.stderr[-5000:]


@pytest.mark.netns
@pytest.mark.skipif(not OK, reason=f"cannot build a fabric here: {WHY}")
def test_every_collective_matches_numpy_on_a_fabric_of_two_leaves(tmp_path):
    """4 hosts on 2 leaves, one rank each: hierarchical across the leaves."""
    _every_collective_on_a_fabric(tmp_path, 1, ((0, 1, 2, 3), (0, 0, 1, 1)))


@pytest.mark.long
@pytest.mark.netns
@pytest.mark.timeout(900)
@pytest.mark.skipif(not OK, reason=f"cannot build a fabric here: {WHY}")
def test_every_collective_matches_numpy_on_a_fabric_with_two_ranks_per_host(tmp_path):
    """8 ranks on 4 hosts on 2 leaves: inside hosts, leaves, then across."""
    _every_collective_on_a_fabric(tmp_path, 2, ((0, 0, 1, 1, 2, 2, 3, 3), (0, 0, 0, 0, 1, 1, 1, 1)))


@pytest.mark.netns
@pytest.mark.skipif(not OK, reason=f"cannot build a fabric here: {WHY}")
def test_tune_on_a_fabric_writes_rules_keyed_by_its_shape(tmp_path):
    """perf/tune.py --fabric --quick: ranks on 2 emulated hosts (2 each, one per leaf)
    measure all_reduce over the network; the table it writes is one the tuner loads, its
    rules keyed by that shape and link."""
    import json

    from uccl.collectives.communicator import load_rules, tuning_tables

    out = tmp_path / "tuning-fabric.json"
    tune = pathlib.Path(__file__).resolve().parents[2] / "perf" / "tune.py"
    res = subprocess.run([sys.executable, str(tune), "--fabric", "hosts=2,leaves=2,spines=1,rate=1gbit",
                          "--ranks-per-host", "2", "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    rules = json.loads(out.read_text())["rules"]
    assert rules and all(r["collective"] == "all_reduce" and r["world"] == 4 and r["transport"] == "net" and
                         r["topology"] == "layered" and r["ranks_per_host"] == 2 and r["hosts_per_leaf"] == 1 and
                         r["link"] == "network" and r["algo"] in ("ring", "hierarchical") for r in rules), rules
    assert rules[-1]["max_bytes"] == 2**64 - 1
    assert str(out) in tuning_tables(folder=str(tmp_path)) and len(load_rules([str(out)])) == len(rules)
