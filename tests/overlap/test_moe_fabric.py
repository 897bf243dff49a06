"""MoE dispatch/combine and the fused call stay correct across an emulated leaf-spine fabric
that drops 1 % of the packets (uccl's net channel retransmits; every result is checked
against the single-process reference by tests/overlap/_moe_fabric_ranks.py)."""

import os
import subprocess
import sys

import pytest

from uccl.fabric import emulator as fabmod
from uccl.fabric import Fabric, FabricSpec

OK, WHY = fabmod.available()
RANKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_moe_fabric_ranks.py")

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not OK, reason=f"cannot build a fabric here: {WHY}")]


def test_moe_correct_at_one_percent_loss():
    fab = Fabric(FabricSpec(hosts=4, leaves=2, spines=2, rate="100mbit", loss=1)).up()
    try:
        env = {**os.environ}
        env.pop("UCCL_TRANSPORT", None)  # namespaces alone put every peer on the net channel
        res = subprocess.run([sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name, RANKS],
                             capture_output=True, text=True, timeout=400, env=env)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
        for r in range(4):
            assert f"rank {r} ok channels=['net']" in res.stdout, res.stdout + res.stderr[-3000:]
        drops = fab.loss_drops()
        assert sum(drops.values()) > 0, f"the fabric dropped nothing: {drops}"
    finally:
        fab.down()
