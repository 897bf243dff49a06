"""Runs a torch.distributed program with one rank (or N) per emulated host of a fabric.

Each rank gets what torchrun would give it (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
GROUP_RANK, NODE_RANK, MASTER_ADDR = host 0's fabric address, MASTER_PORT), plus the host's
address and interface for uccl (UCCL_ADDR, UCCL_IFNAME) and for gloo (GLOO_SOCKET_IFNAME),
where each rank sits (UCCL_TOPOLOGY: host and leaf, unless already set),
so the program runs across the fabric unchanged. Ranks on different hosts sit in
different network namespaces, which uccl treats as different hosts (net channel).
If one rank fails, the others are stopped; the exit status is the first failure's.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

from uccl.fabric.emulator import Fabric

log = logging.getLogger("uccl.fabric")


def rank_env(fab: Fabric, host: int, local_rank: int, nproc_per_host: int, port: int) -> dict:
    world = fab.spec.hosts * nproc_per_host
    rank = host * nproc_per_host + local_rank
    return {"RANK": rank, "LOCAL_RANK": local_rank, "WORLD_SIZE": world, "LOCAL_WORLD_SIZE": nproc_per_host,
            "GROUP_RANK": host, "NODE_RANK": host, "ROLE_RANK": rank, "ROLE_WORLD_SIZE": world,
            "MASTER_ADDR": fab.addr(0), "MASTER_PORT": port,
            "UCCL_ADDR": fab.addr(host), "UCCL_IFNAME": fab.ifname(host),
            "GLOO_SOCKET_IFNAME": fab.ifname(host), "UCCL_FABRIC": fab.name, "UCCL_FABRIC_HOST": host}


def topology_spec(fab: Fabric, nproc_per_host: int) -> str:
    """UCCL_TOPOLOGY for the ranks launch() places: each host's ranks on that host, on its leaf
    (uccl/collectives/topology.py), so the collectives cross each leaf's uplinks once."""
    n = nproc_per_host
    return ";".join(f"{h * n}-{h * n + n - 1}=h{h}/leaf{fab.spec.leaf_of(h)}" for h in range(fab.spec.hosts))


def command(script: str, script_args: Sequence[str], module: bool = False, no_python: bool = False) -> list[str]:
    if no_python:
        return [script, *script_args]
    return [sys.executable, "-u", *(["-m"] if module else []), script, *script_args]


def launch(fab: Fabric, argv: Sequence[str], nproc_per_host: int = 1, env: Optional[dict] = None,
           timeout: Optional[float] = None, port: Optional[int] = None) -> int:
    """Starts argv (a full command line) once per rank, inside each host's namespace;
    waits for all; returns 0 or the first non-zero exit status."""
    if nproc_per_host < 1:
        raise ValueError("nproc_per_host must be at least 1")
    port = port or 20000 + random.randrange(20000)  # fresh namespaces: nothing else listens there
    extra = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
             # uccl's packets fill the link MTU (IPv4 + UDP headers: 28 B), jumbo frames too
             "UCCL_MTU": os.environ.get("UCCL_MTU", str(fab.spec.mtu - 28)),
             "UCCL_TOPOLOGY": os.environ.get("UCCL_TOPOLOGY", topology_spec(fab, nproc_per_host)), **(env or {})}
    procs = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for host in range(fab.spec.hosts):
            for local in range(nproc_per_host):
                e = {**extra, **rank_env(fab, host, local, nproc_per_host, port)}
                procs.append(fab.popen(host, list(argv), env=e, start_new_session=True))
        status = 0
        while procs and any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed:
                status = failed[0].returncode
                log.error("a rank exited with status %d: stopping the others", status)
                break
            if deadline is not None and time.monotonic() > deadline:
                log.error("ranks still running after %.0f s: stopping them", timeout)
                status = 124
                break
            time.sleep(0.05)
        if status == 0:
            status = next((p.returncode for p in procs if p.returncode), 0)
        return status
    finally:
        _stop(procs)


def _stop(procs: list) -> None:
    """SIGTERM every rank's process group, SIGKILL what is left after 5 s."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 5
    for p in alive:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
