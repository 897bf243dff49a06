"""Settings: each UCCL_* variable is declared once (uccl/config.py) and everything else
derives from it: the environment round-trips, bad values fail at start-up naming the
variable, native code never reads the environment, the README's table matches."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from uccl import _native
from uccl.config import SETTINGS_BY_ENV, Config, markdown_table

ROOT = pathlib.Path(__file__).resolve().parent.parent

# A valid, non-default text per setting and the value it must read as.
GOOD = {
    "UCCL_TRANSPORT": ("net", "net"), "UCCL_TIMEOUT": ("12.5", 12.5), "UCCL_SPIN_US": ("7", 7.0),
    "UCCL_YIELD_US": ("0", 0.0), "UCCL_SHM_RING_BYTES": ("64K", 65536), "UCCL_SHM_ARENA_BYTES": ("2M", 2 << 20),
    "UCCL_INLINE_MAX": ("1024", 1024), "UCCL_MAX_REGIONS": ("100", 100), "UCCL_IFNAME": ("lo", "lo"),
    "UCCL_ADDR": ("127.0.0.1", "127.0.0.1"), "UCCL_NUM_PATHS": ("4", 4), "UCCL_CC": ("cubic", "cubic"),
    "UCCL_MTU": ("9000", 9000), "UCCL_RTO_MS": ("2.5", 2.5), "UCCL_MAX_RETRIES": ("8", 8),
    "UCCL_SWIFT_TARGET_US": ("300", 300.0), "UCCL_NET_DEBUG": ("/tmp/x", "/tmp/x"),
    "UCCL_ALGO": ("ring", "ring"), "UCCL_CHUNK_SIZE": ("256K", 256 << 10), "UCCL_CHANNELS": ("3", 3),
    "UCCL_TOPOLOGY": ("0-1=h0/leaf0;2=h1/leaf1", "0-1=h0/leaf0;2=h1/leaf1"),
    "UCCL_TORCH_AUTOLOAD": ("0", False),
    "UCCL_TORCH_PATCHES": ("0", False),
    "UCCL_TP_SPLITS": ("4", 4),
}

# Bad texts per kind of check, each with what the message must say.
BAD = [
    ("UCCL_TRANSPORT", "rdma", "must be one of auto, shm, net"),
    ("UCCL_CC", "bbr", "must be one of swift, cubic"),
    ("UCCL_ALGO", "tree", "must be one of auto, "),
    ("UCCL_MTU", "70000", f"must be in [{_native.MIN_MTU}, {_native.MAX_MTU}]"),
    ("UCCL_MTU", "100", f"must be in [{_native.MIN_MTU}, {_native.MAX_MTU}]"),
    ("UCCL_MTU", "big", "invalid literal"),
    ("UCCL_NUM_PATHS", "0", f"must be in [1, {_native.MAX_PATHS}]"),
    ("UCCL_CHANNELS", "65", "must be in [0, 64]"),
    ("UCCL_SHM_RING_BYTES", "5000", "must be a power of two"),
    ("UCCL_SHM_RING_BYTES", "1K", "must be >= 4096"),
    ("UCCL_CHUNK_SIZE", "lots", "is not a size"),
    ("UCCL_TIMEOUT", "0", "must be > 0"),
    ("UCCL_SWIFT_TARGET_US", "-1", "must be > 0"),
    ("UCCL_MAX_RETRIES", "0", "must be >= 1"),
    ("UCCL_TORCH_AUTOLOAD", "maybe", "not a boolean"),
    ("UCCL_TORCH_PATCHES", "perhaps", "not a boolean"),
    ("UCCL_TP_SPLITS", "-2", "must be in [-1, 64]"),
]


def test_every_setting_has_a_round_trip_case():
    assert set(GOOD) == set(SETTINGS_BY_ENV)


@pytest.mark.parametrize("env", sorted(GOOD))
def test_round_trip_from_environment(env):
    text, value = GOOD[env]
    setting = SETTINGS_BY_ENV[env]
    cfg = Config.from_env({env: text})
    assert getattr(cfg, setting.name) == value
    assert getattr(Config.from_env({}), setting.name) == setting.default
    assert getattr(Config.from_env({env: ""}), setting.name) == setting.default


@pytest.mark.parametrize("env,text,says", BAD)
def test_bad_value_names_the_variable(env, text, says):
    with pytest.raises(ValueError) as err:
        Config.from_env({env: text})
    assert str(err.value).startswith(f"{env}={text}: "), err.value
    assert says in str(err.value)


def test_values_set_in_code_are_checked():
    import dataclasses
    with pytest.raises(ValueError, match=r"UCCL_NUM_PATHS=0: must be in"):
        dataclasses.replace(Config(), num_paths=0)
    with pytest.raises(ValueError, match=r"UCCL_ALGO='nope': must be one of"):
        Config(algo="nope")


def test_algorithm_names_come_from_native():
    assert set(_native.algorithms()) == {"ring", "recursive_doubling", "direct", "hierarchical", "flat", "pairwise",
                                         "chain", "aggregated"}


def test_native_rejects_an_unknown_algorithm():
    """A C++ caller (no Python checks) gets the same error from the tuner."""
    cfg = _native.CommConfig()
    cfg.algo = "tree"
    ep = _native.Endpoint(_native.EndpointConfig())
    ep.connect([ep.descriptor()])
    with pytest.raises(ValueError, match="UCCL_ALGO=tree: must be one of auto, ring"):
        _native.Communicator(ep, cfg)


def test_native_defaults_are_the_declared_ones():
    """The native structs' defaults come from the header generated from SETTINGS."""
    ep, net, comm = _native.EndpointConfig(), _native.NetConfig(), _native.CommConfig()
    cfg = Config()
    assert (ep.transport, ep.timeout_s, ep.spin_us, ep.yield_us) == (cfg.transport, cfg.timeout, cfg.spin_us,
                                                                     cfg.yield_us)
    assert (ep.ring_bytes, ep.arena_bytes, ep.inline_max, ep.max_regions) == (
        cfg.shm_ring_bytes, cfg.shm_arena_bytes, cfg.inline_max, cfg.max_regions)
    assert (net.ifname, net.addr, net.num_paths, net.cc, net.mtu, net.rto_ms, net.max_retries,
            net.swift_target_us) == (cfg.ifname, cfg.addr, cfg.num_paths, cfg.cc, cfg.mtu, cfg.rto_ms,
                                     cfg.max_retries, cfg.swift_target_us)
    assert (comm.algo, comm.chunk_bytes, comm.channels) == (cfg.algo, cfg.chunk_size, cfg.channels)


def test_no_getenv_in_native_sources():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "native" / "src").rglob("*")
            if p.suffix in (".h", ".cc", ".cpp", ".hpp")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\b(secure_)?getenv\s*\(|\benviron\b", line)]
    assert not hits, f"native code reads the environment: {hits}"


def test_config_does_not_import_the_collectives():
    code = "import sys, uccl.config; print(sorted(m for m in sys.modules if m.startswith('uccl.collectives')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_readme_table_matches_the_declarations():
    assert markdown_table() in (ROOT / "README.md").read_text(), \
        "README's configuration table is stale: paste `python -m uccl.config_cli --markdown`"


def test_uccl_run_options_come_from_the_declarations():
    from uccl.launch.run import UCCL_OPTIONS, get_args_parser, uccl_env
    assert {s.env for s in UCCL_OPTIONS.values()} == {"UCCL_TRANSPORT", "UCCL_NUM_PATHS", "UCCL_CC", "UCCL_IFNAME"}
    parser = get_args_parser()
    args = parser.parse_args(["--paths", "4", "--cc", "cubic", "x.py"])
    assert uccl_env(args) == {"UCCL_NUM_PATHS": "4", "UCCL_CC": "cubic"}
    help_text = parser.format_help()
    for s in UCCL_OPTIONS.values():
        assert s.env in help_text


def test_torch_autoload_reads_the_declared_setting(monkeypatch):
    from uccl.distributed import registration
    calls = []
    monkeypatch.setattr(registration, "register", lambda: calls.append(1))
    monkeypatch.setenv("UCCL_TORCH_AUTOLOAD", "0")
    registration.autoload()
    assert calls == []
    monkeypatch.setenv("UCCL_TORCH_AUTOLOAD", "1")
    registration.autoload()
    assert calls == [1]
