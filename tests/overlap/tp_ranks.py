"""Launching TP checks on local ranks: a uccl default group beside a gloo group over the same
ranks (the reference), and inputs every rank can rebuild."""

from __future__ import annotations

import os

import torch

from tests.distributed.harness import assert_same, init, init_url, rand, transport_env
from uccl.testing import run_ranks

__all__ = ["assert_same", "init", "launch", "rand", "splits"]


def launch(fn, world: int, transport: str, *args, timeout: float = 150.0, env: dict = None) -> list:
    """fn(ctx, url, *args) on `world` ranks over `transport`."""
    return run_ranks(fn, world, (init_url(), *args), env={**transport_env(transport), **(env or {})},
                     timeout=timeout)


class splits:
    """Sets UCCL_TP_SPLITS for the calls inside (the setting is read at each call)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __enter__(self) -> None:
        self.old = os.environ.get("UCCL_TP_SPLITS")
        os.environ["UCCL_TP_SPLITS"] = str(self.value)

    def __exit__(self, *exc) -> None:
        if self.old is None:
            os.environ.pop("UCCL_TP_SPLITS", None)
        else:
            os.environ["UCCL_TP_SPLITS"] = self.old


def same_strides(got: torch.Tensor, want: torch.Tensor, label: str) -> None:
    assert got.shape == want.shape and got.stride() == want.stride(), \
        f"{label}: shape/strides {tuple(got.shape)}/{got.stride()}, the unfused composition's " \
        f"{tuple(want.shape)}/{want.stride()}"
