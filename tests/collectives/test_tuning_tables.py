"""The tuner's tables are per host size: a host uses the table measured on the largest
host not larger than itself, and falls through to smaller ones for cases it lacks."""

from __future__ import annotations

import json

from uccl.collectives.communicator import load_rules, tuning_tables


def _table(folder, name, cpus, algo):
    path = folder / name
    rule = {"collective": "all_reduce", "world": 2, "transport": "shm", "max_bytes": 2**64 - 1, "algo": algo}
    path.write_text(json.dumps({"host_cpus": cpus, "rules": [rule]}))
    return str(path)


def test_the_largest_fitting_table_comes_first(tmp_path):
    small = _table(tmp_path, "tuning.json", 2, "ring")
    big = _table(tmp_path, "tuning-16cpus.json", 16, "direct")
    huge = _table(tmp_path, "tuning-64cpus.json", 64, "direct")
    assert tuning_tables(2, str(tmp_path)) == [small]
    assert tuning_tables(8, str(tmp_path)) == [small]
    assert tuning_tables(16, str(tmp_path)) == [big, small]
    assert tuning_tables(32, str(tmp_path)) == [big, small]
    assert tuning_tables(128, str(tmp_path)) == [huge, big, small]
    assert tuning_tables(1, str(tmp_path)) == [small]  # none fits: the smallest stands in
    assert len(load_rules(tuning_tables(16, str(tmp_path)))) == 2


def test_the_shipped_tables_load():
    for path in tuning_tables(2) + tuning_tables(16):
        assert load_rules([path]), f"{path} has no rules"
