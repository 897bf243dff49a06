"""uccl-fabric: the emulated leaf-spine fabric comes up and goes away cleanly, its routes
are ECMP on L4 hashes, its rate limits and loss are in force (measured with real
traffic), a torch program launched onto it computes a correct all_to_all over uccl's net
channel, and nothing is left behind when a run fails or is killed."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from uccl.fabric import emulator as fabmod
from uccl.fabric import Fabric, FabricError, FabricSpec

pytestmark = pytest.mark.netns
TRAFFIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fabric_traffic.py")

OK, WHY = fabmod.available()
needs_netns = pytest.mark.skipif(not OK, reason=f"cannot build a fabric here: {WHY}")


def netns_names() -> set:
    """Fabric namespaces on this machine (other tests' namespaces come and go meanwhile)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip() and fabmod.NS_RE.match(line.split()[0])}


def assert_gone(name: str) -> None:
    left = [n for n in netns_names() if n.startswith(name + "-")]
    assert not left, f"left behind: {left}"
    assert not os.path.exists(Fabric.state_path(name))


@pytest.fixture
def make_fabric():
    """Builds fabrics for a test and checks afterwards, pass or fail, that none is left."""
    made = []

    def build(**kw):
        fab = Fabric(FabricSpec(**kw)).up()
        made.append(fab)
        return fab

    yield build
    for fab in made:
        fab.down()
        assert_gone(fab.name)


def traffic(fab, host, *args):
    return fab.popen(host, [sys.executable, TRAFFIC, *map(str, args)], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)


def first_json(proc, timeout=30):
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.poll() is not None else "no output"
    return json.loads(line)


# ---- input and environment checks (no root needed) ------------------------------------

def test_bad_specs_give_clear_errors():
    with pytest.raises(FabricError, match="not a rate"):
        FabricSpec(rate="fast")
    with pytest.raises(FabricError, match="one per spine"):
        FabricSpec(spines=2, rate="100mbit/50mbit/10mbit")
    with pytest.raises(FabricError, match="hosts >= leaves"):
        FabricSpec(hosts=1, leaves=2)
    with pytest.raises(FabricError, match="loss"):
        FabricSpec(loss=150)
    with pytest.raises(FabricError, match="bogus="):
        FabricSpec.parse("hosts=4,bogus=1")
    spec = FabricSpec.parse("hosts=6,leaves=3,spines=2,rate=100mbit/50mbit,loss=1")
    assert (spec.hosts, spec.leaves, spec.uplink_rates(), spec.loss) == (6, 3, [100e6, 50e6], 1.0)
    assert [spec.leaf_of(h) for h in range(6)] == [0, 0, 1, 1, 2, 2]


def test_not_root_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(FabricError, match="needs root"):
        Fabric(FabricSpec()).up()
    res = subprocess.run([sys.executable, "-c", "import os; os.geteuid = lambda: 1000\n"
                          "from uccl.fabric.cli import main; main(['up', '--detach'])"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and res.stderr.strip().splitlines() == [
        "uccl-fabric: error: uccl-fabric needs root (CAP_NET_ADMIN) to create network namespaces; "
        "run it with sudo"], res.stderr


# ---- the fabric itself -------------------------------------------------------------------

@needs_netns
def test_up_and_down_clean():
    with Fabric(FabricSpec(hosts=4, leaves=2, spines=2)) as fab:
        names = set(fab.namespaces)
        assert len(names) == 8 and names <= netns_names()
        assert os.path.exists(Fabric.state_path(fab.name))
        assert fab.exec("h3", ["ip", "-br", "addr", "show", "eth0"]).stdout.split()[2] == f"{fab.addr(3)}/31"
    assert_gone(fab.name)


@needs_netns
def test_one_leaf_fabric_connects_its_hosts(make_fabric):
    fab = make_fabric(hosts=2, leaves=1, spines=2, rate=None)
    sink = traffic(fab, 1, "udp-sink", fab.addr(1), 9000, 1.0)
    assert first_json(sink)["listening"]
    assert first_json(traffic(fab, 0, "udp-source", fab.addr(1), 9000, 100, 1))["sent"] == 100
    assert first_json(sink)["received"] == 100


@needs_netns
def test_routes_are_ecmp_and_hash_on_ports(make_fabric):
    fab = make_fabric(hosts=4, leaves=2, spines=2, rate=None)
    for ns in fab.routers:
        assert fab.ns(ns, "sysctl", "-n", "net.ipv4.fib_multipath_hash_policy").stdout.strip() == "1"
    route = fab.exec("l0", ["ip", "route", "show", "10.0.1.0/24"]).stdout
    assert route.count("nexthop via") == 2 and "dev s0" in route and "dev s1" in route, route
    # 64 UDP flows (64 source ports) from leaf 0 to leaf 1 land on both spines
    sink = traffic(fab, 2, "udp-sink", fab.addr(2), 9000, 1.0)
    assert first_json(sink)["listening"]
    before = fab.uplink_tx_bytes()
    src = traffic(fab, 0, "udp-source", fab.addr(2), 9000, 3200, 64)
    assert first_json(src)["sent"] == 3200
    assert first_json(sink)["received"] == 3200
    after = fab.uplink_tx_bytes()
    up = [after[f"l0>s{s}"] - before[f"l0>s{s}"] for s in range(2)]
    assert sum(up) >= 3200 * 1000 and min(up) > 0.25 * sum(up), f"ECMP did not spread: {up}"
    # one flow (one 5-tuple) stays on one spine
    before = fab.uplink_tx_bytes()
    sink = traffic(fab, 2, "udp-sink", fab.addr(2), 9001, 1.0)
    first_json(sink)
    first_json(traffic(fab, 0, "udp-source", fab.addr(2), 9001, 500, 1))
    assert first_json(sink)["received"] == 500
    after = fab.uplink_tx_bytes()
    up = sorted(after[f"l0>s{s}"] - before[f"l0>s{s}"] for s in range(2))
    assert up[0] < 0.02 * up[1], f"one flow was split: {up}"


@needs_netns
def test_rate_limit_is_in_force(make_fabric):
    """One TCP flow crosses one uplink: it gets that uplink's rate (tbf counts frames;
    TCP payload is ~95% of a frame), not the GB/s an unlimited veth gives."""
    fab = make_fabric(hosts=2, leaves=2, spines=2, rate="20mbit")
    sink = traffic(fab, 1, "tcp-sink", fab.addr(1), 5201, 3.0)
    assert first_json(sink)["listening"]
    src = traffic(fab, 0, "tcp-source", fab.addr(1), 5201, 3.5)
    rate = first_json(sink)["bytes_per_s"] * 8
    src.wait(timeout=30)
    assert 0.80 * 20e6 <= rate <= 1.02 * 20e6, f"measured {rate / 1e6:.1f} Mbit/s through a 20 Mbit/s uplink"
    st = fab.status()
    assert {l["link"] for l in st["links"] if l["kind"] == "uplink"} == {"l0-s0", "l0-s1", "l1-s0", "l1-s1"}
    assert all(l["rate_bps"] == 20e6 for l in st["links"] if l["kind"] == "uplink")


@needs_netns
def test_loss_is_in_force(make_fabric):
    """5% loss: of 4000 datagrams about 200 vanish (binomial: 3.5%..6.5% is > 4 sigma),
    and the nft counter saw exactly the missing ones."""
    fab = make_fabric(hosts=4, leaves=2, spines=2, rate=None, loss=5)
    sink = traffic(fab, 3, "udp-sink", fab.addr(3), 9000, 1.0)
    first_json(sink)
    first_json(traffic(fab, 0, "udp-source", fab.addr(3), 9000, 4000, 16))
    got = first_json(sink)["received"]
    assert 0.035 <= 1 - got / 4000 <= 0.065, f"{4000 - got} of 4000 lost"
    assert sum(fab.loss_drops().values()) == 4000 - got
    fab.clear_loss()
    sink = traffic(fab, 3, "udp-sink", fab.addr(3), 9001, 1.0)
    first_json(sink)
    first_json(traffic(fab, 0, "udp-source", fab.addr(3), 9001, 1000, 16))
    assert first_json(sink)["received"] == 1000


# ---- running torch.distributed programs on it -------------------------------------------

ALL_TO_ALL = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    dist.init_process_group("uccl")
    r, w = dist.get_rank(), dist.get_world_size()
    assert os.environ["UCCL_ADDR"] == os.environ["FABRIC_ADDRS"].split(",")[r]
    n = 3 * w + 1                               # uneven: rank r sends r+1+j elements to rank j
    splits_in = [r + 1 + j for j in range(w)]
    splits_out = [s + 1 + r for s in range(w)]
    inp = torch.cat([torch.arange(k, dtype=torch.float64) + 1000 * r + 100 * j for j, k in enumerate(splits_in)])
    out = torch.empty(sum(splits_out), dtype=torch.float64)
    dist.all_to_all_single(out, inp, splits_out, splits_in)
    ref = torch.cat([torch.arange(k, dtype=torch.float64) + 1000 * s + 100 * r for s, k in enumerate(splits_out)])
    assert torch.equal(out, ref), (out, ref)
    big = torch.arange(w * (1 << 18), dtype=torch.float32) + r * 1e6
    got = torch.empty_like(big)
    dist.all_to_all_single(got, big)
    per = 1 << 18
    ref = torch.cat([torch.arange(r * per, (r + 1) * per, dtype=torch.float32) + s * 1e6 for s in range(w)])
    assert torch.equal(got, ref)
    ep = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))._pg.communicator.endpoint
    kinds = [ep._native.channel_kind(p) for p in range(w) if p != r]
    print(f"rank {r} ok channels={kinds}", flush=True)
    if os.environ.get("FAIL_RANK") == str(r):
        sys.exit(3)
    dist.destroy_process_group()
""")


@needs_netns
def test_all_to_all_across_the_fabric_is_correct(make_fabric, tmp_path):
    fab = make_fabric(hosts=4, leaves=2, spines=2, rate="100mbit")
    script = tmp_path / "a2a.py"
    script.write_text(ALL_TO_ALL)
    env = {**os.environ, "FABRIC_ADDRS": ",".join(fab.addr(h) for h in range(4))}
    env.pop("UCCL_TRANSPORT", None)  # namespaces alone must put ranks on the net channel
    res = subprocess.run([sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name, str(script)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    for r in range(4):
        assert f"rank {r} ok channels=['net', 'net', 'net']" in res.stdout, res.stdout + res.stderr
    crossed = sum(fab.uplink_tx_bytes().values())
    assert crossed > 4 * (1 << 20), "the all_to_all did not cross the spines"


@needs_netns
def test_failing_rank_leaves_nothing_behind(tmp_path):
    script = tmp_path / "a2a.py"
    script.write_text(ALL_TO_ALL)
    env = {**os.environ, "FAIL_RANK": "2", "FABRIC_ADDRS": ",".join(f"10.0.{h // 2}.{2 * (h % 2) + 1}"
                                                                   for h in range(4))}
    before = netns_names()
    res = subprocess.run([sys.executable, "-m", "uccl.launch.run", "--fabric", "hosts=4,leaves=2,spines=2",
                          str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert netns_names() == before
    assert not subprocess.run(["pgrep", "-f", str(script)], capture_output=True).stdout


@needs_netns
def test_ctrl_c_and_kill_leave_nothing_behind():
    cli = [sys.executable, "-m", "uccl.fabric"]
    before = netns_names()
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(cli + ["up", "--hosts", "2", "--spines", "1"], stdout=subprocess.PIPE, text=True)
        name = proc.stdout.readline().split()[1].rstrip(":")
        while "Ctrl-C" not in proc.stdout.readline():
            pass
        assert any(n.startswith(name) for n in netns_names())
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        assert_gone(name)
    # a SIGKILLed holder cannot clean up: `down --all` removes what it left
    proc = subprocess.Popen(cli + ["up", "--hosts", "2", "--spines", "1"], stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().split()[1].rstrip(":")
    while "Ctrl-C" not in proc.stdout.readline():
        pass
    proc.kill()
    proc.wait()
    assert any(n.startswith(name) for n in netns_names())
    subprocess.run(cli + ["down", "--all"], check=True, capture_output=True)
    assert_gone(name)
    assert netns_names() <= before


@needs_netns
def test_cli_detach_exec_status_down():
    cli = [sys.executable, "-m", "uccl.fabric"]
    name = subprocess.run(cli + ["up", "--hosts", "4", "--rate", "100mbit", "--loss", "1", "--detach"],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        out = subprocess.run(cli + ["exec", "--name", name, "h2", "--", "ip", "-br", "addr", "show", "eth0"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "10.0.1.1/31" in out.stdout
        st = json.loads(subprocess.run(cli + ["status", "--name", name, "--json"], capture_output=True, text=True,
                                       check=True).stdout)
        assert len(st["links"]) == 8 and st["spec"]["loss"] == 1.0 and "loss_drops" in st
        bad = subprocess.run(cli + ["exec", "--name", name, "h7", "--", "true"], capture_output=True, text=True)
        assert bad.returncode != 0 and "not in this fabric" in bad.stderr
    finally:
        subprocess.run(cli + ["down", "--name", name], capture_output=True)
    assert_gone(name)
