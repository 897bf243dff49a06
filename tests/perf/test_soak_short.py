"""The soak (perf/soak.py) for two minutes: random collectives over the net channel with 1 %
loss on an emulated fabric; zero wrong results, no errors, fds and threads flat after
warm-up, resident memory within a tolerance. Reads the verdict's figures from its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOAK = os.path.join(ROOT, "perf", "soak.py")
RSS_TOLERANCE_MIB = 16.0  # two minutes: a quarter is 30 s, so allow for what is still settling
# Two minutes are too short to judge memory per operation (the allocator is still settling:
# 170-470 B/op measured on a loaded host by a build that the 30-minute run shows flat);
# test_soak_memory_slope_long judges it over ten minutes.


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    """One 2-minute soak, judged by the tests below from its JSON."""
    from uccl.fabric.netns import available

    ok, why = available()
    if not ok:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    proc = subprocess.run([sys.executable, SOAK, "--minutes", "2", "--world", "4", "--seed", "5", "--sample", "2",
                           "--rss-tolerance-mib", str(RSS_TOLERANCE_MIB), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert out.exists(), f"the soak wrote no figures (exit {proc.returncode}):\n{report}"
    return json.loads(out.read_text()), report


@pytest.mark.netns
def test_soak_results_right_fds_and_threads_flat(soak):
    data, report = soak
    assert data["world"] == 4 and data["loss_percent"] == 1.0
    assert sum(data["packets_dropped_by_loss_rule"].values()) > 0, "no packet was dropped: loss was not injected"
    assert data["ops_total"] > 0, report
    assert data["wrong_total"] == 0, report
    for r, info in data["ranks"].items():
        assert not info["errors"], f"rank {r}: {info['errors'][:2]}"
        assert info["end"] is not None and info["exit"] == 0, f"rank {r} did not finish:\n{report}"
        flat = data["verdict"]["ranks"][r]
        assert flat["fds_q4_max"] <= flat["fds_q2_max"], f"rank {r}: fds grew: {flat}"
        assert flat["threads_q4_max"] <= flat["threads_q2_max"], f"rank {r}: threads grew: {flat}"


@pytest.mark.netns
def test_soak_memory_flat(soak):
    data, report = soak
    for r in data["ranks"]:
        flat = data["verdict"]["ranks"][r]
        assert flat["rss_mib_q4_max"] - flat["rss_mib_q2_max"] <= RSS_TOLERANCE_MIB, f"rank {r}: RSS grew: {flat}"


@pytest.mark.netns
@pytest.mark.long
def test_soak_memory_slope_long(tmp_path):
    """Ten minutes: long enough for the allocator to settle, so the per-operation slope
    tells a leak (the completion leak grew 500-900 B per operation) from a flat process
    (the 30-minute run in perf/results/soak_30min.json: 6-18 B per operation)."""
    from uccl.fabric.netns import available

    ok, why = available()
    if not ok:
        pytest.skip(why)
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, SOAK, "--minutes", "10", "--world", "4", "--seed", "11", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.exists(), f"the soak wrote no figures (exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
    data = json.loads(out.read_text())
    assert data["wrong_total"] == 0
    for r in data["ranks"]:
        flat = data["verdict"]["ranks"][r]
        assert flat["rss_bytes_per_op"] <= data["rss_bytes_per_op_limit"], f"rank {r}: RSS grows per op: {flat}"
