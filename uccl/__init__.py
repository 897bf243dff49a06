"""uccl: a software transport and collective library for machine-learning jobs."""

from uccl.config import Config, config
from uccl.errors import (
    AccessError,
    InvalidArgumentError,
    MismatchError,
    PeerFailureError,
    UcclError,
    UcclTimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "AccessError",
    "Config",
    "InvalidArgumentError",
    "MismatchError",
    "PeerFailureError",
    "UcclError",
    "UcclTimeoutError",
    "config",
]
