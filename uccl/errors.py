"""Exceptions raised by uccl. Native errors are translated into these classes."""


class UcclError(RuntimeError):
    """Base class of every uccl error; messages name the rank, operation and cause."""


class UcclTimeoutError(UcclError, TimeoutError):
    """A wait ran past its timeout (a peer that never answered)."""


class PeerFailureError(UcclError, ConnectionError):
    """A peer died or sent something that could not be trusted."""


class AccessError(UcclError, PermissionError):
    """A memory access outside a registered region, with a wrong key, or without the access flag."""


class InvalidArgumentError(UcclError, ValueError):
    """A bad argument: negative length, misaligned size, read-only target, unknown peer..."""


class MismatchError(UcclError):
    """Ranks disagree about a call (sizes, dtypes, ops, roots) or a message does not fit."""
