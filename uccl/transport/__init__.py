"""The transport layer: endpoints, registered memory, one-sided writes, messages, bootstrap."""

from uccl.transport.bootstrap import Bootstrap, MPIBootstrap, StoreBootstrap, bootstrap_from_env
from uccl.transport.endpoint import ANY_SOURCE, Endpoint, Request
from uccl.transport.memory import MemoryRegion
from uccl.transport.store import TCPStore

__all__ = [
    "ANY_SOURCE",
    "Bootstrap",
    "Endpoint",
    "MPIBootstrap",
    "MemoryRegion",
    "Request",
    "StoreBootstrap",
    "TCPStore",
    "bootstrap_from_env",
]
