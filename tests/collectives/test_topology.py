"""Topology discovery and the hierarchical collectives, with hosts emulated by declaration:
ranks of different declared hosts (UCCL_TOPOLOGY) use the net channel between them, ranks
of one declared host shared memory, all on this machine."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.collectives.reference import OPS, available_dtypes, check, make, reduce_ref, values, zeros
from uccl.collectives.topology import describe, parse, slurm_path
from uccl.errors import InvalidArgumentError
from uccl.testing import run_ranks

TWO_BY_TWO = "0-1=h0;2-3=h1"                          # 2 hosts x 2 ranks
UNEVEN = "0-1=h0;2=h1;3-4=h2"                         # 3 hosts x 1-2 ranks
LEAVES = "0=h0/l0;1=h1/l0;2=h2/l1;3=h3/l1"            # 2 leaves x 2 hosts x 1 rank
LEAVES_2 = "0-1=h0/l0;2-3=h1/l0;4-5=h2/l1;6-7=h3/l1"  # 2 leaves x 2 hosts x 2 ranks


def world_of(spec: str) -> int:
    return len(parse(spec))


def test_parse_gives_each_rank_its_path():
    assert parse(LEAVES_2)[5] == ("h2", "l1")
    assert parse("# comment\n0-2=a\n3=b  # trailing")[3] == ("b",)
    assert describe(LEAVES_2, {}) == "UCCL_TOPOLOGY: 8 ranks on 4 hosts, 2 leaves"


def test_parse_reads_a_file(tmp_path):
    path = tmp_path / "topo.txt"
    path.write_text("0-1=h0/rack0\n2-3=h1/rack1\n")
    assert parse(f"@{path}") == [("h0", "rack0")] * 2 + [("h1", "rack1")] * 2


@pytest.mark.parametrize("spec, why", [
    ("0=h0;0=h1", "rank 0 is declared twice"),
    ("0=h0;2=h1", r"ranks \[1\] are not declared"),
    ("0=h0/l0;1=h1", "different numbers of levels"),
    ("0=h0/l0;1=h0/l1", "host 'h0' is placed in both"),
    ("0=", "is not RANKS=HOST"),
    ("x=h0", "is not a rank"),
])
def test_parse_rejects_bad_values(spec, why):
    with pytest.raises(ValueError, match=why):
        parse(spec)


def _facts_of_two_by_two(ctx, n):
    """What one job of 2 declared hosts x 2 ranks sees: the topology, the channels, the
    tuner's choices (declared, forced flat, none declared), the bytes one hierarchical
    all_reduce writes to each peer, and a split's topology and result."""
    import dataclasses

    from uccl.collectives import Communicator
    from uccl.config import Config

    comm = Communicator(ctx.bootstrap)
    facts = {"levels": comm.topology().levels, "channels": [comm.endpoint.channel(p) for p in range(4)],
             "auto": comm.algorithm("all_reduce", 4 << 20)[0], "small": comm.algorithm("all_reduce", 64 << 10)[0]}
    flat = Communicator(ctx.bootstrap, dataclasses.replace(Config.from_env(), algo="flat"))
    facts["flat"] = flat.algorithm("all_reduce", 4 << 20)[0]
    undeclared = Communicator(ctx.bootstrap, dataclasses.replace(Config.from_env(), topology=""))
    facts["undeclared"] = (undeclared.topology().levels, undeclared.algorithm("all_reduce", 4 << 20)[0])
    facts["sent"] = _bytes_written(comm, n)
    sub = comm.split(ctx.rank % 2)  # ranks 0, 2 and 1, 3: one rank of each host
    x = np.full(3, ctx.rank + 1.0, np.float32)
    sub.all_reduce(x)
    facts["split"] = (sub.topology().levels, sub.world_ranks, x.tolist())
    comm.barrier()
    return facts


def _bytes_written(comm, n):
    """Bytes this rank writes to each peer during one all_reduce of n float32."""
    x = np.ones(n, np.float32)
    comm.all_reduce(x)  # warm-up: registrations, first credits
    before = [p["bytes_written"] for p in comm.endpoint.stats()["peers"]]
    comm.all_reduce(x)
    return [p["bytes_written"] - b for p, b in zip(comm.endpoint.stats()["peers"], before)]


RAIL = {0: 2, 1: 3, 2: 0, 3: 1}  # the rank at the same position in the other host (or leaf)


def test_two_declared_hosts_of_two_ranks():
    n = 1 << 18  # 1 MiB of float32
    facts = run_ranks(_facts_of_two_by_two, 4, args=(n,), env={"UCCL_TOPOLOGY": TWO_BY_TWO}, timeout=120)
    for r, f in enumerate(facts):
        assert f["levels"] == ((0, 0, 1, 1),)
        assert f["channels"] == (["shm", "shm", "net", "net"] if r < 2 else ["net", "net", "shm", "shm"])
        assert f["auto"] == "hierarchical" and f["flat"] not in ("hierarchical", "flat")
        assert f["small"] != "hierarchical"  # below 512 KiB latency counts more than bytes
        # without a declaration every rank of this machine shares memory: one host, flat
        assert f["undeclared"] == (((0, 0, 0, 0),), f["undeclared"][1]) and f["undeclared"][1] != "hierarchical"
        # across hosts a rank sends only its shard (half the vector) through a two-rank ring
        # all-reduce, to its rail peer: N/2 bytes (a flat 4-rank ring sends 1.5 N per rank)
        across = {p: b for p, b in enumerate(f["sent"]) if p // 2 != r // 2 and b}
        assert across == {RAIL[r]: n * 4 // 2}, (r, f["sent"])
        assert f["split"] == (((0, 1),), [r % 2, r % 2 + 2], [4.0 + 2 * (r % 2)] * 3)


def _with_own_topology(ctx, specs):
    return _with_own_env(ctx, [{"UCCL_TOPOLOGY": s} for s in specs])


def _with_own_env(ctx, envs):
    """Builds a communicator under this rank's environment; its error, or what it sees."""
    from uccl.collectives import Communicator

    os.environ.update(envs[ctx.rank])
    try:
        comm = Communicator(ctx.bootstrap)
    except InvalidArgumentError as exc:
        return str(exc)
    x = np.full(5, ctx.rank + 1.0, np.float32)
    comm.all_reduce(x)
    t = comm.topology()
    seen = {"levels": t.levels, "source": t.source, "link": t.link, "text": str(t), "sum": x.tolist(),
            "channels": [comm.endpoint.channel(p) for p in range(ctx.world_size)]}
    comm.barrier()
    return seen


def test_mismatched_topologies_fail_on_every_rank():
    specs = ["0-1=h0;2=h1", "0-1=h0;2=h1", "0=h0;1-2=h1"]
    for r, msg in enumerate(run_ranks(_with_own_topology, 3, args=(specs,), timeout=60)):
        assert msg.startswith(f"rank {r}: the ranks declare different topologies"), msg
        assert "ranks [0, 1] have UCCL_TOPOLOGY='0-1=h0;2=h1'" in msg and "ranks [2]" in msg


def test_a_topology_that_does_not_parse_on_one_rank_fails_every_rank_at_once():
    """The bad value travels with the digests: nobody waits for the bootstrap's timeout (60 s)."""
    import time

    specs = ["0-2=h0", "0=h0;0=h1", "0-2=h0"]
    start = time.monotonic()
    msgs = run_ranks(_with_own_topology, 3, args=(specs,), timeout=40, store_timeout=60)
    assert time.monotonic() - start < 30
    for r, msg in enumerate(msgs):
        assert msg.startswith(f"rank {r}: the ranks declare different topologies"), msg
        assert "ranks [1] have UCCL_TOPOLOGY='0=h0;0=h1' (invalid: rank 0 is declared twice)" in msg, msg


def test_a_bad_value_is_kept_by_the_config_and_shown_invalid():
    from uccl.config import Config

    assert Config.from_env({"UCCL_TOPOLOGY": "0=h0;0=h1"}).topology == "0=h0;0=h1"
    assert describe("0=h0;0=h1", {}) == "UCCL_TOPOLOGY: invalid: rank 0 is declared twice"


def test_slurm_addresses_name_node_leaf_and_the_switches_above():
    assert slurm_path("s0.leaf3.node12", "switch.switch.node") == ("node12", "leaf3", "s0")
    assert slurm_path("n1", "node") == ("n1",)
    for addr, pattern in [("s0.leaf3.node12", "switch.node"), ("s0.n1", "node.switch"), ("s0..n1", "switch.switch.node")]:
        with pytest.raises(ValueError, match="does not fit|empty component"):
            slurm_path(addr, pattern)
    env = {"SLURM_TOPOLOGY_ADDR": "s0.leaf3.node12", "SLURM_TOPOLOGY_ADDR_PATTERN": "switch.switch.node"}
    assert describe("", env).startswith("SLURM_TOPOLOGY_ADDR=s0.leaf3.node12 (SLURM_TOPOLOGY_ADDR_PATTERN="
                                        "switch.switch.node): this rank on node node12, leaf leaf3, level2 s0")
    assert describe("0=h0", env).startswith("UCCL_TOPOLOGY: ")  # the declaration wins
    assert describe("", {}).startswith("none declared")


def test_uccl_config_shows_the_topology_source(monkeypatch, capsys):
    import uccl

    monkeypatch.delenv("UCCL_TOPOLOGY", raising=False)
    monkeypatch.setenv("SLURM_TOPOLOGY_ADDR", "s0.leaf3.node12")
    monkeypatch.setenv("SLURM_TOPOLOGY_ADDR_PATTERN", "switch.switch.node")
    uccl.config()
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("(topology)")]
    assert len(shown) == 1 and "SLURM_TOPOLOGY_ADDR=s0.leaf3.node12" in shown[0], shown
    monkeypatch.setenv("UCCL_TOPOLOGY", LEAVES)
    uccl.config()
    assert "(topology)             UCCL_TOPOLOGY: 4 ranks on 4 hosts, 2 leaves" in capsys.readouterr().out


def _slurm(addr, pattern="switch.switch.node"):
    return {"SLURM_TOPOLOGY_ADDR": addr, "SLURM_TOPOLOGY_ADDR_PATTERN": pattern}


def test_slurm_places_nodes_on_leaves_when_no_topology_is_declared():
    """Ranks 0-1 on node a and rank 2 on node b under leaf L0, rank 3 on node c under leaf
    L1 one level higher up (a node at another depth: the levels they share count)."""
    envs = [_slurm("top.L0.a"), _slurm("top.L0.a"), _slurm("top.L0.b"), _slurm("L1.c", "switch.node")]
    for r, seen in enumerate(run_ranks(_with_own_env, 4, args=(envs,), timeout=60)):
        assert seen["levels"] == ((0, 0, 1, 2), (0, 0, 0, 1)), seen
        assert seen["source"] == "SLURM_TOPOLOGY_ADDR" and seen["link"] == "loopback", seen
        assert "(SLURM_TOPOLOGY_ADDR; slowest level over loopback)" in seen["text"], seen
        # the node keeps ranks of different nodes apart; which share a host, the channels say
        assert seen["channels"] == [["shm", "shm", "net", "net"], ["shm", "shm", "net", "net"],
                                    ["net", "net", "shm", "net"], ["net", "net", "net", "shm"]][r]
        assert seen["sum"] == [10.0] * 5


def test_slurm_on_some_ranks_and_a_declaration_on_others_fail_every_rank():
    envs = [_slurm("s.L0.a"), _slurm("s.L0.b"), {"UCCL_TOPOLOGY": "0=h0;1=h1;2=h2"}]
    for r, msg in enumerate(run_ranks(_with_own_env, 3, args=(envs,), timeout=60)):
        assert msg.startswith(f"rank {r}: the ranks declare different topologies"), msg
        assert "ranks [0, 1] have SLURM_TOPOLOGY_ADDR (no UCCL_TOPOLOGY)" in msg, msg
        assert "ranks [2] have UCCL_TOPOLOGY='0=h0;1=h1;2=h2'" in msg, msg


def test_a_topology_of_the_wrong_size_fails_on_every_rank():
    for r, msg in enumerate(run_ranks(_with_own_topology, 2, args=(["0-2=h0"] * 2,), timeout=60)):
        assert msg == f"rank {r}: UCCL_TOPOLOGY=0-2=h0: declares 3 ranks for a world of 2", msg


def inputs(rank: int, n: int, dtype: str, op: str, world: int, seed: int = 0) -> np.ndarray:
    """The shared test inputs, kept so that a sum or product over `world` ranks fits 8-bit
    types (the reference does not wrap): sums clipped, factors of 2 beyond the sixth rank
    turned into 1 (keeping their sign)."""
    v = values(rank, n, dtype, op, seed)
    if dtype in ("int8", "uint8") and op in ("sum", "avg"):
        bound = (127 if dtype == "int8" else 255) // world
        v = np.clip(v, -bound, bound)
    if dtype in ("int8", "uint8") and op == "prod" and rank >= 6:
        v = np.sign(v)
    return v


def _check_all_reduce(comm, dtype, op, n, W):
    """all_reduce of n elements out of place and in place against numpy; the inputs."""
    r = comm.rank
    ins = [inputs(q, n, dtype, op, W) for q in range(W)]
    want = reduce_ref(ins, op, dtype)
    out = zeros(dtype, n)
    comm.all_reduce(make(dtype, ins[r]), out, op=op)
    check(out, want, dtype, op, f"all_reduce {dtype} {op} n={n} rank {r}")
    buf = make(dtype, ins[r])
    comm.all_reduce(buf, op=op)
    check(buf, want, dtype, op, f"all_reduce in place {dtype} {op} n={n} rank {r}")
    return ins


def _all_collectives(ctx, big, dtypes=None):
    """Every collective x dtype x op against numpy under the declared topology (UCCL_ALGO
    forces hierarchical where a collective has it)."""
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    W, r = ctx.world_size, ctx.rank
    for dtype in dtypes or available_dtypes():
        esize = np.dtype("float16" if dtype == "bfloat16" else dtype).itemsize
        sizes = [0, 1, 1001] + ([big // esize + 7] if dtype in ("float32", "bfloat16", "int64") else [])
        for n in sizes:
            for op in OPS:
                label = f"{dtype} {op} n={n} rank {r}"
                ins = _check_all_reduce(comm, dtype, op, n, W)
                full = [inputs(q, n * W, dtype, op, W, seed=1) for q in range(W)]
                out = zeros(dtype, n)
                comm.reduce_scatter(make(dtype, full[r]), out, op=op)
                check(out, reduce_ref(full, op, dtype)[r * n:(r + 1) * n], dtype, op, f"reduce_scatter {label}")
                out = zeros(dtype, n)
                comm.reduce(make(dtype, ins[r]), out, op=op, root=W - 1)
                if r == W - 1:
                    check(out, reduce_ref(ins, op, dtype), dtype, op, f"reduce {label}")
            out = zeros(dtype, n * W)
            comm.all_gather(make(dtype, ins[r]), out)
            check(out, np.concatenate(ins), dtype, "sum", f"all_gather {dtype} n={n}")
            buf = make(dtype, ins[r])
            comm.broadcast(buf, root=1)
            check(buf, ins[1], dtype, "sum", f"broadcast {dtype} n={n}")
            _flat_collectives(comm, dtype, n)
    # A root may finish a broadcast before the last rank's acknowledgement has been
    # confirmed to that rank; nobody leaves before everyone is done.
    comm.barrier()
    return comm.algorithm("all_reduce", big)[0], comm.topology().levels


def _flat_collectives(comm, dtype, n):
    """The collectives without a hierarchical algorithm, over the same mix of shared-memory
    and net channels: all_to_all, gather, scatter, and (n > 1) the v variants with counts
    that differ per rank."""
    W, r = comm.world_size, comm.rank
    blocks = [inputs(q, n * W, dtype, "sum", W, seed=2) for q in range(W)]
    out = zeros(dtype, n * W)
    comm.all_to_all(make(dtype, blocks[r]), out)
    check(out, np.concatenate([b[r * n:(r + 1) * n] for b in blocks]), dtype, "sum", f"all_to_all {dtype} n={n}")
    out = zeros(dtype, n * W) if r == 0 else None
    comm.gather(make(dtype, blocks[r][:n]), out, root=0)
    if r == 0:
        check(out, np.concatenate([b[:n] for b in blocks]), dtype, "sum", f"gather {dtype} n={n}")
    out = zeros(dtype, n)
    comm.scatter(make(dtype, blocks[W - 1]) if r == W - 1 else None, out, root=W - 1)
    check(out, blocks[W - 1][r * n:(r + 1) * n], dtype, "sum", f"scatter {dtype} n={n}")
    if n < 2:
        return
    counts = [n // (q + 1) for q in range(W)]  # rank q's share
    mine = [inputs(q, counts[q], dtype, "sum", W, seed=3) for q in range(W)]
    out = zeros(dtype, sum(counts))
    comm.all_gather_v(make(dtype, mine[r]), out, counts)
    check(out, np.concatenate(mine), dtype, "sum", f"all_gather_v {dtype} n={n}")
    full = [inputs(q, sum(counts), dtype, "sum", W, seed=4) for q in range(W)]
    out = zeros(dtype, counts[r])
    comm.reduce_scatter_v(make(dtype, full[r]), out, counts)
    start = sum(counts[:r])
    check(out, reduce_ref(full, "sum", dtype)[start:start + counts[r]], dtype, "sum", f"reduce_scatter_v {dtype} n={n}")
    sc = [[(i * 3 + j) % 5 * (n // 7) for j in range(W)] for i in range(W)]  # rank i sends sc[i][j] to rank j
    sends = [inputs(i, sum(sc[i]), dtype, "sum", W, seed=5) for i in range(W)]
    out = zeros(dtype, sum(sc[i][r] for i in range(W)))
    comm.all_to_all_v(make(dtype, sends[r]), sc[r], out, [sc[i][r] for i in range(W)])
    want = np.concatenate([sends[i][sum(sc[i][:r]):sum(sc[i][:r + 1])] for i in range(W)])
    check(out, want, dtype, "sum", f"all_to_all_v {dtype} n={n}")


@pytest.mark.parametrize("spec, dtypes, levels", [
    (TWO_BY_TWO, None, ((0, 0, 1, 1),)),
    # hosts of 2 and 1 ranks: flat below the uneven level
    (UNEVEN, ["int8", "bfloat16", "float32"], ((0, 0, 1, 2, 2),)),
    (LEAVES, None, ((0, 1, 2, 3), (0, 0, 1, 1))),
])
def test_collectives_match_numpy_under_a_declared_topology(spec, dtypes, levels):
    seen = run_ranks(_all_collectives, world_of(spec), args=(1 << 20, dtypes),
                     env={"UCCL_TOPOLOGY": spec, "UCCL_ALGO": "hierarchical"}, timeout=240)
    assert set(seen) == {("hierarchical", levels)}


def test_collectives_match_numpy_with_the_net_channel_forced_under_a_declared_topology():
    """UCCL_TRANSPORT=net: ranks of one declared host talk over the net channel too, so the
    channels make every rank its own host; the declared leaves still group them."""
    spec = "0-1=h0/l0;2-3=h1/l1"
    seen = run_ranks(_all_collectives, 4, args=(1 << 20, ["int8", "bfloat16", "float64"]), timeout=240,
                     env={"UCCL_TOPOLOGY": spec, "UCCL_ALGO": "hierarchical", "UCCL_TRANSPORT": "net"})
    assert set(seen) == {("hierarchical", ((0, 1, 2, 3), (0, 0, 1, 1)))}


@pytest.mark.long
@pytest.mark.timeout(900)
def test_collectives_match_numpy_on_two_leaves_of_two_ranked_hosts():
    """8 ranks: about 5 minutes on a loaded 2-core machine."""
    seen = run_ranks(_all_collectives, world_of(LEAVES_2), args=(1 << 20,),
                     env={"UCCL_TOPOLOGY": LEAVES_2, "UCCL_ALGO": "hierarchical"}, timeout=900)
    assert set(seen) == {("hierarchical", ((0, 0, 1, 1, 2, 2, 3, 3), (0, 0, 0, 0, 1, 1, 1, 1)))}


def _small_reduces(ctx):
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    got = []
    for n, root in [(1, 7), (1, 0), (2, 5), (3, 7)]:
        out = np.zeros(n, np.int8)
        comm.reduce(np.full(n, ctx.rank + 1, np.int8), out, root=root)
        got.append(out.tolist() if ctx.rank == root else None)
    comm.barrier()
    return got


def test_reduces_of_fewer_elements_than_ranks_per_group_on_two_leaves_of_two_ranked_hosts():
    """A count that no level divides keeps its whole size at every level: the working
    memory must hold that (a 1-element reduce once overran it)."""
    got = run_ranks(_small_reduces, 8, env={"UCCL_TOPOLOGY": LEAVES_2, "UCCL_ALGO": "hierarchical"}, timeout=120)
    assert [got[root][i] for i, root in enumerate([7, 0, 5, 7])] == [[36], [36], [36] * 2, [36] * 3]


def _leaf_bytes(ctx, n):
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    sent = _bytes_written(comm, n)
    comm.barrier()
    return sent


def test_hierarchical_all_reduce_crosses_leaves_once_along_rails():
    """One rank per host, two hosts per leaf: across the leaves a rank sends only its half
    of the vector through a two-rank ring: N/2 bytes, to its rail peer in the other leaf."""
    n = 1 << 18
    sent = run_ranks(_leaf_bytes, 4, args=(n,), env={"UCCL_TOPOLOGY": LEAVES, "UCCL_ALGO": "hierarchical"},
                     timeout=60)
    for r, by_peer in enumerate(sent):
        across = {p: b for p, b in enumerate(by_peer) if p // 2 != r // 2 and b}
        assert across == {RAIL[r]: n * 4 // 2}, (r, by_peer)


def _pipelined_all_reduce(ctx, n):
    """all_reduce of n elements per dtype and op, out of place and in place, against numpy."""
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    for dtype, ops in (("float32", ("sum", "avg", "max")), ("bfloat16", ("sum",))):
        for op in ops:
            _check_all_reduce(comm, dtype, op, n, ctx.world_size)
    comm.barrier()
    return comm.algorithm("all_reduce", n * 4)[0]


# The hierarchical all_reduce cuts a vector into up to 8 pieces, one per 256 KiB that the
# top rail carries (allreduce_hierarchical.cc): these sizes give 8 pieces through one
# level (4 MiB, 2 ranks per leaf) and 2 through two nested levels (2 MiB, 2 x 2 ranks),
# with odd lengths so that pieces and blocks differ in size.
@pytest.mark.parametrize("spec, n", [(LEAVES, (1 << 20) + 13), (LEAVES_2, (1 << 19) + 5)])
def test_pipelined_hierarchical_all_reduce_matches_numpy(spec, n):
    algos = run_ranks(_pipelined_all_reduce, world_of(spec), args=(n,),
                      env={"UCCL_TOPOLOGY": spec, "UCCL_ALGO": "hierarchical"}, timeout=300)
    assert set(algos) == {"hierarchical"}


def test_a_dead_rank_fails_a_pipelined_all_reduce_on_every_rank():
    """Rank 1 exits before a 4 MiB all_reduce (8 pieces here). Every lane of every survivor
    stops: each raises naming the dead rank, long before the timeout, whichever lane (its
    leaf's or its rail's) met the death first."""
    from tests.collectives.test_mismatch import dead_peer

    results = run_ranks(dead_peer, 4, may_die=(1,), timeout=120,
                        env={"UCCL_TOPOLOGY": LEAVES, "UCCL_ALGO": "hierarchical", "UCCL_TIMEOUT": "30"})
    for rank in (0, 2, 3):
        msg, elapsed = results[rank]
        assert "all_reduce" in msg and "rank 1" in msg, (rank, msg)
        assert elapsed < 25, (rank, msg, elapsed)
