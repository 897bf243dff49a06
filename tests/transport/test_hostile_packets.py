"""Hostile packets, end to end: while two ranks run collectives and writes over the net
channel (UCCL_TRANSPORT=net, loopback), the pytest process attacks their UDP ports:

 (a) random datagrams, and well-formed headers with a wrong job secret (or another
     wire version, rank or instance), to every port the ranks hold;
 (b) real packets of the job, captured on lo, replayed late and verbatim;
 (c) captured packets with header fields altered (offsets past a region, huge totals,
     foreign keys, wrong ranks), keeping the valid auth tag they were captured with.

(a) and (b) change no result (numpy references) and no byte the job did not write
itself (guards around the write window, a write-granted canary region nobody writes, a
read-only region), and each packet is counted by its drop reason. (c) crashes and hangs
nothing and writes nowhere outside a registered region; operations after it work or fail
with clear errors. The attacker and the ranks meet through files in a per-run folder
(tests/transport/_hostile.py). Needs root (AF_PACKET capture on lo)."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import tempfile
import threading
import time

import numpy as np
import pytest

from uccl.testing import run_ranks

from tests.transport import _hostile as H

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="capturing packets on lo needs root")

LOOP_LIMIT_S = 40.0  # the ranks' traffic ends by itself after this, attacker or not
SIZES = [1, 1000, 70_001]  # all_reduce elements (float64)


# ---- the ranks ------------------------------------------------------------------------

def _reference(n: int, it: int, world: int) -> np.ndarray:
    return sum(_contribution(n, it, r) for r in range(world))


def _contribution(n: int, it: int, rank: int) -> np.ndarray:
    return (np.arange(n) % 1009 + 1000.0 * rank + it).astype(np.float64)


def _drops(eps, peer: int) -> tuple:
    """(endpoint-level drops, the peer connection's drops), summed over `eps`."""
    total, per_peer = {}, {}
    for ep in eps:
        st = ep.stats()
        for out, d in ((total, st["drops"]), (per_peer, st["peers"][peer]["net"]["drops"])):
            for k, n in d.items():
                out[k] = out.get(k, 0) + n
    return total, per_peer


def _wait_counted(eps, peer: int, want: dict, want_per_peer: dict, timeout: float = 20.0) -> None:
    """Progresses the endpoints until the drops the attacker expects are counted (they
    may still sit in socket buffers), at most `timeout` s; the caller checks the counts."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        total, per_peer = _drops(eps, peer)
        if all(total.get(k, 0) >= n for k, n in want.items()) and \
                all(per_peer.get(k, 0) >= n for k, n in want_per_peer.items()):
            return
        for ep in eps:
            ep.poll()
        time.sleep(0.02)


def traffic(ctx, folder: str, phase: str):
    """All_reduces checked against numpy (one endpoint, the communicator's) and window
    writes checked byte for byte (another endpoint: `ep`), until the attacker says stop;
    then the attacker's drops are awaited and every region checked."""
    from uccl.collectives import Communicator
    from uccl.transport import Endpoint

    comm = Communicator(ctx.bootstrap)
    ep, rank, peer = Endpoint(ctx.bootstrap), ctx.rank, 1 - ctx.rank
    assert ep.channel(peer) == "net" and comm.endpoint.channel(peer) == "net"
    regions = H.Regions(ep)
    keys = [json.loads(b) for b in ctx.bootstrap.allgather(json.dumps(regions.keys()).encode())]
    ip, ports, nonce = H.net_address(ep)
    coll_ports = H.net_address(comm.endpoint)[1]
    coll_nonce = H.net_address(comm.endpoint)[2]
    H.publish(folder, f"rank{rank}.json", {"pid": os.getpid(), "ip": ip, "ports": ports + coll_ports,
                                          "raw_ports": ports, "nonce": nonce, "keys": keys[rank],
                                          "ports_of_nonce": {str(nonce): ports, str(coll_nonce): coll_ports}})
    out = ep.register(np.zeros(H.INBOX, np.uint8), "")
    bad, it, start = [], 0, time.monotonic()
    while True:
        flag = np.array([float(rank == 0 and H.present(folder, "stop")),
                         float(time.monotonic() - start > LOOP_LIMIT_S)])
        comm.all_reduce(flag, op="max")
        if flag.any():
            break
        n = SIZES[it % len(SIZES)]
        x = _contribution(n, it, rank)
        comm.all_reduce(x)
        if not np.array_equal(x, _reference(n, it, ctx.world_size)):
            bad.append(f"iteration {it}: all_reduce of {n} differs from numpy")
        out.buffer[:] = H.pattern(rank, it)
        ep.write(peer, out, keys[peer]["inbox"], imm=it).wait(30)
        c = ep.wait_remote_write(peer, timeout=30)
        if c.imm != it or not np.array_equal(regions.inbox.buffer, H.pattern(peer, it)):
            bad.append(f"iteration {it}: the peer's write (imm {c.imm}) differs")
        if rank == 0:
            H.publish(folder, "iter", it)
        it += 1
    timed_out = bool(flag[1])
    if phase == "c":
        return _after_forgery(ctx, folder, comm, ep, regions, keys, it, bad, timed_out)
    x = _contribution(5, it, rank)  # one more collective after the attack: still right
    comm.all_reduce(x)
    if not np.array_equal(x, _reference(5, it, ctx.world_size)):
        bad.append("the all_reduce after the attack differs from numpy")
    ctx.bootstrap.barrier()  # no operation is under way while the drops are awaited
    expect = H.read(folder, "expect.json", 30) if not timed_out else {"drops": {}, "peer_drops": {}}
    eps = [comm.endpoint, ep]
    _wait_counted(eps, peer, expect["drops"].get(str(rank), {}), expect["peer_drops"].get(str(rank), {}))
    ctx.bootstrap.barrier()
    drops, peer_drops = _drops(eps, peer)
    return {"bad": bad + regions.untouched(), "iterations": it, "timed_out": timed_out, "drops": drops,
            "peer_drops": peer_drops, "refused": ep.refused_by_us(peer) + comm.endpoint.refused_by_us(peer)}


# ---- the attacker (a thread of the pytest process) ------------------------------------

class Attacker:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.error: BaseException | None = None
        self.ranks: list = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def start(self, body) -> threading.Thread:
        def run():
            try:
                body(self)
            except BaseException as exc:  # reported by the test, after the ranks are done
                self.error = exc
            finally:
                H.publish(self.folder, "stop", True)  # the ranks never wait on a dead attacker
                self.udp.close()

        t = threading.Thread(target=run, name="hostile-packets", daemon=True)
        t.start()
        return t

    def learn_ranks(self) -> None:
        self.ranks = [H.read(self.folder, f"rank{r}.json") for r in range(2)]
        for r in self.ranks:  # every UDP port the process holds, published or not
            r["ports"] = sorted(set(r["ports"]) | set(H.udp_sockets(r["pid"])))

    def kernel_drops(self, r: int) -> int:
        return sum(H.udp_sockets(self.ranks[r]["pid"]).values())

    def iteration(self) -> int:
        return H.read(self.folder, "iter", 30) if H.present(self.folder, "iter") else -1

    def capture(self, count: int, want=lambda c: True, deadline_s: float = 20.0) -> list:
        cap = H.LoopbackCapture(p for r in self.ranks for p in r["ports"])
        try:
            return cap.take(want, count, deadline_s)
        finally:
            cap.close()

    def target_of(self, port: int) -> int:
        return next(i for i, r in enumerate(self.ranks) if port in r["ports"])

    def send_paced(self, items) -> None:
        """(bytes, (ip, port)) pairs, in bursts: a blast would only fill socket buffers."""
        for i, (pkt, addr) in enumerate(items):
            self.udp.sendto(pkt, addr)
            if i % 32 == 31:
                time.sleep(0.002)

    def expect(self, drops: dict, peer_drops: dict) -> None:
        H.publish(self.folder, "expect.json", {"drops": drops, "peer_drops": peer_drops})


def _run(phase: str, body, env_extra: dict | None = None):
    """Runs the ranks of `phase` with `body` attacking them; returns (results, attacker)."""
    folder = tempfile.mkdtemp(prefix=f"uccl-hostile-{phase}-{os.getpid()}-")
    try:
        attacker = Attacker(folder)
        thread = attacker.start(body)
        env = {"UCCL_TRANSPORT": "net", "UCCL_TIMEOUT": "30", **(env_extra or {})}
        results = run_ranks(traffic, 2, (folder, phase), env=env, timeout=120)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the attacker did not finish"
        if attacker.error:
            raise attacker.error
        return results, attacker
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_clean(results) -> None:
    for rank, res in enumerate(results):
        assert not res["timed_out"], f"rank {rank}: the attacker never said stop"
        assert not res["bad"], f"rank {rank}: {res['bad']}"
        assert res["drops"].get(H.OUT_OF_BOUNDS, 0) == 0 and res["refused"] == 0, res


# ---- (a) strangers --------------------------------------------------------------------

def _random_datagram(rng: random.Random) -> bytes:
    p = bytearray(rng.randbytes(rng.choice([0, 1, 7, 19, 20, 63, 64, 200, 1400])))
    if p[:2] == b"\x55\x43":  # never the magic by chance: each one is "malformed"
        p[0] ^= 0xFF
    return bytes(p)


def strangers(att: Attacker) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    att.learn_ranks()
    # Real headers of each connection, so that only the field under test is wrong.
    heads = {}  # data and ack to each endpoint (by its nonce): they go to that endpoint's ports

    def new_kind(c) -> bool:
        h = H.Header.of(c.payload)
        if h is None or (h.dst, h.dst_nonce, h.type) in heads:
            return False
        heads[(h.dst, h.dst_nonce, h.type)] = (h, c.payload)
        return True

    att.capture(8, new_kind)  # 2 ranks x 2 endpoints x (data, ack)
    plan: dict = {0: {}, 1: {}}
    items = []
    it_before = att.iteration()
    kd_before = [att.kernel_drops(r) for r in range(2)]
    for target in range(2):
        r = att.ranks[target]
        mine = [v for k, v in heads.items() if k[0] == target]
        assert len(mine) == 4, f"not every kind of packet to rank {target} was captured: {sorted(heads)}"
        for _ in range(40):
            p = _random_datagram(rng)
            for port in r["ports"]:
                items.append((p, (r["ip"], port)))
                plan[target][H.MALFORMED] = plan[target].get(H.MALFORMED, 0) + 1
        for h, payload in mine:
            pkts = []
            true = h.auth
            for _ in range(30):
                wrong = true ^ rng.randrange(1, 2**32)
                pkts.append((H.BAD_AUTH, H.with_common(payload, auth=wrong)))
                pkts.append((H.BAD_AUTH, H.data_packet(H.Header(**{**h.__dict__, "auth": wrong}),
                                                       rng.randrange(2**32), rng.randrange(2**32), H.OP_WRITE,
                                                       total=16, a=rng.randrange(2**64), payload=bytes(16))))
            for _ in range(8):
                pkts.append((H.BAD_VERSION, H.with_common(payload, version=rng.choice([0, 1, 2, 4, 255]))))
                pkts.append((H.MISDIRECTED, H.with_common(payload, dst=1 - target)))
                pkts.append((H.MISDIRECTED, H.with_common(payload, dst_nonce=h.dst_nonce ^ 1)))
                pkts.append((H.UNKNOWN_CONN, H.with_common(payload, src=rng.randrange(2, 60000))))
                pkts.append((H.STALE_PEER, H.with_common(payload, src_nonce=h.src_nonce ^ 1)))
            for reason, p in pkts:
                for port in r["ports_of_nonce"][str(h.dst_nonce)]:
                    items.append((p, (r["ip"], port)))
                    plan[target][reason] = plan[target].get(reason, 0) + 1
    rng.shuffle(items)
    att.send_paced(items)
    kd = [att.kernel_drops(r) - kd_before[r] for r in range(2)]
    att.plan, att.kernel_dropped, att.iterations_during = plan, kd, (it_before, att.iteration())
    att.expect({str(t): {k: n - kd[t] for k, n in plan[t].items()} for t in range(2)}, {})


def test_strangers_change_nothing_and_are_counted_by_reason():
    results, att = _run("a", strangers)
    _check_clean(results)
    before, after = att.iterations_during
    assert after > before, "the attack did not overlap the traffic"
    for t in range(2):
        drops = results[t]["drops"]
        for reason, n in att.plan[t].items():
            # every packet is counted, but for what the kernel dropped before uccl saw it
            assert n - att.kernel_dropped[t] <= drops.get(reason, 0) <= n, (t, reason, n, att.kernel_dropped, drops)


# ---- (b) late replays -------------------------------------------------------------------

def replays(att: Attacker) -> None:
    att.learn_ranks()
    frames = att.capture(1500, lambda c: H.Header.of(c.payload) is not None)
    it_captured = att.iteration()
    end = time.monotonic() + 30
    while att.iteration() < it_captured + 2 and time.monotonic() < end:  # late: the job has moved on
        time.sleep(0.01)
    assert att.iteration() >= it_captured + 2, "the traffic did not move on after the capture"
    counts: dict = {0: {H.DATA: 0, H.ACK: 0}, 1: {H.DATA: 0, H.ACK: 0}}
    kd_before = [att.kernel_drops(r) for r in range(2)]
    inj = H.FrameInjector()
    try:
        for c in frames:
            for p in inj.send(c.frame):
                counts[att.target_of(c.dst_port)][H.Header.of(p).type] += 1
            time.sleep(0.001)
    finally:
        inj.close()
    kd = [att.kernel_drops(r) - kd_before[r] for r in range(2)]
    att.counts, att.kernel_dropped, att.iterations_during = counts, kd, (it_captured, att.iteration())
    att.expect({}, {str(t): {H.DUPLICATE: counts[t][H.DATA] - kd[t], H.STALE_ACK: counts[t][H.ACK] - kd[t]}
                    for t in range(2)})


def test_late_replays_change_nothing_and_are_counted_as_duplicates():
    results, att = _run("b", replays)
    _check_clean(results)
    assert sum(c[H.DATA] for c in att.counts.values()) > 100, att.counts
    for t in range(2):
        net = results[t]["peer_drops"]
        # The replayed data: each a duplicate (a real retransmission may add some).
        assert net.get(H.DUPLICATE, 0) >= att.counts[t][H.DATA] - att.kernel_dropped[t], (t, att.counts, net)
        # The replayed acks: each older than what the peer has acknowledged since.
        assert net.get(H.STALE_ACK, 0) >= att.counts[t][H.ACK] - att.kernel_dropped[t], (t, att.counts, net)
        for reason in (H.MALFORMED, H.BAD_AUTH, H.OUT_OF_BOUNDS):
            assert reason not in results[t]["drops"] and reason not in net, results[t]


# ---- (c) altered packets with a valid tag ---------------------------------------------

def _outcome(fn) -> str:
    """'ok', or the uccl error an operation raised (anything else propagates: a test failure)."""
    from uccl.errors import UcclError

    try:
        fn()
        return "ok"
    except UcclError as exc:
        return f"{type(exc).__name__}: {exc}"


def _after_forgery(ctx, folder, comm, ep, regions, keys, it, bad, timed_out):
    """The ranks' side of (c): quiet while the attacker forges on `ep`'s connections,
    then the regions are checked and later operations must work or fail cleanly."""
    from uccl.transport import Endpoint

    rank, peer = ctx.rank, 1 - ctx.rank
    ctx.bootstrap.barrier()
    if rank == 0:
        H.publish(folder, "quiet", it)
    expect = H.read(folder, "forged", 60)
    _wait_counted([ep], peer, expect["total"][str(rank)], expect["peer"][str(rank)])
    _, peer_drops = _drops([ep], peer)
    total, _ = _drops([comm.endpoint, ep], peer)
    bad += regions.untouched()
    forged_landed = bytes(regions.inbox.buffer[-64:]) == b"\xee" * 64  # inside the window: allowed
    ctx.bootstrap.barrier()
    # Later operations on the forged connection: they work or fail with a uccl error, in bounded time.
    out = ep.register(np.full(64, 7, np.uint8), "")
    later = [_outcome(lambda: ep.write(peer, out, keys[peer]["inbox"], imm=1).wait(10)),
             _outcome(lambda: ep.wait_remote_write(peer, timeout=10))]
    ctx.bootstrap.barrier()
    # Another endpoint's connection (the communicator's) is untouched, and a new one works.
    x = _contribution(5, it, rank)
    comm.all_reduce(x)
    if not np.array_equal(x, _reference(5, it, ctx.world_size)):
        bad.append("the all_reduce after the forgery differs from numpy")
    fresh = Endpoint(ctx.bootstrap)
    inbox = fresh.register(np.zeros(64, np.uint8), "w")
    key = [int(k) for k in ctx.bootstrap.allgather(str(inbox.key).encode())][peer]
    fresh.write(peer, fresh.register(np.full(64, rank + 1, np.uint8), ""), key, imm=2).wait(30)
    fresh.wait_remote_write(peer, timeout=30)
    if not (inbox.buffer == peer + 1).all():
        bad.append("a new endpoint's write after the forgery differs")
    bad += regions.untouched()
    ctx.bootstrap.barrier()
    return {"bad": bad, "iterations": it, "timed_out": timed_out, "drops": total, "peer_drops": peer_drops,
            "refused": ep.refused_by_us(peer), "later": later, "forged_landed": forged_landed}


def _forgeries(h: H.Header, seq: int, msg: int, own: dict, foreign: dict) -> tuple:
    """Data packets under a captured header `h` (its tag valid), with sequence numbers and
    operation ids from `seq` and `msg` on, all fresh to the receiver: (packets, how many
    must be refused as writes outside a registered region). The receiver checks and
    places each on arrival; what it answers in order (reads) waits behind the gap."""
    big = bytes([0xEE]) * 64
    ops = [  # (op, fields); every one reaches the receiver's checks
        (H.OP_WRITE, dict(a=own["inbox"], b=H.INBOX, total=64, payload=big)),            # just past the end
        (H.OP_WRITE, dict(a=own["inbox"], b=H.INBOX - 32, total=64, payload=big)),       # straddles the end
        (H.OP_WRITE, dict(a=own["canary"], b=H.CANARY + 4096, total=64, payload=big)),
        (H.OP_WRITE, dict(a=own["readonly"], b=0, total=64, payload=big)),               # no write access
        (H.OP_WRITE, dict(a=foreign["inbox"], b=0, total=64, payload=big)),              # the other rank's key
        (H.OP_WRITE, dict(a=0x5EED_0000_0000_0001, b=0, total=64, payload=big)),         # nobody's key
        (H.OP_WRITE, dict(a=own["inbox"], b=2**64 - 32, total=64, payload=big)),         # offset wraps around
        (H.OP_READ_REQ, dict(a=own["readonly"], b=H.READONLY, total=64)),                # read past the end
        (H.OP_READ_REQ, dict(a=own["inbox"], b=0, total=2**63)),                         # no read access, huge
        (H.OP_READ_RESP, dict(a=msg + 12345, total=64, payload=big)),                    # nobody asked
        (H.OP_ERROR, dict(a=2**40, b=3, total=0)),                                       # refuses nothing known
        (H.OP_WRITE, dict(a=own["inbox"], b=H.INBOX - 64, total=64, payload=big)),       # inside: it lands
        (H.OP_SEND, dict(a=1, total=2**62, flags=0, payload=bytes(1024))),               # huge message
        (H.OP_WRITE, dict(a=own["inbox"], b=0, total=2**63, index=5, flags=0, payload=bytes(1024))),  # huge total
    ]
    pkts = [H.data_packet(h, seq + j, msg + j, op, **f) for j, (op, f) in enumerate(ops)]
    refused_writes = 8  # the first seven writes and the huge one
    # Fields the flow's earlier checks catch (no sequence number is used up):
    pkts += [H.data_packet(h, seq + 100, msg + 100, H.OP_WRITE, path=300, a=own["inbox"], total=64, payload=big),
             H.data_packet(h, seq + 10**6, msg + 1, H.OP_WRITE, a=own["inbox"], total=64, payload=big),
             H.data_packet(h, seq + 101, msg + 1, H.OP_WRITE, index=2**31, flags=0, a=own["inbox"], total=2**40,
                           payload=bytes(1024))]
    # Wrong ranks and instances under the captured tag: the tag does not cover a rewrite.
    for fields in (dict(dst=h.src), dict(src=7), dict(src_nonce=h.src_nonce ^ 1), dict(dst_nonce=h.dst_nonce ^ 1)):
        pkts.append(H.with_common(pkts[0], **fields))
    return pkts, refused_writes


AHEAD = 1000  # forged sequence numbers and operation ids lie this far past the newest captured


def forgery(att: Attacker) -> None:
    att.learn_ranks()
    raw = {p: t for t, r in enumerate(att.ranks) for p in r["raw_ports"]}
    newest: dict = {}   # target -> (seq, msg, header) of the newest data packet to it
    acks: dict = {}     # target -> an ack to it
    count = [0]

    def keep(c) -> bool:
        t = raw.get(c.dst_port)
        h = H.Header.of(c.payload)
        if t is None or h is None or h.magic != H.MAGIC:
            return False
        if h.type == H.DATA and len(c.payload) >= H.DATA_WIRE.size:
            for p in H.segments(c.payload):
                f = H.data_fields(p)
                if t not in newest or f["seq"] > newest[t][0]:
                    newest[t] = (f["seq"], f["msg"], h)
        elif h.type == H.ACK:
            acks[t] = c.payload
        count[0] += 1
        return False

    cap = H.LoopbackCapture(raw)
    try:
        end = time.monotonic() + 30
        while count[0] < 300 and time.monotonic() < end:
            cap.take(keep, 1, 0.2)
        H.publish(att.folder, "stop", True)  # the ranks go quiet; the capture sees their last packets
        while not H.present(att.folder, "quiet") and time.monotonic() < end + 30:
            cap.take(keep, 1, 0.2)
        cap.take(keep, 1, 0.5)
    finally:
        cap.close()
    assert set(newest) == {0, 1} and set(acks) == {0, 1}, (sorted(newest), sorted(acks))
    expect, att.sent = {}, {}
    for t in range(2):
        r = att.ranks[t]
        seq, msg, h = newest[t]
        # Ahead of the connection's next numbers (inside the receive window): what each rank
        # sends back to refuse the forgeries it got takes the next ones of its own connection.
        pkts, refused = _forgeries(h, seq + AHEAD, msg + AHEAD, r["keys"], att.ranks[1 - t]["keys"])
        ack = acks[t]  # its echo path at byte 20, its cumulative ack at byte 24
        pkts += [ack[:24] + (2**60).to_bytes(8, "little") + ack[32:],  # acks what was never sent
                 ack[:20] + (999).to_bytes(2, "little") + ack[22:]]   # names a path that does not exist
        for p in pkts:
            att.udp.sendto(p, (r["ip"], r["raw_ports"][0]))
        att.sent[t] = len(pkts)
        expect[str(t)] = {H.OUT_OF_BOUNDS: refused}
    H.publish(att.folder, "forged", {"peer": expect, "total": {
        str(t): {H.MISDIRECTED: 2, H.UNKNOWN_CONN: 1, H.STALE_PEER: 1} for t in range(2)}})


def test_altered_packets_crash_nothing_and_write_nowhere_else():
    results, att = _run("c", forgery, {"UCCL_TIMEOUT": "15"})
    for rank, res in enumerate(results):
        assert not res["timed_out"], f"rank {rank}: the attacker never said stop"
        assert not res["bad"], f"rank {rank}: {res['bad']}"
        # the forgeries reached the receiver's checks (their tag is valid) and were refused there
        assert res["peer_drops"].get(H.OUT_OF_BOUNDS, 0) >= 8, res
        assert res["refused"] >= 8, res  # the eight writes (reads are answered in order: behind the gap)
        assert res["forged_landed"], "a forged write inside a write-granted window is expected to land"
        for outcome in res["later"]:
            assert outcome == "ok" or (f"rank {rank}" in outcome), outcome
        for reason, n in ((H.MISDIRECTED, 2), (H.UNKNOWN_CONN, 1), (H.STALE_PEER, 1)):  # rewritten ranks
            assert res["drops"].get(reason, 0) >= n, (reason, res["drops"])
