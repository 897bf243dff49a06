"""uccl-fabric: an emulated leaf-spine fabric on one machine (needs root).

    uccl-fabric up --hosts 4 --leaves 2 --spines 2 --rate 100mbit          # until Ctrl-C
    uccl-fabric up --hosts 4 --spines 2 --rate 100mbit --loss 1 --detach   # stays up
    uccl-fabric exec h2 -- ip route                                      # on host 2
    uccl-fabric status [--json]                                          # topology, counters
    uccl-fabric run --hosts 4 --rate 100mbit -- train.py --epochs 1      # up, one rank per host, down
    uccl-fabric down [--all]

`up` without --detach holds the fabric until Ctrl-C or SIGTERM and removes it then;
`down --all` also removes what a killed run left behind. The library: uccl.fabric.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Optional, Sequence

from uccl.fabric.emulator import Fabric, FabricError, FabricSpec, handle_signals, list_fabrics, remove_stale
from uccl.fabric.ranks import command, launch


def add_spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("topology")
    g.add_argument("--spec", help="all of it in one string: hosts=4,leaves=2,spines=2,rate=100mbit,loss=1")
    g.add_argument("--hosts", type=int, help="hosts (default 4)")
    g.add_argument("--leaves", type=int, help="leaf switches (default 2)")
    g.add_argument("--spines", type=int, help="spine switches (default 2)")
    g.add_argument("--rate", help="uplink rate, tc style (100mbit); one per spine for an asymmetric fabric "
                                  "(100mbit,50mbit); 'none' for unlimited (default 100mbit)")
    g.add_argument("--host-rate", help="host link rate (oversubscription); default unlimited")
    g.add_argument("--queue", help="tbf queue limit per link direction (default 64kb)")
    g.add_argument("--loss", type=float, help="percent of packets dropped entering the fabric (nftables numgen)")
    g.add_argument("--mtu", type=int, help="link MTU (default 1500)")
    g.add_argument("--hash-seed", type=int, help="ECMP hash seed (net.ipv4.fib_multipath_hash_seed)")
    g.add_argument("--no-segment", action="store_true", help="keep GSO trains whole on host links")


def spec_from_args(args: argparse.Namespace) -> FabricSpec:
    spec = FabricSpec.parse(args.spec) if args.spec else FabricSpec()
    for key in ("hosts", "leaves", "spines", "host_rate", "queue", "loss", "mtu", "hash_seed"):
        value = getattr(args, key)
        if value is not None:
            setattr(spec, key, value)
    if args.rate is not None:
        spec.rate = None if args.rate.lower() in ("none", "0", "unlimited") else args.rate
    if args.no_segment:
        spec.segment = False
    spec.validate()
    return spec


def print_status(fab: Fabric, as_json: bool) -> None:
    st = fab.status()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    print(f"fabric {st['name']}: {st['describe']}")
    for h in st["hosts"]:
        print(f"  host {h['host']}  {h['addr']:<12} {h['ifname']}  leaf {h['leaf']}  (netns {h['ns']})")
    print(f"  {'link':<8} {'kind':<7} {'rate':>10} {'a->b bytes':>14} {'pkts':>9} {'drops':>7} "
          f"{'b->a bytes':>14} {'pkts':>9} {'drops':>7}")
    for l in st["links"]:
        rate = f"{l['rate_bps'] / 1e6:g}Mbit" if l["rate_bps"] else "-"
        ab, ba = l["a_to_b"], l["b_to_a"]
        print(f"  {l['link']:<8} {l['kind']:<7} {rate:>10} {ab['bytes']:>14} {ab['packets']:>9} {ab['drops']:>7} "
              f"{ba['bytes']:>14} {ba['packets']:>9} {ba['drops']:>7}")
    if st["loss_drops"]:
        print(f"  loss rule drops: {st['loss_drops']}")
    for ns, routes in st["routes"].items():
        print(f"  routes in {ns}:\n    " + routes.replace("\n", "\n    "))


def _hold(fab: Fabric) -> None:
    print(f"fabric {fab.name} up: {fab.spec.describe()}")
    for h in range(fab.spec.hosts):
        print(f"  host {h}: {fab.addr(h)} on {fab.ifname(h)} (uccl-fabric exec h{h} -- CMD)")
    print("Ctrl-C removes it.", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="uccl-fabric", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build a fabric (held until Ctrl-C, or --detach)")
    add_spec_args(up)
    up.add_argument("--detach", action="store_true", help="leave it up; remove it with `uccl-fabric down`")
    ex = sub.add_parser("exec", help="run a command on a host (or router: l0, s1)")
    ex.add_argument("--name", help="which fabric (default: the only one)")
    ex.add_argument("node", help="h0.. (or 0..), l0.., s0..")
    ex.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS")
    st = sub.add_parser("status", help="topology and per-link byte/drop counters")
    st.add_argument("--name")
    st.add_argument("--json", action="store_true")
    dn = sub.add_parser("down", help="remove a fabric")
    dn.add_argument("--name")
    dn.add_argument("--all", action="store_true", help="every fabric, and whatever killed runs left behind")
    rn = sub.add_parser("run", help="up, one rank per host (torchrun's variables), down")
    add_spec_args(rn)
    rn.add_argument("--name", help="use this running fabric instead of building one")
    rn.add_argument("--nproc-per-host", type=int, default=1)
    rn.add_argument("-m", "--module", action="store_true", help="the script is a module (python -m)")
    rn.add_argument("--no-python", action="store_true", help="run the command as is, not with python")
    rn.add_argument("--transport", choices=["auto", "shm", "net"], help="UCCL_TRANSPORT for the ranks")
    rn.add_argument("--paths", type=int, help="UCCL_NUM_PATHS for the ranks")
    rn.add_argument("script")
    rn.add_argument("script_args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        sys.exit(_dispatch(args, ap))
    except FabricError as exc:
        sys.exit(f"uccl-fabric: error: {exc}")


def _dispatch(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    handle_signals()
    if args.cmd == "up":
        fab = Fabric(spec_from_args(args))
        if args.detach:
            fab.up()
            fab.detach()
            print(fab.name)
            return 0
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        with fab:
            _hold(fab)
        return 0
    if args.cmd == "exec":
        cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not cmd:
            ap.error("exec: give a command after --")
        fab = Fabric.attach(args.name)
        return fab.ns(fab.resolve(args.node), *cmd, check=False, capture=False).returncode
    if args.cmd == "status":
        if args.name is None and not list_fabrics():
            print("no fabric is up")
            return 0
        print_status(Fabric.attach(args.name), args.json)
        return 0
    if args.cmd == "down":
        if args.all:
            for name in list_fabrics():
                Fabric.attach(name).down()
            gone = remove_stale()
            print(f"removed every fabric{f' and {len(gone)} stale namespaces' if gone else ''}")
            return 0
        fab = Fabric.attach(args.name)
        fab.down()
        print(f"removed {fab.name}")
        return 0
    if args.cmd == "run":
        script_args = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
        script = args.script
        if script == "--":
            if not script_args:
                ap.error("run: give a script")
            script, script_args = script_args[0], script_args[1:]
        env = {}
        if args.transport:
            env["UCCL_TRANSPORT"] = args.transport
        if args.paths:
            env["UCCL_NUM_PATHS"] = args.paths
        argv = command(script, script_args, module=args.module, no_python=args.no_python)
        if args.name:
            return launch(Fabric.attach(args.name), argv, args.nproc_per_host, env)
        with Fabric(spec_from_args(args)) as fab:
            return launch(fab, argv, args.nproc_per_host, env)
    raise AssertionError(args.cmd)

