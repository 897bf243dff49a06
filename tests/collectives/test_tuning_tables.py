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
    fabric = _table(tmp_path, "tuning-fabric.json", 2, "hierarchical")  # perf/tune.py --fabric's
    assert tuning_tables(1, str(tmp_path)) == [small, fabric]  # every table of the smallest host
    assert tuning_tables(16, str(tmp_path)) == [big, small, fabric]


def test_the_shipped_tables_load():
    for path in tuning_tables(2) + tuning_tables(16):
        assert load_rules([path]), f"{path} has no rules"


def _choices_under_rules(ctx, tables):
    """The all_reduce choice at 4 MiB under each list of rules (tuning tables' entries)."""
    from uccl.collectives import Communicator, communicator

    out = []
    for rules in tables:
        communicator.load_rules = lambda rules=rules: load_rules_from(rules)
        comm = Communicator(ctx.bootstrap)
        out.append(comm.algorithm("all_reduce", 4 << 20)[0])
        shape = comm.tune_shape()
        comm.barrier()
    return out, shape


def load_rules_from(rules):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"host_cpus": 1, "rules": rules}, f)
    return load_rules([f.name])


def _rule(algo, **keys):
    return {"collective": "all_reduce", "transport": "net", "max_bytes": 2**64 - 1, "algo": algo,
            "topology": "layered", **keys}


def test_rules_keyed_by_shape_and_link_apply_only_where_they_fit():
    """2 declared hosts x 2 ranks on this machine: ranks_per_host 2, no leaf level (1 host
    per leaf), link loopback. A keyed rule that fits beats an unkeyed one listed before it;
    keys that do not fit leave the choice to the others (hierarchical at 4 MiB)."""
    from uccl.testing import run_ranks

    tables = [
        [],
        [_rule("direct"), _rule("ring", ranks_per_host=2, hosts_per_leaf=1, link="loopback")],
        [_rule("ring", link="network")],
        [_rule("ring", ranks_per_host=4)],
        [_rule("ring", hosts_per_leaf=2)],
        [_rule("direct", link="loopback"), _rule("ring", ranks_per_host=2, link="loopback")],
    ]
    for choices, shape in run_ranks(_choices_under_rules, 4, args=(tables,), timeout=120,
                                    env={"UCCL_TOPOLOGY": "0-1=h0;2-3=h1"}):
        assert shape == {"topology": "layered", "ranks_per_host": 2, "hosts_per_leaf": 1, "link": "loopback"}
        assert choices == ["hierarchical", "ring", "hierarchical", "hierarchical", "hierarchical", "ring"], choices


def test_fabric_rules_carry_the_shape_they_were_measured_on():
    import importlib
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "perf"))
    tune = importlib.import_module("tune")
    plan = tune.QUICK
    best = {}
    for size in plan.sizes:  # ring wins small, hierarchical large
        best[f"all_reduce|ring|{size}"] = 1.0 if size < (1 << 20) else 3.0
        best[f"all_reduce|hierarchical|{size}"] = 2.0
    for algo in ("ring", "hierarchical"):
        for chunk in plan.chunks:
            best[f"all_reduce|{algo}|chunk|{chunk}"] = 1.0
    keys = {"topology": "layered", "ranks_per_host": 2, "hosts_per_leaf": 1, "link": "network"}
    rules, _ = tune.rules_for("all_reduce", 4, "net", best, plan, keys)
    assert [(r["algo"], r["max_bytes"]) for r in rules] == [("ring", 4 << 10), ("hierarchical", 2**64 - 1)]
    assert all({k: r[k] for k in keys} == keys for r in rules)
    assert len(load_rules_from(rules)) == 2


def test_near_ties_keep_the_smaller_sizes_algorithm():
    import importlib
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "perf"))
    tune = importlib.import_module("tune")
    plan = tune.replace(tune.QUICK, sizes=(1, 2, 3, 4), candidates={"all_reduce": ["ring", "hierarchical"]})
    ring = {1: 1.0, 2: 1.03, 3: 1.0, 4: 1.2}  # hierarchical 1.0 throughout: 3 % is a tie, 20 % is not
    best = {f"all_reduce|ring|{s}": ring[s] for s in plan.sizes}
    best.update({f"all_reduce|hierarchical|{s}": 1.01 for s in plan.sizes})
    best.update({f"all_reduce|{a}|chunk|{c}": 1.0 for a in ("ring", "hierarchical") for c in plan.chunks})
    rules, _ = tune.rules_for("all_reduce", 4, "net", best, plan)
    assert [(r["algo"], r["max_bytes"]) for r in rules] == [("ring", 3), ("hierarchical", 2**64 - 1)]
