"""The piece plan is a pure function of op, shapes, world and transport (so every rank
computes the same one) with the documented rules, and UCCL_TP_SPLITS overrides it."""

from __future__ import annotations

import pytest

from uccl.overlap.tp.plan import MAX_PIECES, MIN_BLOCK_BYTES, ONE_HOST_MLP_PIECES, PIECE_BYTES, bounds, last_plan, make_plan


def plan(op="all_gather_matmul", *, uccl=True, cpu=True, world=2, transport="net", block_bytes=4 << 20,
         block_rows=1024, splits=0):
    return make_plan(op, uccl=uccl, cpu=cpu, world=world, transport=transport, block_bytes=block_bytes,
                     block_rows=block_rows, splits=splits)


def test_net_fuses_in_pieces_of_about_piece_bytes():
    assert plan(block_bytes=MIN_BLOCK_BYTES + 3 * PIECE_BYTES).pieces == min(MAX_PIECES,
                                                                            MIN_BLOCK_BYTES // PIECE_BYTES + 3)
    assert plan(op="parallel_mlp", block_bytes=512 << 10).pieces == 8  # the measured best (plan.py)
    assert plan(block_bytes=100 * PIECE_BYTES).pieces == MAX_PIECES
    assert plan(block_bytes=MIN_BLOCK_BYTES).pieces == MIN_BLOCK_BYTES // PIECE_BYTES
    assert plan(block_bytes=8 * PIECE_BYTES, block_rows=3).pieces == 3  # never more pieces than rows
    assert plan().path == "fused" and last_plan() == plan()


def test_parallel_mlp_fuses_on_one_host_in_pieces_above_the_minimum_block():
    for transport in ("shm", "loopback"):
        p = plan(op="parallel_mlp", transport=transport, block_bytes=MIN_BLOCK_BYTES)
        assert (p.path, p.pieces) == ("fused", ONE_HOST_MLP_PIECES), p
        p = plan(op="parallel_mlp", transport=transport, block_bytes=MIN_BLOCK_BYTES - 1)
        assert p.path == "unfused", p
    assert plan(transport="shm", block_bytes=MIN_BLOCK_BYTES).path == "unfused"  # the single ops do not


@pytest.mark.parametrize("kwargs,reason", [
    ({"transport": "shm"}, "shared memory"), ({"transport": "loopback"}, "within one host"),
    ({"block_bytes": MIN_BLOCK_BYTES - 1}, "block of"), ({"uccl": False}, "not a uccl group"),
    ({"cpu": False}, "not on the CPU"), ({"world": 1}, "world of one"), ({"block_rows": 0}, "empty block"),
    ({"op": "all_reduce_rmsnorm"}, "add+norm"), ({"splits": -1}, "UCCL_TP_SPLITS=-1")])
def test_unfused_where_overlap_cannot_win(kwargs, reason):
    p = plan(**kwargs)
    assert p.path == "unfused" and p.pieces == 0 and reason in p.reason, p


def test_splits_override_forces_pieces_on_any_transport():
    for transport in ("shm", "loopback", "net"):
        p = plan(transport=transport, block_bytes=16, splits=5)
        assert (p.path, p.pieces, p.reason) == ("fused", 5, "UCCL_TP_SPLITS=5")
    assert plan(op="all_reduce_rmsnorm", splits=3, block_rows=2).pieces == 2


def test_same_inputs_same_plan():
    assert plan(block_bytes=3 << 20) == plan(block_bytes=3 << 20)


def test_splits_read_from_environment(monkeypatch):
    monkeypatch.setenv("UCCL_TP_SPLITS", "6")
    assert make_plan("all_gather_matmul", uccl=True, cpu=True, world=2, transport="shm", block_bytes=1,
                     block_rows=100).pieces == 6
    monkeypatch.setenv("UCCL_TP_SPLITS", "-3")
    with pytest.raises(ValueError, match="UCCL_TP_SPLITS=-3"):
        make_plan("all_gather_matmul", uccl=True, cpu=True, world=2, transport="shm", block_bytes=1, block_rows=1)


@pytest.mark.parametrize("rows,pieces", [(10, 3), (7, 7), (1, 1), (100, 8)])
def test_bounds_cover_rows_in_order(rows, pieces):
    cuts = bounds(rows, pieces)
    assert len(cuts) == pieces and cuts[0][0] == 0 and cuts[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    assert max(h - l for l, h in cuts) - min(h - l for l, h in cuts) <= 1
