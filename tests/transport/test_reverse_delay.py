"""The net channel's estimate of an ack's queueing on the way back (reverse_delay.h):
the acker's clock is unrelated to ours, so only changes of the ack's transit time
are known; the estimate must follow the queue whatever the offset, and forget a
minimum that clock drift has made stale."""

import pytest

from uccl import _native

MS = 1_000_000
DAY = 86_400 * 1_000_000_000


def trace(offset_ns, transit_ns, queue_ns, start=10 * DAY, step=MS, drift_ppm=0.0):
    """(our arrival, acker's departure) pairs: the acker's clock = ours + offset (+ drift)."""
    out = []
    for i, q in enumerate(queue_ns):
        sent_ours = start + i * step
        sent_theirs = sent_ours + offset_ns + int(i * step * drift_ppm * 1e-6)
        out.append((sent_ours + transit_ns + q, sent_theirs))
    return out


@pytest.mark.parametrize("offset", [0, 3 * DAY, -3 * DAY, 12_345_678])
def test_follows_the_queue_whatever_the_clock_offset(offset):
    queue = [0] * 5 + [k * 100_000 for k in range(20)] + [0] * 5  # up to 1.9 ms, then drained
    got = _native.tools.reverse_delay_trace(trace(offset, 40_000, queue))
    assert got == queue


def test_a_queue_that_never_drains_ages_into_the_base():
    # From a standing 2 ms queue on, the minimum moves up within two 2 s epochs: the
    # estimate then errs low (the window sees the queue, as without the estimate).
    queue = [0] * 10 + [2 * MS] * 6000  # 6 s at one ack per ms
    got = _native.tools.reverse_delay_trace(trace(5 * DAY, 40_000, queue))
    assert got[20] == 2 * MS
    assert got[-1] == 0


def test_drift_between_clocks_does_not_accumulate():
    # The acker's clock runs 100 ppm slow against ours: without ageing, the stale
    # minimum would overstate the queue by 1 ms after 10 s.
    n = 10_000  # 10 s, one ack per ms, no queue at all
    got = _native.tools.reverse_delay_trace(trace(-DAY, 40_000, [0] * n, drift_ppm=-100))
    epoch_ns = 2_000_000_000
    assert max(got[-1000:]) <= 2 * epoch_ns * 100e-6  # at most two epochs' worth of drift (0.4 ms)
