"""The health state machine, without sockets or clocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlb.control.health import DOWN, STARTING, UP, Health


def test_new_replica_is_starting_until_it_answers() -> None:
    health = Health(rise=2, fall=3)
    assert health.state == STARTING and not health.up
    assert health.started()
    assert health.up


def test_fall_consecutive_failures_take_it_down() -> None:
    health = Health(rise=2, fall=3, state=UP)
    assert not health.heartbeat(False)
    assert not health.heartbeat(False)
    assert health.heartbeat(False)
    assert health.state == DOWN


def test_a_good_heartbeat_resets_the_failure_count() -> None:
    health = Health(rise=2, fall=2, state=UP)
    health.heartbeat(False)
    health.heartbeat(True)
    assert not health.heartbeat(False)
    assert health.up


def test_rise_consecutive_successes_bring_it_back() -> None:
    health = Health(rise=3, fall=1, state=DOWN)
    assert not health.heartbeat(True)
    assert not health.heartbeat(True)
    assert health.heartbeat(True)
    assert health.up


def test_suspect_makes_the_next_failure_decisive() -> None:
    health = Health(rise=2, fall=5, state=UP)
    assert health.suspect()
    assert health.up  # suspicion alone does not take it out
    assert health.heartbeat(False)
    assert health.state == DOWN


def test_suspect_cleared_by_a_good_probe() -> None:
    health = Health(rise=2, fall=5, state=UP)
    health.suspect()
    health.heartbeat(True)
    assert not health.heartbeat(False)
    assert health.up


def test_suspect_of_a_down_replica_asks_for_nothing() -> None:
    assert not Health(rise=1, fall=1, state=DOWN).suspect()


def test_death_is_immediate_and_needs_rise_to_recover() -> None:
    health = Health(rise=2, fall=3, state=UP)
    assert health.died()
    assert health.state == DOWN
    assert not health.died()
    assert not health.heartbeat(True)
    assert health.heartbeat(True)


def test_bad_thresholds() -> None:
    with pytest.raises(ValueError):
        Health(rise=0, fall=1)


@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.lists(st.sampled_from(["ok", "fail", "suspect", "died"]), max_size=60),
)
def test_state_follows_the_last_streak(rise: int, fall: int, signals: list[str]) -> None:
    """Model check: the state is UP iff the last transition-relevant streak says so."""
    health = Health(rise, fall, state=UP)
    up = True
    oks = fails = 0
    for signal in signals:
        if signal == "ok":
            oks, fails = oks + 1, 0
            if not up and oks >= rise:
                up = True
        elif signal == "fail":
            fails, oks = fails + 1, 0
            if up and fails >= fall:
                up = False
        elif signal == "suspect":
            if up:
                fails, oks = max(fails, fall - 1), 0
        else:
            up, oks, fails = False, 0, fall
        getattr(health, {"ok": "heartbeat", "fail": "heartbeat"}.get(signal, signal))(
            *((signal == "ok",) if signal in ("ok", "fail") else ())
        )
        assert health.up == up
