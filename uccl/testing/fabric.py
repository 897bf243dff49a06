"""Run a torch.distributed script on an emulated fabric built for it, for tests (needs root).

    res = run_on_fabric(tmp_path / "worker.py", WORKER_SOURCE, nproc_per_node=2)
    assert res.returncode == 0, res.stdout + res.stderr

The fabric (4 hosts / 2 leaves / 2 spines at 1 Gbit/s unless told) is removed in `finally`;
the ranks start through `uccl-run --fabric`, which declares the topology, without the
caller's UCCL_TRANSPORT / UCCL_TOPOLOGY / UCCL_ALGO.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from uccl.fabric import Fabric, FabricSpec

__all__ = ["run_on_fabric"]

CLEARED = ("UCCL_TRANSPORT", "UCCL_TOPOLOGY", "UCCL_ALGO")


def run_on_fabric(script: pathlib.Path, source: str, nproc_per_node: int = 2, args: tuple = (),
                  env: dict | None = None, timeout: float = 300,
                  spec: FabricSpec | None = None) -> subprocess.CompletedProcess:
    """Writes `source` to `script` and runs it, with `args`, on every host of a fresh
    fabric; `env` is added to the ranks' environment."""
    script.write_text(source)
    env = {**{k: v for k, v in os.environ.items() if k not in CLEARED}, **(env or {})}
    fab = Fabric(spec or FabricSpec(hosts=4, leaves=2, spines=2, rate="1gbit"))
    try:
        fab.up()
        return subprocess.run([sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name, "--nproc-per-node",
                               str(nproc_per_node), str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env=env)
    finally:
        fab.down()
