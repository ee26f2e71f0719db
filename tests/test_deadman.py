"""The deadman thread: trips once when the loop stops feeding it, from its own thread, never otherwise."""

from __future__ import annotations

import asyncio
import threading

import pytest

from device.config import Config
from device.deadman import Deadman
from device.safety import FaultCode, Supervisor
from device.sim import SimRig
from drivers.clock import VirtualClock
from modes.signals import Command


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


async def test_deadman_trips_when_the_event_loop_is_blocked(
    rig: SimRig, clock: VirtualClock, config: Config
) -> None:
    """A blocking call on the event loop: outputs forced off from the thread, the heartbeat stops."""
    supervisor = Supervisor(config.safety, thermistors=list(config.sensors.thermistors))
    hardware = rig.hardware

    def trip() -> None:
        hardware.safe_off()
        supervisor.latch(supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "loop silent", t=clock.now()))

    deadman = Deadman(timeout_s=config.safety.loop_stale_s, on_trip=trip, poll_s=0.01)
    heartbeat_pin = rig.factory.pin(config.pins.heartbeat)
    beats_before_block: list[int] = []

    async def safety_loop() -> None:
        for tick in range(40):
            sample = hardware.read_sample()
            supervisor.check(sample)
            if supervisor.latched is not None:
                hardware.safe_off()
                return  # the fault state: the heartbeat no longer toggles
            hardware.apply(Command(foot_rollers=0.6, calf_rollers=-0.6, relay=True))
            hardware.heartbeat.toggle()
            deadman.feed()
            rig.plant.step(0.05)
            clock.advance(0.05)
            await asyncio.sleep(0)
            if tick == 30:
                beats_before_block.append(len(heartbeat_pin.states))
                deadman.wait_tripped(5.0)  # the bug under test: a blocking call on the event loop

    deadman.start()
    try:
        await asyncio.wait_for(safety_loop(), timeout=10.0)
    finally:
        deadman.stop()
    assert deadman.tripped
    fault = supervisor.latched
    assert fault is not None and fault.code is FaultCode.CONTROL_LOOP_STALL
    # the pins, not the firmware, say what happened: every load off from the deadman thread
    assert rig.plant.all_off(), rig.plant.outputs()
    assert beats_before_block[0] >= 31  # toggled on every healthy pass
    assert len(heartbeat_pin.states) == beats_before_block[0]  # and never since the loop blocked
