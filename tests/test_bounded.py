"""Consistent hashing with bounded loads end to end: a real balancer in front of replicas that
saturate (bench/bounded.py's), under a skewed key stream, with the bound off and on."""

from __future__ import annotations

import uvloop

from bench.bounded import key_stream, run_mode


def test_the_bound_holds_under_a_hot_key_and_without_it_the_hot_replica_saturates() -> None:
    keys = key_stream(0)
    off = uvloop.run(run_mode(0.0, keys, 1.0, 24))
    on = uvloop.run(run_mode(1.25, keys, 1.0, 24))
    assert off.failures == 0 and on.failures == 0
    assert off.requests > 500 and on.requests > 500
    cap = on.cap
    assert cap == 10  # ceil(1.25 x 24 / 3)
    # Off: the hot key's replica carries most of the load and far more than the cap in flight.
    hot = max(off.served, key=lambda name: off.served[name])
    assert off.served[hot] > 0.5 * off.requests
    assert off.peak[hot] > cap + 4, off.peak
    assert off.moved_requests == 0  # every key at its table home
    # On: no replica ever passes the cap; the hot key spills to its next candidates.
    assert max(on.peak.values()) <= cap, on.peak
    assert on.served[hot] < 0.5 * on.requests
    assert 0 < on.moved_requests < on.requests
