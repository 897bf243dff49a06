"""DDP over "uccl" trains to the same losses as over gloo (examples/ddp_train.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from tests.distributed.harness import transport_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "ddp_train.py")


def _example():
    """examples/ddp_train.py as a module its spawned ranks can import too (spawn passes sys.path)."""
    if os.path.dirname(EXAMPLE) not in sys.path:
        sys.path.insert(0, os.path.dirname(EXAMPLE))
    return importlib.import_module("ddp_train")


@pytest.mark.parametrize("transport", ["shm", "net"])
@pytest.mark.parametrize("world", [2, 3])
def test_ddp_matches_gloo(world, transport):
    env = transport_env(transport)
    ex = _example()
    gloo = ex.run_local("gloo", world, 12, 32, env)
    uccl = ex.run_local("uccl", world, 12, 32, env)
    ok, loss_diff, param_diff = ex.compare(gloo, uccl, world)
    assert ok, f"uccl vs gloo: loss diff {loss_diff}, param diff {param_diff}"
    assert uccl[0]["losses"][-1] < uccl[0]["losses"][0], "the model did not train"
    if world == 2:
        assert uccl[0]["losses"] == gloo[0]["losses"]  # bit for bit


def test_ddp_example_runs_as_a_program():
    """The command a new user runs: prints both curves and says they are the same."""
    out = subprocess.run([sys.executable, EXAMPLE, "--steps", "5"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "UCCL_TRANSPORT": "shm"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SAME (bit for bit)" in out.stdout, out.stdout
