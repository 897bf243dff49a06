"""uccl's configuration: every knob is a UCCL_* environment variable with a default that works."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from uccl.units import parse_size


def _env(name: str, default, cast):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r}: {exc}") from exc


@dataclass
class Config:
    """Values in effect; `Config.from_env()` reads them, `uccl.config()` prints them."""

    transport: str = field(default="auto", metadata={"env": "UCCL_TRANSPORT", "help": "auto | shm | net"})
    timeout: float = field(default=300.0, metadata={"env": "UCCL_TIMEOUT", "help": "seconds any wait may take"})
    spin_us: float = field(default=50.0, metadata={"env": "UCCL_SPIN_US", "help": "spin before yielding (us)"})
    yield_us: float = field(default=-1.0, metadata={"env": "UCCL_YIELD_US",
                                                     "help": "yield before sleeping (us); -1: 1000 if every peer "
                                                             "is on shm, 0 with net peers"})
    shm_ring_bytes: int = field(default=1 << 20, metadata={"env": "UCCL_SHM_RING_BYTES", "help": "per-peer ring"})
    shm_arena_bytes: int = field(default=64 << 20, metadata={"env": "UCCL_SHM_ARENA_BYTES",
                                                              "help": "shared memory peers copy into (inboxes)"})
    inline_max: int = field(default=8192, metadata={"env": "UCCL_INLINE_MAX", "help": "inline write limit (bytes)"})
    max_regions: int = field(default=4096, metadata={"env": "UCCL_MAX_REGIONS", "help": "registered regions"})
    # net channel
    ifname: str = field(default="", metadata={"env": "UCCL_IFNAME", "help": "interface to bind (net)"})
    addr: str = field(default="", metadata={"env": "UCCL_ADDR", "help": "address to bind (net)"})
    num_paths: int = field(default=16, metadata={"env": "UCCL_NUM_PATHS", "help": "paths per peer (net)"})
    cc: str = field(default="swift", metadata={"env": "UCCL_CC", "help": "congestion control: swift | cubic"})
    mtu: int = field(default=1472, metadata={"env": "UCCL_MTU", "help": "UDP payload per packet (net)"})
    rto_ms: float = field(default=5.0, metadata={"env": "UCCL_RTO_MS", "help": "initial RTO (net)"})
    max_retries: int = field(default=50, metadata={"env": "UCCL_MAX_RETRIES", "help": "RTOs before failing"})
    swift_target_us: float = field(default=1500.0, metadata={"env": "UCCL_SWIFT_TARGET_US",
                                                             "help": "swift's delay target (net)"})
    # collectives
    algo: str = field(default="auto", metadata={"env": "UCCL_ALGO", "help": "collective algorithm override"})
    chunk_size: int = field(default=0, metadata={"env": "UCCL_CHUNK_SIZE", "help": "pipeline chunk (0 = tuner)"})
    channels: int = field(default=0, metadata={"env": "UCCL_CHANNELS", "help": "threads per rank on a large shm call (0 = tuner)"})

    @classmethod
    def from_env(cls) -> "Config":
        casts = {float: float, int: parse_size, str: str}
        values = {}
        for f in dataclasses.fields(cls):
            kind = type(f.default)
            values[f.name] = _env(f.metadata["env"], f.default, casts[kind])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.transport not in ("auto", "shm", "net"):
            raise ValueError(f"UCCL_TRANSPORT must be auto, shm or net, got {self.transport!r}")
        if self.num_paths < 1:
            raise ValueError(f"UCCL_NUM_PATHS must be >= 1, got {self.num_paths}")
        if self.cc not in ("swift", "cubic"):
            raise ValueError(f"UCCL_CC must be swift or cubic, got {self.cc!r}")
        if self.swift_target_us <= 0:
            raise ValueError(f"UCCL_SWIFT_TARGET_US must be positive, got {self.swift_target_us}")
        if self.timeout <= 0:
            raise ValueError(f"UCCL_TIMEOUT must be positive, got {self.timeout}")
        if not 0 <= self.channels <= 64:
            raise ValueError(f"UCCL_CHANNELS must be in [0, 64] (0 = the tuner's choice), got {self.channels}")
        if self.chunk_size < 0:
            raise ValueError(f"UCCL_CHUNK_SIZE must be >= 0 (0 = the tuner's choice), got {self.chunk_size}")

    def describe(self) -> str:
        lines = []
        for f in dataclasses.fields(self):
            lines.append(f"{f.metadata['env']:<22} {getattr(self, f.name)!s:<12} {f.metadata['help']}")
        return "\n".join(lines)


def config() -> Config:
    """Prints and returns the configuration in effect."""
    from uccl.collectives.communicator import host_cpus, tuning_tables

    cfg = Config.from_env()
    print(cfg.describe())
    tables = ", ".join(os.path.basename(p) for p in tuning_tables())
    print(f"{'(tuner tables)':<22} {tables}  (measured by perf/tune.py; this host has {host_cpus()} CPUs)")
    return cfg
