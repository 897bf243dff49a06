"""uccl-run: torchrun with uccl's options.

    uccl-run --nproc-per-node 4 train.py --epochs 3
    uccl-run --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 \\
             --nproc-per-node 8 --transport net --paths 32 --cc swift --ifname eth1 train.py

Every torchrun flag works as it does there (--nproc-per-node, --nnodes, --node-rank,
--master-addr, --master-port, --rdzv-backend, --rdzv-endpoint, --max-restarts, ...): the
parser and the launcher are torch.distributed.run's own (torch elastic), uccl adds only
its options, which reach the workers as UCCL_* environment variables (the settings
that uccl/config.py gives a `flag`: --transport, --paths, --cc, --ifname; see --help).

Workers call `torch.distributed.init_process_group(backend="uccl")` (no import of uccl
needed). Under mpirun or srun no launcher is needed at all.

On an emulated fabric (uccl.fabric, needs root), one rank per emulated host (or
--nproc-per-node per host), each with its host's address and interface:

    uccl-run --fabric hosts=4,leaves=2,spines=2,rate=100mbit train.py   # built for this run
    uccl-run --fabric uf12345abc --paths 1 train.py                      # a fabric already up
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from uccl.config import SETTINGS, Setting

# The settings uccl-run takes as options, each declared once in uccl/config.py.
UCCL_OPTIONS = {s.flag: s for s in SETTINGS if s.flag}


def _option_type(setting: Setting):
    """argparse's type for a setting: its parser, so a bad value is refused by uccl-run."""
    def parse(text: str):
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = setting.kind.__name__
    return parse


def get_args_parser() -> argparse.ArgumentParser:
    from torch.distributed.run import get_args_parser as torchrun_parser

    parser = torchrun_parser()
    parser.prog = "uccl-run"
    parser.description = "torchrun (torch.distributed.run) with uccl's options; workers use backend 'uccl'."
    group = parser.add_argument_group("uccl", "passed to every worker as UCCL_* environment variables")
    for flag, setting in UCCL_OPTIONS.items():
        choices = setting.choices if isinstance(setting.choices, (tuple, list)) else None
        group.add_argument(flag, dest=f"uccl_{flag[2:]}", default=None, choices=choices,
                           type=None if choices else _option_type(setting), metavar=setting.metavar or None,
                           help=f"{setting.env}: {setting.help} (default: {setting.default!r})")
    parser.add_argument("--fabric", metavar="SPEC", default=None,
                        help="run one node per host of an emulated fabric: a running fabric's name "
                             "(uccl-fabric up) or a spec such as hosts=4,leaves=2,spines=2,rate=100mbit")
    return parser


def uccl_env(args: argparse.Namespace) -> dict:
    """UCCL_* variables for the options given on the command line."""
    out = {}
    for flag, setting in UCCL_OPTIONS.items():
        value = getattr(args, f"uccl_{flag[2:]}", None)
        if value is not None:
            out[setting.env] = str(value)
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    args.uccl_env = uccl_env(args)
    if args.fabric is not None:
        if args.nnodes != "1:1" or args.node_rank != 0 or args.master_addr != "127.0.0.1" or args.rdzv_endpoint:
            parser.error("--fabric places the nodes itself (one per emulated host): drop --nnodes, "
                         "--node-rank, --master-addr and --rdzv-endpoint")
        if not str(args.nproc_per_node).isdigit() or int(args.nproc_per_node) < 1:
            parser.error("--fabric needs --nproc-per-node to be a positive number (ranks per host)")
    return args


def run_on_fabric(args: argparse.Namespace) -> int:
    """One torchrun-style node per emulated host; builds the fabric from a spec for this
    run (and removes it after), or uses a running one by name."""
    from uccl.fabric.emulator import NAME_RE, Fabric, FabricSpec, handle_signals
    from uccl.fabric.ranks import command, launch

    handle_signals()
    argv = command(args.training_script, args.training_script_args, module=args.module,
                   no_python=args.no_python)
    nproc = int(args.nproc_per_node)
    port = int(args.master_port) if args.master_port else None
    if NAME_RE.match(args.fabric):
        return launch(Fabric.attach(args.fabric), argv, nproc, args.uccl_env, port=port)
    with Fabric(FabricSpec.parse(args.fabric)) as fab:
        return launch(fab, argv, nproc, args.uccl_env, port=port)


def run(args: argparse.Namespace) -> None:
    """Launches the workers with torch's elastic agent (torch.distributed.run.run)."""
    from torch.distributed.run import run as torchrun

    os.environ.update(getattr(args, "uccl_env", None) or uccl_env(args))
    torchrun(args)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import record

    args = parse_args(argv)
    if args.fabric is not None:
        from uccl.fabric import FabricError

        try:
            sys.exit(run_on_fabric(args))
        except FabricError as exc:
            sys.exit(f"uccl-run: error: {exc}")
    record(run)(args)


if __name__ == "__main__":
    main(sys.argv[1:])
