"""Collectives: every NCCL / torch.distributed collective, in native code."""

from uccl.collectives.communicator import Communicator, Work

__all__ = ["Communicator", "Work"]
