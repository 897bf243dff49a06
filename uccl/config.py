"""uccl's configuration: every knob is a UCCL_* environment variable, declared once here.

`SETTINGS` is the one declaration of each setting (name, type, default, help, bounds or
choices). Everything else derives from it: `Config` (read once at start-up, validated,
handed to the native structs), uccl-run's options, the README's table and the native
defaults header (`main(["--native-header", FILE])`, run by the build).
Bounds that come from the native packet math (MTU, paths) and the algorithm names are
asked of the native module, so they are not written twice either.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from uccl.units import parse_size

Bound = Union[None, int, float, Callable[[], Union[int, float]]]
Choices = Union[None, Sequence[str], Callable[[], Sequence[str]]]


def _native_limit(name: str) -> Callable[[], int]:
    """A bound the native code owns (its packet math), read when a value is checked."""
    def read() -> int:
        from uccl import _native
        return getattr(_native, name)
    return read


def _congestion_controls() -> Sequence[str]:
    from uccl import _native
    return tuple(_native.congestion_controls())


def _algorithms() -> Sequence[str]:
    from uccl import _native
    return ("auto", *_native.algorithms())


@dataclass(frozen=True)
class Setting:
    """One UCCL_* variable."""

    name: str             # Config attribute (and the native defaults header's constant)
    env: str
    kind: type            # int, float, str or bool
    default: Any
    help: str
    low: Bound = None     # inclusive; a callable is asked when a value is checked
    high: Bound = None
    positive: bool = False
    choices: Choices = None
    size: bool = False    # an int written as a size: 4096, 64K, 1M
    power_of_two: bool = False
    flag: str = ""        # uccl-run's option for it ("" = none)
    metavar: str = ""
    native: bool = True   # the native structs take it (emitted into the defaults header)
    shown_default: str = ""  # the README's default column, where the value alone says little

    def parse(self, raw: str) -> Any:
        """The value of `raw` (the variable's text); ValueError naming the variable otherwise."""
        try:
            if self.kind is bool:
                if raw.strip().lower() not in ("0", "1", "true", "false", "yes", "no"):
                    raise ValueError("not a boolean (0 or 1)")
                value: Any = raw.strip().lower() in ("1", "true", "yes")
            elif self.kind is int:
                value = parse_size(raw) if self.size else int(raw)
            else:
                value = self.kind(raw)
        except ValueError as exc:
            raise ValueError(f"{self.env}={raw}: {exc}") from None
        self.check(value, raw)
        return value

    def check(self, value: Any, raw: Optional[str] = None) -> None:
        """ValueError naming the variable when `value` is out of bounds or not a choice."""
        shown = f"{self.env}={raw}" if raw is not None else f"{self.env}={value!r}"
        choices = self.choices() if callable(self.choices) else self.choices
        if choices is not None and value not in choices:
            raise ValueError(f"{shown}: must be one of {', '.join(choices)}")
        low = self.low() if callable(self.low) else self.low
        high = self.high() if callable(self.high) else self.high
        if low is not None and high is not None and not low <= value <= high:
            raise ValueError(f"{shown}: must be in [{low}, {high}]")
        if low is not None and value < low:
            raise ValueError(f"{shown}: must be >= {low}")
        if high is not None and value > high:
            raise ValueError(f"{shown}: must be <= {high}")
        if self.positive and not value > 0:
            raise ValueError(f"{shown}: must be > 0")
        if self.power_of_two and value & (value - 1):
            raise ValueError(f"{shown}: must be a power of two")

    def limits(self) -> str:
        """The bounds or choices in words, for the README and --help."""
        choices = self.choices() if callable(self.choices) else self.choices
        if choices:
            return "one of " + ", ".join(f"`{c}`" for c in choices)
        low = self.low() if callable(self.low) else self.low
        high = self.high() if callable(self.high) else self.high
        parts = [f"in [{low}, {high}]" if low is not None and high is not None
                 else f">= {low}" if low is not None else f"<= {high}" if high is not None else ""]
        parts += ["> 0" if self.positive else "", "a power of two" if self.power_of_two else ""]
        return ", ".join(p for p in parts if p)

    def read(self, environ: Optional[Mapping[str, str]] = None) -> Any:
        """The value in `environ` (os.environ by default); unset or empty means the default."""
        raw = (os.environ if environ is None else environ).get(self.env)
        return self.default if raw is None or raw == "" else self.parse(raw)


SETTINGS: tuple = (
    Setting("transport", "UCCL_TRANSPORT", str, "auto",
            "`auto`: `shm` between ranks on one host, `net` otherwise; `net` forces the UDP channel everywhere",
            choices=("auto", "shm", "net"), flag="--transport"),
    Setting("timeout", "UCCL_TIMEOUT", float, 300.0,
            "seconds any wait may take before it fails, naming the peer and the operation", positive=True),
    Setting("spin_us", "UCCL_SPIN_US", float, 50.0,
            "how long a waiting thread spins (us) before it yields or sleeps", low=0.0),
    Setting("yield_us", "UCCL_YIELD_US", float, -1.0,
            "then how long it yields the core (us) before it sleeps; -1: 1000 when every peer is on shared "
            "memory, 0 with any net peer (a yielding thread takes CPU the kernel's packet path needs)",
            shown_default="auto"),
    Setting("shm_ring_bytes", "UCCL_SHM_RING_BYTES", int, 1 << 20,
            "per-peer message ring of the shared-memory channel", low=_native_limit("MIN_RING_BYTES"), size=True, power_of_two=True,
            shown_default="1M"),
    Setting("shm_arena_bytes", "UCCL_SHM_ARENA_BYTES", int, 64 << 20,
            "shared memory peers copy into with memcpy (collective inboxes); touched pages only", low=0,
            size=True, shown_default="64M"),
    Setting("inline_max", "UCCL_INLINE_MAX", int, 8192,
            "writes up to this many bytes travel inside the shared-memory ring", low=0, size=True),
    Setting("max_regions", "UCCL_MAX_REGIONS", int, 4096, "memory regions an endpoint can register",
            low=1, high=(1 << 32) - 1),
    # net channel
    Setting("ifname", "UCCL_IFNAME", str, "", "interface the net channel binds (empty: the first one up)",
            flag="--ifname", metavar="IFACE"),
    Setting("addr", "UCCL_ADDR", str, "", "IPv4 address the net channel binds (overrides UCCL_IFNAME)"),
    Setting("num_paths", "UCCL_NUM_PATHS", int, 16,
            "paths (UDP source ports) per peer on the net channel; 1 = single path",
            low=1, high=_native_limit("MAX_PATHS"), flag="--paths", metavar="N"),
    Setting("cc", "UCCL_CC", str, "swift", "congestion control per path: swift is delay-based, cubic loss-based",
            choices=_congestion_controls, flag="--cc"),
    Setting("mtu", "UCCL_MTU", int, 1472, "UDP payload bytes per packet, uccl's 64-byte header included",
            low=_native_limit("MIN_MTU"), high=_native_limit("MAX_MTU")),
    Setting("rto_ms", "UCCL_RTO_MS", float, 5.0, "initial retransmission timeout (ms)", positive=True),
    Setting("max_retries", "UCCL_MAX_RETRIES", int, 50, "consecutive RTOs before a peer is failed", low=1),
    Setting("swift_target_us", "UCCL_SWIFT_TARGET_US", float, 1500.0,
            "swift's queueing-delay target (us) before flow scaling", positive=True),
    Setting("stats_file", "UCCL_NET_DEBUG", str, "",
            "append the net datapath's counters (packets, trains, system calls, polls) to this file at teardown"),
    # collectives
    Setting("algo", "UCCL_ALGO", str, "auto",
            "force an algorithm where a collective has it (`direct`: one copy per byte through per-call "
            "windows; `hierarchical`: crosses each level of the topology once, see UCCL_TOPOLOGY; `aggregated`: "
            "all_to_all sends one message per rail and pair of hosts, through a local exchange; `flat`: as if "
            "there were no topology)", choices=_algorithms),
    Setting("chunk_size", "UCCL_CHUNK_SIZE", int, 0, "pipeline chunk in bytes, e.g. `256K` (0: the tuner's)",
            low=0, size=True, shown_default="tuner"),
    Setting("channels", "UCCL_CHANNELS", int, 0, "threads per rank that split a large direct call (0: the tuner's)",
            low=0, high=64, shown_default="tuner"),
    Setting("topology", "UCCL_TOPOLOGY", str, "",
            "where ranks are, for the hierarchical collectives: `RANKS=HOST[/LEAF...]` entries joined by `;` "
            "(e.g. `0-1=h0/leaf0;2-3=h1/leaf1`) or `@FILE`; ranks on different declared hosts use the net channel; "
            "uccl-run --fabric sets it (empty: Slurm's SLURM_TOPOLOGY_ADDR if set, else hosts from the channels "
            "only; see uccl/collectives/topology.py). Checked when a communicator is built, where a bad value "
            "on any rank fails every rank",
            native=False, metavar="SPEC"),
    # overlap
    Setting("tp_splits", "UCCL_TP_SPLITS", int, 0,
            "pieces per rank block in uccl.overlap.tp's fused ops: 0 lets the plan decide from shapes, world "
            "and transport; -1 always runs the unfused path; N >= 1 forces N pieces",
            low=-1, high=64, native=False, shown_default="auto (0)"),
    # torch
    Setting("torch_autoload", "UCCL_TORCH_AUTOLOAD", bool, True,
            "register the `uccl` torch.distributed backend when torch is imported", native=False),
    Setting("torch_patches", "UCCL_TORCH_PATCHES", bool, True,
            "patch torch's `monitored_barrier` (uccl groups only) and fill `env://` from mpirun/srun "
            "(uccl jobs only); see uccl/distributed/torch_patches.py", native=False),
)

SETTINGS_BY_ENV = {s.env: s for s in SETTINGS}
_BY_NAME = {s.name: s for s in SETTINGS}


def _from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Config":
    """Reads every setting from the environment (or `environ`) and checks it."""
    return cls(**{s.name: s.read(environ) for s in SETTINGS})


def _validate(self) -> None:
    """Checks values set in code (e.g. with dataclasses.replace) as the environment's are."""
    for s in SETTINGS:
        s.check(getattr(self, s.name))


def _describe(self) -> str:
    return "\n".join(f"{s.env:<22} {getattr(self, s.name)!s:<12} {s.help}" for s in SETTINGS)


Config = dataclasses.make_dataclass(
    "Config",
    [(s.name, s.kind, dataclasses.field(default=s.default)) for s in SETTINGS],
    namespace={"from_env": classmethod(_from_env), "validate": _validate, "describe": _describe,
               "__post_init__": _validate,
               "__doc__": "Values in effect, one per entry of SETTINGS; `Config.from_env()` reads them."},
)
Config.__module__ = __name__


def markdown_table() -> str:
    """The README's configuration table (tests/test_config.py checks the README has it)."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        shown = s.shown_default or ("" if s.default == "" else str(int(s.default) if s.kind is bool
                                                                   else s.default))
        limits = s.limits()
        rows.append(f"| `{s.env}` | {f'`{shown}`' if shown else ''} | {s.help}{f' ({limits})' if limits else ''} |")
    return "\n".join(rows)


def native_header() -> str:
    """C++ constants for the native structs' defaults (so C++ callers get the same ones)."""
    out = ["// Generated by the build from uccl/config.py (native_header()), the one",
           "// declaration of every UCCL_* setting. Do not edit.", "#pragma once", "#include <cstdint>", "",
           "namespace uccl::defaults {", ""]
    types = {int: "int64_t", float: "double", str: "char"}
    for s in SETTINGS:
        if not s.native:
            continue
        if s.kind is str:
            out.append(f'inline constexpr char {s.name}[] = "{s.default}";')
        else:
            out.append(f"inline constexpr {types[s.kind]} {s.name} = {s.default!r};")
    out += ["", "}  // namespace uccl::defaults", ""]
    return "\n".join(out)
