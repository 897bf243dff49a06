"""uccl: a software transport and collective library for machine-learning jobs."""

import os as _os

from uccl.config import Config
from uccl.errors import (
    AccessError,
    InvalidArgumentError,
    MismatchError,
    PeerFailureError,
    UcclError,
    UcclTimeoutError,
)

__version__ = "0.1.0"


def config() -> Config:
    """Prints and returns the configuration in effect, and the tuning tables in use."""
    # Imported here: the collectives import uccl.config, never the reverse.
    from uccl.collectives.communicator import host_cpus, tuning_tables

    cfg = Config.from_env()
    print(cfg.describe())
    tables = ", ".join(_os.path.basename(p) for p in tuning_tables())
    print(f"{'(tuner tables)':<22} {tables}  (measured by perf/tune.py; this host has {host_cpus()} CPUs)")
    print(f"{'(topology)':<22} {_topology_in_effect(cfg.topology)}")
    return cfg


def _topology_in_effect(spec: str) -> str:
    """The topology's source (UCCL_TOPOLOGY, SLURM_TOPOLOGY_ADDR or none) and what it says
    (a communicator adds the hosts its channels find: Communicator.topology())."""
    from uccl.collectives.topology import describe

    return describe(spec)

__all__ = [
    "AccessError",
    "Config",
    "InvalidArgumentError",
    "MismatchError",
    "PeerFailureError",
    "UcclError",
    "UcclTimeoutError",
    "config",
]
