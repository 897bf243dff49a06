"""The channels the collective tests run over: shared memory and the net channel
(UDP over loopback; the namespace tests in tests/transport cover real links)."""

TRANSPORTS = ["shm", "net"]


def transport_env(transport: str) -> dict:
    return {"UCCL_TRANSPORT": transport}
