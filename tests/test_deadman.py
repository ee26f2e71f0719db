"""The deadman thread: trips once when the loop stops feeding it, from its own thread, never otherwise."""

from __future__ import annotations

import threading

import pytest

from device.config import Config
from device.deadman import Deadman
from device.harness import SimUnit
from device.safety import FaultCode


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadman_at_the_timeout_does_not_trip() -> None:
    clock = FakeMonotonic()
    calls: list[str] = []
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: calls.append("trip"), monotonic=clock)
    deadman.feed()
    clock.now += 0.5
    assert not deadman.poll()
    assert not deadman.tripped and calls == []


def test_deadman_just_past_the_timeout_trips_once() -> None:
    clock = FakeMonotonic()
    calls: list[str] = []
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: calls.append("trip"), monotonic=clock)
    deadman.feed()
    clock.now += 0.51
    assert deadman.poll()
    clock.now += 5.0
    assert not deadman.poll()
    assert deadman.tripped and calls == ["trip"]


def test_deadman_silence_the_thread_missed_trips_at_the_feed_that_ends_it() -> None:
    """The thread was starved too (here: never started): the late feed trips, once, before it feeds."""
    clock = FakeMonotonic()
    calls: list[float] = []
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: calls.append(deadman.silent_s()), monotonic=clock)
    deadman.feed()
    clock.now += 0.5
    deadman.feed()  # at the limit: in time
    assert calls == [] and not deadman.tripped
    clock.now += 0.51
    deadman.feed()
    assert deadman.tripped and calls == [pytest.approx(0.51)]  # tripped on the silence, not after the feed
    assert not deadman.poll()  # the thread waking late now finds a fresh feed: no second trip
    clock.now += 0.2
    deadman.feed()
    assert calls == [pytest.approx(0.51)] and deadman.trips == 1


def test_deadman_rearm_allows_the_next_trip() -> None:
    clock = FakeMonotonic()
    calls: list[str] = []
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: calls.append("trip"), monotonic=clock)
    clock.now += 1.0
    assert deadman.poll()
    deadman.rearm()
    assert not deadman.tripped and not deadman.poll()
    clock.now += 0.6
    assert deadman.poll()
    assert calls == ["trip", "trip"]


def test_deadman_thread_trips_from_its_own_thread_when_feeds_stop() -> None:
    clock = FakeMonotonic()
    threads: list[str] = []
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: threads.append(threading.current_thread().name),
                      monotonic=clock, poll_s=0.01)
    deadman.start()
    try:
        for _ in range(50):  # a healthy loop: fed every 0.1 s of its clock
            clock.now += 0.1
            deadman.feed()
        assert not deadman.tripped
        clock.now += 0.6
        assert deadman.wait_tripped(5.0)
    finally:
        deadman.stop()
    assert threads == ["deadman"]
    assert not deadman.running


def test_deadman_survives_a_failing_on_trip() -> None:
    clock = FakeMonotonic()

    def broken() -> None:
        raise RuntimeError("driver gone")

    deadman = Deadman(timeout_s=0.5, on_trip=broken, monotonic=clock)
    clock.now += 1.0
    assert deadman.poll()
    assert deadman.tripped


def test_deadman_stop_is_safe_twice_and_before_start() -> None:
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: None)
    deadman.stop()
    deadman.start()
    with pytest.raises(RuntimeError, match="already started"):
        deadman.start()
    deadman.stop()
    deadman.stop()


@pytest.mark.parametrize(("timeout_s", "poll_s"), [(0.0, 0.05), (0.5, 0.0), (0.5, 1.0)])
def test_deadman_rejects_bad_timing(timeout_s: float, poll_s: float) -> None:
    with pytest.raises(ValueError, match=r"timeout_s|poll_s"):
        Deadman(timeout_s=timeout_s, on_trip=lambda: None, poll_s=poll_s)


def test_deadman_trips_when_the_event_loop_is_blocked(config: Config) -> None:
    """The loop blocks mid-session: the app's deadman forces every output off from its own thread and
    latches CONTROL_LOOP_STALL; the heartbeat stops with the loop. Time is the unit's virtual time."""
    unit = SimUnit(config)
    try:
        unit.start_up()
        assert unit.command(action="start", program="relax", heat=True).ok
        unit.run(30.0)  # a healthy loop: rollers, air and heat under way
        assert not unit.plant.all_off()
        assert unit.app.rig is not None
        heartbeat_pin = unit.app.rig.factory.pin(config.pins.heartbeat)
        trip_threads: list[str] = []
        real_trip = unit.app.hardware.trip

        def trip() -> None:
            trip_threads.append(threading.current_thread().name)
            real_trip()

        unit.app.hardware.trip = trip  # type: ignore[method-assign]
        deadman = unit.deadman
        deadman.start()
        try:
            unit.stall(config.safety.loop_stale_s + 0.1)  # the blocking call: no pass, time goes on
            beats = len(heartbeat_pin.states)
            assert deadman.wait_tripped(30.0)  # certain: the silence is past the timeout on its clock
            # the pins, not the firmware, say what happened: every load off while the loop is blocked
            assert unit.plant.all_off(), unit.plant.outputs()
            assert len(heartbeat_pin.states) == beats  # the heartbeat stopped with the loop
        finally:
            deadman.stop()
        assert trip_threads and trip_threads[0] == "deadman"  # from the deadman's own thread
        fault = unit.supervisor.latched
        assert fault is not None and fault.code is FaultCode.CONTROL_LOOP_STALL
        unit.run(2.0)  # the loop runs again: it keeps everything off and reports the fault
        assert unit.plant.all_off(), unit.plant.outputs()
        assert unit.faults == [fault]
    finally:
        unit.close()
