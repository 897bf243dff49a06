"""The channels the collective tests run over: shared memory and the net channel."""

import functools

import pytest

TRANSPORTS = ["shm", "net"]


@functools.lru_cache(maxsize=None)
def net_available() -> bool:
    """Whether this build has a net channel (two local ranks can connect over it)."""
    from uccl.testing import RankFailure, run_ranks

    try:
        run_ranks(_connect, 2, env={"UCCL_TRANSPORT": "net", "UCCL_TIMEOUT": "20"}, timeout=60)
        return True
    except RankFailure:
        return False


def _connect(ctx):
    from uccl.transport import Endpoint

    Endpoint(ctx.bootstrap)
    return True


def transport_env(transport: str) -> dict:
    if transport == "net" and not net_available():
        pytest.skip("the net channel is not available in this build")
    return {"UCCL_TRANSPORT": transport}
