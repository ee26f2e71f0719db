"""Tests that kill the mutants of the safety code that the other safety tests let survive.

scripts/mutation runs mutmut over the safety code; docs/safety.md ("Mutation testing") lists the
score and the mutants judged equivalent. Each test here names the rule it pins.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest

from device.config import Config, Heater, Safety
from device.controller import Controller
from device.deadman import Deadman
from device.safety import Expectations, Fault, FaultCode, Supervisor
from device.safety.air import AirChecks
from device.safety.faults import EPS, NOTHING_EXPECTED, RATE_MIN_DT_S, Trip, beside
from device.safety.heat import HeatChecks
from device.safety.motors import REST_SETTLE_S, MotorChecks
from device.safety.power import RAIL_SETTLE_S, PowerChecks
from device.safety.sensors import SensorChecks
from device.sim import SimRig, build_sim
from drivers.clock import VirtualClock
from modes.limits import STALL_S, Zone
from modes.session import SessionSnapshot, Status
from modes.signals import Command, Sample
from tests.test_safety import DT, NO_HEAT, make_sample

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority


def first_trip(
    family: PowerChecks | MotorChecks,
    sample_at: Callable[[float], Sample],
    seconds: float,
    expect: Expectations = NO_HEAT,
) -> tuple[float, FaultCode, str] | None:
    """Run one hazard family's ``check`` every 50 ms; the time, code and message of its first trip."""
    for i in range(round(seconds / DT)):
        t = i * DT
        trip = family.check(sample_at(t), expect)
        if trip is not None:
            return t, trip[0], trip[1]
    return None


RELAY_ON = {"relay": True}


# -- power rail (device/safety/power.py) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("relay", "rail", "code"),
    [
        (False, 6.0, None),  # at the present level: absent
        (False, 6.01, FaultCode.RELAY_WELDED),
        (True, 9.0, None),  # at the low limit: powered
        (True, 8.99, FaultCode.POWER_FAULT),
        (True, 15.0, None),  # at the high limit: fine
        (True, 15.01, FaultCode.POWER_FAULT),
        (True, 12.0, None),
        (False, 0.0, None),
    ],
)
def test_power_rail_thresholds_at_their_edges(relay: bool, rail: float, code: FaultCode | None) -> None:
    checks = PowerChecks(Safety())
    outputs = RELAY_ON if relay else {}
    found = first_trip(checks, lambda t: make_sample(t, outputs=outputs, rail_v=rail), 2.0)
    if code is None:
        assert found is None
        assert checks.doubt(make_sample(0.0, outputs=outputs, rail_v=rail)) is None
    else:
        assert found is not None
        # settled 0.2 s after the relay's first state, then wrong for 0.2 s
        assert found[:2] == (pytest.approx(0.4), code)


def test_power_rail_messages() -> None:
    welded = first_trip(PowerChecks(Safety()), lambda t: make_sample(t, rail_v=7.25), 1.0)
    assert welded is not None
    assert welded[2] == (
        "the 12 V rail reads 7.2 V with the relay commanded off (above 6.0 V): the relay is welded"
    )
    low = first_trip(PowerChecks(Safety()), lambda t: make_sample(t, outputs=RELAY_ON, rail_v=4.0), 1.0)
    assert low is not None
    assert low[2] == (
        "the 12 V rail reads 4.0 V with the relay on (at least 9.0 V expected): "
        "no actuator power (supply, fuse or relay coil)"
    )
    high = first_trip(PowerChecks(Safety()), lambda t: make_sample(t, outputs=RELAY_ON, rail_v=16.0), 1.0)
    assert high is not None
    assert high[2] == "the 12 V rail reads 16.0 V (at most 15.0 V)"


def test_power_rail_no_reading_is_not_a_power_trip() -> None:
    """A missing rail reading is the sensor family's (bus) business; the rail rules skip the sample."""
    checks = PowerChecks(Safety())
    assert first_trip(checks, lambda t: make_sample(t, outputs=RELAY_ON, bus_error="nack"), 1.0) is None
    assert checks.doubt(make_sample(0.0, bus_error="nack")) == "the rail sense has no reading"


def test_power_rail_settle_counts_from_each_relay_switch() -> None:
    """Wrong before a switch and wrong after it: the timer restarts at the switch, then settles."""

    def sample_at(t: float) -> Sample:
        if t < 0.25 - 1e-9:
            return make_sample(t, rail_v=7.0)  # welded-looking while off: wrong from 0.2 s
        return make_sample(t, outputs=RELAY_ON, rail_v=8.0)  # low while on

    found = first_trip(PowerChecks(Safety()), sample_at, 2.0)
    assert found is not None
    # switched at 0.25 s: settled at 0.45 s, wrong from 0.45 s, trips at 0.65 s
    assert found[:2] == (pytest.approx(0.65), FaultCode.POWER_FAULT)


def test_power_rail_a_right_reading_restarts_the_wrong_timer() -> None:
    def sample_at(t: float) -> Sample:
        right = abs(t - 0.25) < 1e-6
        return make_sample(t, rail_v=0.0 if right else 7.0)

    found = first_trip(PowerChecks(Safety()), sample_at, 2.0)
    assert found is not None
    # wrong at 0.2 s, right at 0.25 s, wrong again from 0.3 s: trips at 0.5 s, not 0.4 s
    assert found[:2] == (pytest.approx(0.5), FaultCode.RELAY_WELDED)


def test_power_rail_welded_persists_until_the_rail_is_absent() -> None:
    checks = PowerChecks(Safety())
    welded = FaultCode.RELAY_WELDED
    assert checks.persisting(welded, make_sample(0.0, rail_v=6.01)) == (
        "the 12 V rail still reads 6.0 V with the relay off: the relay is welded"
    )
    assert checks.persisting(welded, make_sample(0.0, rail_v=6.0)) is None
    assert checks.persisting(welded, make_sample(0.0, bus_error="nack")) == "the rail sense has no reading"
    # a power fault is accepted at once (checked again at the next energise)
    assert checks.persisting(FaultCode.POWER_FAULT, make_sample(0.0, rail_v=7.0)) is None
    assert checks.persisting(FaultCode.POWER_FAULT, make_sample(0.0, bus_error="nack")) is None


def _doubt_after(checks: Any, sample_at: Any, seconds: float) -> str | None:
    """Run a family's rules on samples for ``seconds`` (its settle times), then ask for its doubt."""
    steps = round(seconds / 0.05)
    for i in range(steps + 1):
        checks.check(sample_at(i * 0.05), NOTHING_EXPECTED)
    return checks.doubt(sample_at(steps * 0.05))  # type: ignore[no-any-return]


def test_power_rail_doubt_names_the_problem() -> None:
    off_high = lambda t: make_sample(t, rail_v=7.0)  # noqa: E731
    assert PowerChecks(Safety()).doubt(off_high(0.0)) is None  # the relay has just switched: settling
    assert _doubt_after(PowerChecks(Safety()), off_high, 0.3) == (
        "the 12 V rail reads 7.0 V with the relay commanded off (above 6.0 V): the relay is welded"
    )
    on_high = lambda t: make_sample(t, outputs=RELAY_ON, rail_v=16.0)  # noqa: E731
    on_ok = lambda t: make_sample(t, outputs=RELAY_ON, rail_v=12.0)  # noqa: E731
    assert _doubt_after(PowerChecks(Safety()), on_high, 0.3) == "the 12 V rail reads 16.0 V (at most 15.0 V)"
    assert _doubt_after(PowerChecks(Safety()), on_ok, 0.3) is None


# -- roller motors (device/safety/motors.py) ------------------------------------------------------


def motors_at(foot: tuple[float | None, float], calf: tuple[float | None, float] = (0.0, 0.0)):  # type: ignore[no-untyped-def]
    """A sample maker: each motor's (current, duty)."""

    def sample_at(t: float) -> Sample:
        return make_sample(
            t,
            current={"foot_rollers": foot[0], "calf_rollers": calf[0]},
            outputs={"relay": True, "foot_rollers": foot[1], "calf_rollers": calf[1]},
        )

    return sample_at


@pytest.mark.parametrize(
    ("amps", "duty", "trips"),
    [
        (2.0, 1.0, False),  # at the stall current
        (2.01, 1.0, True),
        (1.0, 0.2, False),  # 5 A per unit of duty: at the limit
        (1.01, 0.2, True),
        (1.01, -0.2, True),  # reverse: the magnitude of the duty counts
        (0.51, 0.1, True),  # at STALL_MIN_DUTY the per-duty rule applies
        (1.9, 0.09, False),  # below it, only the absolute stall current
        (1.9, 0.0, False),
    ],
)
def test_motor_stall_thresholds_at_their_edges(amps: float, duty: float, trips: bool) -> None:
    found = first_trip(MotorChecks(Safety()), motors_at((amps, duty)), 2.0)
    if trips:
        assert found is not None
        assert found[:2] == (pytest.approx(0.5), FaultCode.MOTOR_STALL)  # held for stall_s
    else:
        assert found is None


def test_motor_stall_message_names_the_first_motor_and_the_limits() -> None:
    found = first_trip(MotorChecks(Safety()), motors_at((2.5, 0.8), (3.0, 0.9)), 2.0)
    assert found is not None
    assert found[2] == (
        "foot_rollers drew 2.50 A at duty 0.80 for 0.50 s "
        "(stall above 2.0 A, or above 5.0 A per unit of duty, for 0.5 s)"
    )


def test_motor_stall_timers_are_per_motor_and_restart_when_the_current_drops() -> None:
    def sample_at(t: float) -> Sample:
        foot = 2.5 if t < 0.3 - 1e-9 else 0.5  # stalls 0.3 s, then runs
        calf = 2.5 if t > 0.3 - 1e-9 and abs(t - 0.6) > 1e-6 else 0.5  # from 0.3 s, one dip at 0.6 s
        return motors_at((foot, 0.8), (calf, 0.8))(t)

    found = first_trip(MotorChecks(Safety()), sample_at, 3.0)
    assert found is not None
    # calf: from 0.3 s, restarted at 0.65 s after the dip: trips at 1.15 s
    assert found[0] == pytest.approx(1.15)
    assert found[2].startswith("calf_rollers drew 2.50 A")


def test_motor_stall_a_missing_reading_restarts_the_timer() -> None:
    def sample_at(t: float) -> Sample:
        amps = None if abs(t - 0.4) < 1e-6 else 2.5
        return motors_at((amps, 0.8))(t)

    found = first_trip(MotorChecks(Safety()), sample_at, 2.0)
    assert found is not None
    assert found[0] == pytest.approx(0.95)  # restarted at 0.45 s


def test_motor_stall_is_not_judged_on_a_bus_error_sample() -> None:
    checks = MotorChecks(Safety())
    stall = motors_at((2.5, 0.8))
    assert checks.check(stall(0.0), NO_HEAT) is None
    assert checks.check(make_sample(0.3, bus_error="nack"), NO_HEAT) is None
    # the bus error neither tripped nor restarted the timer
    assert checks.check(stall(0.5), NO_HEAT) is not None


def test_motor_stall_persists_while_a_motor_draws_stall_current() -> None:
    checks = MotorChecks(Safety())
    code = FaultCode.MOTOR_STALL
    assert checks.persisting(code, motors_at((0.0, 0.0), (2.01, 0.0))(0.0)) == (
        "calf_rollers still draws 2.01 A (stall above 2.0 A)"
    )
    assert checks.persisting(code, motors_at((2.0, 0.0), (2.0, 0.0))(0.0)) is None
    assert checks.persisting(code, motors_at((None, 0.0), (None, 0.0))(0.0)) is None


def test_motor_doubt_at_rest() -> None:
    assert _doubt_after(MotorChecks(Safety()), motors_at((0.3, 0.0), (0.3, 0.0)), 1.0) is None  # at the limit
    assert _doubt_after(MotorChecks(Safety()), motors_at((0.0, 0.0), (0.31, 0.0)), 1.0) == (
        "calf_rollers draws 0.31 A while off (at most 0.3 A at rest)"
    )
    assert _doubt_after(MotorChecks(Safety()), motors_at((0.0, 0.0), (0.31, 0.0)), 0.9) is None  # coasting
    assert _doubt_after(MotorChecks(Safety()), motors_at((1.5, 0.5), (0.0, 0.0)), 1.0) is None  # running
    assert MotorChecks(Safety()).doubt(motors_at((0.0, 0.0), (None, 0.0))(0.0)) == (
        "calf_rollers current sense has no reading"
    )


# -- the deadman (device/deadman.py) -----------------------------------------------------------------


class HandClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordedWaits:
    """Stands in for the deadman's stop event inside ``_watch``: records each sleep, runs a script."""

    def __init__(self, clock: HandClock, steps: list[float]) -> None:
        self.clock = clock
        self.steps = steps  # how far the clock moves during each sleep; the watch stops after the last
        self.waits: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        if not self.steps:
            return True
        self.clock.now += self.steps.pop(0)
        return False

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


def test_deadman_sleeps_until_the_deadline_then_polls_after_a_trip() -> None:
    clock = HandClock()
    calls: list[str] = []
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: calls.append("trip"), monotonic=clock, poll_s=0.05)
    deadman.feed()
    clock.now += 0.2
    waits = RecordedWaits(clock, [0.301, 0.05])
    deadman._stopping = waits  # type: ignore[assignment]
    deadman._watch()
    # 0.3 s to the deadline and 1 ms past it; tripped: then it polls every poll_s
    assert waits.waits == [pytest.approx(0.301), pytest.approx(0.05), pytest.approx(0.05)]
    assert calls == ["trip"]
    assert deadman.trips == 1


def test_deadman_sleep_is_bounded_by_ten_polls_and_never_negative() -> None:
    clock = HandClock()
    deadman = Deadman(timeout_s=2.0, on_trip=lambda: None, monotonic=clock, poll_s=0.05)
    deadman.feed()
    waits = RecordedWaits(clock, [0.5])
    deadman._stopping = waits  # type: ignore[assignment]
    deadman._watch()
    assert waits.waits[0] == pytest.approx(0.5)  # 2 s to go, but at most 10 polls
    assert waits.waits[1] == pytest.approx(0.5)  # 1.5 s to go
    late = Deadman(timeout_s=0.5, on_trip=lambda: None, monotonic=clock, poll_s=0.05)
    late.feed()
    clock.now += 3.0
    late._tripped_feed = 0.0  # a silence that has not tripped yet, already past its deadline
    waits = RecordedWaits(clock, [])
    late._stopping = waits  # type: ignore[assignment]
    late._watch()
    assert waits.waits == [pytest.approx(0.001)]


def test_deadman_counts_each_trip_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = HandClock()
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: None, monotonic=clock)
    clock.now += 0.75
    with caplog.at_level(logging.INFO, logger="device.deadman"):
        assert deadman.poll()
    assert caplog.messages == ["deadman: control loop silent for 0.75 s (limit 0.50 s); forcing outputs off"]
    deadman.feed()
    clock.now += 0.6
    assert deadman.poll()
    assert deadman.trips == 2


def test_deadman_logs_a_failing_on_trip(caplog: pytest.LogCaptureFixture) -> None:
    clock = HandClock()

    def broken() -> None:
        raise RuntimeError("driver gone")

    deadman = Deadman(timeout_s=0.5, on_trip=broken, monotonic=clock)
    clock.now += 1.0
    with caplog.at_level(logging.INFO, logger="device.deadman"):
        assert deadman.poll()
    assert caplog.messages[-1] == "deadman: on_trip failed"
    assert deadman.trips == 1 and deadman.tripped


def test_deadman_poll_equal_to_the_timeout_is_allowed() -> None:
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: None, poll_s=0.5)
    assert deadman.timeout_s == 0.5


def test_deadman_silent_s_counts_from_the_last_feed() -> None:
    clock = HandClock()
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: None, monotonic=clock)
    clock.now += 0.25
    assert deadman.silent_s() == pytest.approx(0.25)  # from construction
    deadman.feed()
    clock.now += 0.1
    assert deadman.silent_s() == pytest.approx(0.1)


def test_deadman_thread_is_a_daemon_and_restarts_after_stop(caplog: pytest.LogCaptureFixture) -> None:
    clock = HandClock()
    calls: list[str] = []
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: calls.append("trip"), monotonic=clock, poll_s=0.01)
    with caplog.at_level(logging.INFO, logger="device.deadman"):
        deadman.start()
    try:
        assert caplog.messages == ["deadman watching the control loop (timeout 0.50 s)"]
        thread = deadman._thread
        assert thread is not None and thread.daemon and deadman.running
    finally:
        deadman.stop()
    assert not deadman.running
    clock.now += 0.4
    deadman.start()  # watching again, the timeout counting from this start
    try:
        assert deadman.running
        clock.now += 0.4
        assert not deadman.wait_tripped(0.2)
        clock.now += 0.2
        assert deadman.wait_tripped(5.0)
    finally:
        deadman.stop()
    assert calls == ["trip"]


# -- the controller's fault path (device/controller.py) --------------------------------------------


class FakeHardware:
    """Records what the controller asks of the outputs."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.applied: list[Command] = []
        self.heartbeat = self
        self.t = 0.0

    def read_sample(self) -> Sample:
        return make_sample(self.t)

    def trip(self) -> None:
        self.calls.append("trip")

    def release(self) -> None:
        self.calls.append("release")

    def apply(self, command: Command) -> None:
        self.calls.append("apply")
        self.applied.append(command)

    def toggle(self) -> None:
        self.calls.append("beat")


class FakeSession:
    def __init__(self, snapshot: SessionSnapshot) -> None:
        self._snapshot = snapshot
        self.status = Status.RUNNING
        self.entered: list[float] = []

    def snapshot(self) -> SessionSnapshot:
        return self._snapshot

    def enter_fault(self, now: float) -> None:
        self.entered.append(now)
        self.status = Status.FAULT

    def step(self, now: float, sample: Sample) -> Command:
        return Command(relay=True, heater=0.5)


class FakeSupervisor:
    """Latches what the test tells it to; records what the controller expects."""

    def __init__(self, latched: Fault | None = None) -> None:
        self.latched = latched
        self.trip_outputs: Callable[[], None] = lambda: None
        self.release_outputs: Callable[[], None] = lambda: None
        self.expects: list[Expectations] = []
        self.next: Fault | None = None

    def check(self, sample: Sample, expect: Expectations) -> Fault | None:
        self.expects.append(expect)
        fault, self.next = self.next, None
        if fault is not None:
            self.latched = fault
        return fault


def make_controller(
    *, heat_active: bool = True, latched: Fault | None = None
) -> tuple[Controller, FakeHardware, FakeSession, FakeSupervisor, list[Fault], list[Sample]]:
    hardware = FakeHardware()
    session = FakeSession(
        SessionSnapshot(
            status=Status.RUNNING, program="relax", phase="work", intensity=3, heat=True, heat_target_c=41.0,
            timer_min=15, remaining_s=100.0, skip_zones=(), setpoints_mmhg={"foot": 50.0},
            heat_active=heat_active,
        )
    )
    supervisor = FakeSupervisor(latched)
    faults: list[Fault] = []
    passes: list[Sample] = []
    controller = Controller(
        hardware=hardware,  # type: ignore[arg-type]
        session=session,  # type: ignore[arg-type]
        supervisor=supervisor,  # type: ignore[arg-type]
        clock=VirtualClock(start=5.0),
        on_fault=faults.append,
        on_pass=passes.append,
    )
    return controller, hardware, session, supervisor, faults, passes


STALL = Fault(code=FaultCode.CONTROL_LOOP_STALL, message="silent", since=0.0, t=0.0)
STALL_2 = Fault(code=FaultCode.MOTOR_STALL, message="stall", since=0.0, t=0.0)


def test_controller_wires_the_latch_to_the_outputs() -> None:
    controller, hardware, _session, supervisor, _faults, _passes = make_controller()
    assert hardware.calls == []  # nothing latched: no trip at construction
    assert controller.last_sample is None and controller.stats.ticks == 0
    supervisor.trip_outputs()
    supervisor.release_outputs()
    assert hardware.calls == ["trip", "release"]
    _c, restored, _s, _sup, _f, _p = make_controller(latched=STALL)
    assert restored.calls == ["trip"]  # a fault restored after a restart holds the outputs off at once


@pytest.mark.parametrize("heat_active", [True, False])
def test_controller_tells_the_supervisor_what_the_session_expects(heat_active: bool) -> None:
    controller, hardware, _session, supervisor, _faults, passes = make_controller(heat_active=heat_active)
    sample = controller.tick()
    (expect,) = supervisor.expects
    assert expect.heat_target_c == (41.0 if heat_active else None)
    assert dict(expect.setpoints_mmhg) == {"foot": 50.0}
    assert hardware.calls == ["apply", "beat"]
    assert hardware.applied == [Command(relay=True, heater=0.5)]
    assert passes == [sample] and controller.last_sample is sample and controller.stats.ticks == 1


def test_controller_fault_path_trips_every_pass_enters_fault_once_reports_once() -> None:
    controller, hardware, session, supervisor, faults, passes = make_controller()
    controller.tick()
    supervisor.next = STALL
    controller.clock.advance(0.05)  # type: ignore[attr-defined]
    controller.tick()
    assert hardware.calls == ["apply", "beat", "trip", "beat"]
    assert session.entered == [pytest.approx(5.05)]
    assert faults == [STALL]
    controller.tick()  # still latched: trip again, nothing applied, nothing reported twice
    assert hardware.calls[-2:] == ["trip", "beat"]
    assert session.entered == [pytest.approx(5.05)] and faults == [STALL]
    assert controller.stats.ticks == 3 and len(passes) == 3


def test_controller_reports_a_fault_latched_from_another_thread_without_entering_fault_twice() -> None:
    controller, hardware, session, supervisor, faults, _passes = make_controller(latched=STALL)
    session.status = Status.FAULT  # restored in fault
    supervisor.next = STALL_2  # the deadman's fault, returned once by the next check
    controller.tick()
    assert session.entered == [] and faults == [STALL_2]
    assert hardware.calls == ["trip", "trip", "beat"]


# -- the output latch of the hardware (device/hardware.py) --------------------------------------------

BUSY = Command(relay=True, pump=1.0, connected=frozenset({"foot", "ankle"}), heater=0.8,
               foot_rollers=0.6, calf_rollers=-0.4)


def pins_on(rig: SimRig) -> set[str]:
    """The outputs the plant sees on, at the pins."""
    return {k for k, v in rig.plant.outputs().items() if v and k != "heartbeat"}


def test_hardware_trip_holds_every_output_off_until_release(rig: SimRig) -> None:
    hw = rig.hardware
    hw.apply(BUSY)
    assert hw.tripped is False and "heater" in pins_on(rig)
    hw.trip()
    assert hw.tripped is True and pins_on(rig) == set()
    hw.apply(BUSY)
    assert pins_on(rig) == set()
    hw.release()
    assert hw.tripped is False
    hw.apply(BUSY)
    assert pins_on(rig) >= {"relay", "pump", "heater", "valve_foot", "valve_ankle"}


def test_hardware_apply_while_tripped_forces_off_what_a_driver_turned_on(rig: SimRig) -> None:
    hw = rig.hardware
    hw.trip()
    hw.relay.energise()  # a driver written behind the latch's back
    hw.pump.run(1.0)
    hw.apply(Command())
    assert pins_on(rig) == set()
    hw.relay.energise()
    hw.pump.run(1.0)
    hw.apply(BUSY)
    assert pins_on(rig) == set()


def test_hardware_pump_never_runs_without_a_connected_zone(rig: SimRig) -> None:
    hw = rig.hardware
    hw.apply(Command(relay=True, pump=1.0, connected=frozenset()))
    assert hw.pump.duty == 0.0 and hw.relay.is_on
    hw.apply(Command(relay=True, pump=1.0, connected=frozenset({"calf"})))
    assert hw.pump.duty == 1.0 and hw.valves["calf"].is_connected and not hw.valves["foot"].is_connected
    hw.apply(Command(relay=True, pump=0.5, connected=frozenset({"calf"})))
    assert hw.pump.duty == 0.5
    hw.apply(Command(relay=True, pump=0.5, connected=frozenset()))  # the zones close: the pump stops
    assert hw.pump.duty == 0.0 and not hw.valves["calf"].is_connected
    hw.apply(Command(relay=True, pump=0.5, connected=frozenset({"foot"})))
    assert hw.pump.duty == 0.5 and hw.valves["foot"].is_connected
    hw.apply(Command(relay=True, pump=0.0, connected=frozenset({"foot"})))
    assert hw.pump.duty == 0.0 and hw.valves["foot"].is_connected


def test_hardware_writes_everything_again_after_the_relay_dropped_under_it(rig: SimRig) -> None:
    hw = rig.hardware
    hw.apply(BUSY)
    hw.safe_off()  # e.g. the deadman: every driver off, the relay open
    assert pins_on(rig) == set()
    hw.apply(BUSY)  # the same command: nothing "unchanged" may be skipped
    assert pins_on(rig) >= {"relay", "pump", "heater", "valve_foot", "valve_ankle"}
    assert hw.heater.duty == 0.8 and hw.pump.duty == 1.0
    hw.relay.drop()  # the relay alone, behind the hardware's back
    hw.apply(BUSY)
    assert hw.relay.is_on and hw.heater.duty == 0.8 and hw.pump.duty == 1.0


def test_hardware_relay_off_command_after_a_partial_write_turns_off(rig: SimRig) -> None:
    hw = rig.hardware
    hw.relay.energise()
    hw.pump.run(1.0)  # on, but nothing applied through apply
    hw.apply(Command())
    assert pins_on(rig) == set()


def test_hardware_heater_duty_is_held_to_the_wiring_limit(config: Config, clock: VirtualClock) -> None:
    limited = config.model_copy(update={"heater": config.heater.model_copy(update={"max_duty": 0.6})})
    sim = build_sim(limited, clock=clock.now)
    try:
        sim.hardware.apply(Command(relay=True, heater=1.0))
        assert sim.hardware.heater.duty == pytest.approx(0.6)
        sim.hardware.apply(Command(relay=True, heater=0.3))
        assert sim.hardware.heater.duty == pytest.approx(0.3)
    finally:
        sim.close()


def test_hardware_safe_off_logs_a_failing_step(
    rig: SimRig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hw = rig.hardware
    hw.apply(BUSY)

    def broken() -> None:
        raise RuntimeError("wedged")

    monkeypatch.setattr(hw.pump, "off", broken)
    with caplog.at_level(logging.INFO, logger="device.hardware"):
        hw.safe_off()
    assert caplog.messages == ["safe_off: a step failed"]
    assert not hw.relay.is_on and hw.heater.duty == 0.0


class HungThread:
    """A watching thread that does not stop."""

    def __init__(self) -> None:
        self.joins: list[float | None] = []

    def join(self, timeout: float | None = None) -> None:
        self.joins.append(timeout)

    def is_alive(self) -> bool:
        return True


def test_deadman_stop_waits_two_seconds_for_a_hung_thread_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: None)
    hung = HungThread()
    deadman._thread = hung  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="device.deadman"):
        deadman.stop()
    assert hung.joins == [2.0]
    assert caplog.messages == ["deadman thread did not stop within 2.0 s"]
    assert deadman._thread is None


def test_deadman_start_twice_says_why() -> None:
    deadman = Deadman(timeout_s=0.5, on_trip=lambda: None)
    deadman.start()
    try:
        with pytest.raises(RuntimeError, match=r"^the deadman is already started$"):
            deadman.start()
    finally:
        deadman.stop()


def test_deadman_zero_timeout_is_refused_for_itself() -> None:
    with pytest.raises(ValueError, match=r"^timeout_s must be above 0 s, got 0.0$"):
        Deadman(timeout_s=0.0, on_trip=lambda: None)


def test_motor_stall_on_a_sample_without_the_motor_outputs() -> None:
    """A sample that does not carry a motor's output counts it as off: only the stall current judges."""

    def sample_at(t: float) -> Sample:
        sample = make_sample(t, current={"foot_rollers": 2.5})
        return dataclasses.replace(sample, outputs={"relay": True})

    found = first_trip(MotorChecks(Safety()), sample_at, 2.0)
    assert found is not None and found[0] == pytest.approx(0.5)



def test_power_rail_settle_boundary_is_inclusive_within_eps() -> None:
    """``RAIL_SETTLE_S`` counts as reached at ``RAIL_SETTLE_S - EPS`` (times are float sums of steps)."""
    settle = RAIL_SETTLE_S - EPS
    checks = PowerChecks(Safety())
    assert checks.check(make_sample(0.0, rail_v=7.0), NO_HEAT) is None  # relay off from 0 s
    assert checks.check(make_sample(settle, rail_v=7.0), NO_HEAT) is None  # settled: wrong from here
    trip = checks.check(make_sample(settle + settle, rail_v=7.0), NO_HEAT)
    assert trip is not None and trip[0] is FaultCode.RELAY_WELDED


def test_motor_stall_boundary_is_inclusive_within_eps_and_the_message_counts_from_the_start() -> None:
    checks = MotorChecks(Safety())
    stall = motors_at((2.5, 0.8))
    assert checks.check(motors_at((0.5, 0.8))(0.0), NO_HEAT) is None
    assert checks.check(stall(0.0), NO_HEAT) is None
    trip = checks.check(stall(STALL_S - EPS), NO_HEAT)
    assert trip is not None
    later = MotorChecks(Safety())
    assert later.check(stall(1.0), NO_HEAT) is None
    assert later.check(stall(1.25), NO_HEAT) is None
    trip = later.check(stall(1.5), NO_HEAT)
    assert trip is not None and trip[1].startswith("foot_rollers drew 2.50 A at duty 0.80 for 0.50 s ")


def test_hardware_relay_off_after_the_relay_dropped_under_it_turns_every_driver_off(rig: SimRig) -> None:
    hw = rig.hardware
    hw.apply(BUSY)
    hw.relay.drop()  # e.g. a brown-out of the relay coil: the drivers still drive their pins
    assert "pump" in pins_on(rig)
    hw.apply(Command())  # relay off: everything off, not only what the relay cuts
    assert pins_on(rig) == set()


def test_hardware_apply_after_a_relay_drop_that_failed_writes_everything_again(
    rig: SimRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    hw = rig.hardware
    hw.apply(BUSY)

    def stuck() -> None:
        raise RuntimeError("relay driver wedged")

    monkeypatch.setattr(hw.relay, "drop", stuck)
    hw.apply(Command())  # safe_off: every other output off, the relay stays on
    assert pins_on(rig) == {"relay"}
    hw.apply(BUSY)  # nothing is taken as already applied
    assert hw.pump.duty == 1.0 and hw.heater.duty == 0.8 and hw.valves["foot"].is_connected


def test_hardware_apply_after_a_write_that_failed_midway_writes_everything_again(
    rig: SimRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    hw = rig.hardware
    run_pump = hw.pump.run

    def failing(duty: float = 1.0) -> None:
        raise RuntimeError("pump driver refused")

    monkeypatch.setattr(hw.pump, "run", failing)
    with pytest.raises(RuntimeError):
        hw.apply(BUSY)  # the relay and the valves written, the pump not
    monkeypatch.setattr(hw.pump, "run", run_pump)
    hw.apply(BUSY)  # nothing is taken as already applied
    assert hw.pump.duty == 1.0 and hw.heater.duty == 0.8


def test_hardware_apply_after_a_safe_off_whose_relay_drop_failed_writes_everything(
    rig: SimRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    hw = rig.hardware
    hw.apply(BUSY)

    def stuck() -> None:
        raise RuntimeError("relay driver wedged")

    monkeypatch.setattr(hw.relay, "drop", stuck)
    hw.safe_off()  # the deadman's path: straight to safe_off, the relay stays on
    hw.apply(BUSY)
    assert hw.pump.duty == 1.0 and hw.heater.duty == 0.8 and hw.valves["ankle"].is_connected


# -- air (device/safety/air.py) --------------------------------------------------------------------


def air_trip(
    sample_at: Callable[[float], Sample], seconds: float, expect: Expectations = NO_HEAT
) -> tuple[float, FaultCode, str] | None:
    """Run the air rules alone every 50 ms (no setpoints unless given); the first trip."""
    checks = AirChecks(Safety())
    for i in range(round(seconds / DT)):
        t = i * DT
        trip = checks.check(sample_at(t), expect)
        if trip is not None:
            return t, trip[0], trip[1]
    return None


def foot_sample(t: float, *, pump: float, mmhg: float) -> Sample:
    return make_sample(t, pressure={"foot": mmhg}, outputs={"relay": True, "pump": pump, "valve_foot": True})


def test_air_fill_window_starts_when_the_pump_starts_not_at_the_hold_before() -> None:
    """Holding (pump off, zone connected), then pumping without a rise: judged 2 s after the pump started."""
    found = air_trip(lambda t: foot_sample(t, pump=0.0 if t < 1.0 - 1e-9 else 1.0, mmhg=20.0), 6.0)
    assert found is not None
    assert found[:2] == (pytest.approx(3.0), FaultCode.PRESSURE_NOT_RISING)


def test_air_fill_is_not_judged_while_a_connected_zone_holds_with_the_pump_off() -> None:
    def sample_at(t: float) -> Sample:
        if t < 1.0 - 1e-9:
            return foot_sample(t, pump=1.0, mmhg=20.0 + 10.0 * t)  # filling well
        return foot_sample(t, pump=0.0, mmhg=30.0)  # holding

    assert air_trip(sample_at, 8.0) is None


@pytest.mark.parametrize(("mmhg", "at"), [(120.0, 0.4), (131.0, 0.25), (60.0, 1.45), (20.0, 2.0)])
def test_air_fill_window_shrinks_near_the_trip(mmhg: float, at: float) -> None:
    """A reading that does not rise while pumping: judged after the time the strongest pump needs to
    carry the zone from the reading to its trip + 5 mmHg (at least 0.25 s, at most ``not_rising_s``)."""
    # foot: (135 + 5 - p) / (48 / 0.85) s: 120 -> 0.35 s (next sample 0.4), 131 -> 0.16 (0.25 floor),
    # 60 -> 1.42 s (next sample 1.45), 20 -> 2.1 (2.0 cap)
    found = air_trip(lambda t: foot_sample(t, pump=1.0, mmhg=mmhg), 4.0)
    assert found is not None
    assert found[:2] == (pytest.approx(at), FaultCode.PRESSURE_NOT_RISING)


def test_air_fill_reference_is_the_reading_one_window_ago() -> None:
    """A jump right after the start, then flat: the reading one window back is the reference."""
    # at 26 mmHg the foot's window is the full 2 s: at 2.05 s the reference is the 26 mmHg reading of
    # 0.05 s, no gain: trips (the 20 mmHg reading of 0 s would still show a gain of 6)
    found = air_trip(lambda t: foot_sample(t, pump=1.0, mmhg=20.0 if t < 0.01 else 26.0), 4.0)
    assert found is not None
    assert found[:2] == (pytest.approx(2.05), FaultCode.PRESSURE_NOT_RISING)


def hand_off_sample(t: float, foot: float, ankle: float) -> Sample:
    return make_sample(
        t, pressure={"foot": foot, "ankle": ankle},
        outputs={"relay": True, "pump": 1.0, "valve_foot": True, "valve_ankle": True},
    )


PRESS_ANKLE = Expectations(heat_target_c=None, setpoints_mmhg={"ankle": 60.0})


def test_air_hand_off_with_the_pressed_zone_gaining_its_share_does_not_trip() -> None:
    # per 2 s: foot 2 mmHg, ankle 2 mmHg = 3.3 foot volumes; needed 5 in all, the pressed ankle's share 2.5
    found = air_trip(lambda t: hand_off_sample(t, 20.0 + 1.0 * t, 20.0 + 1.0 * t), 6.0, PRESS_ANKLE)
    assert found is None


def test_air_hand_off_with_only_the_donor_filling_trips() -> None:
    found = air_trip(lambda t: hand_off_sample(t, 20.0 + 4.0 * t, 20.0), 6.0, PRESS_ANKLE)
    assert found is not None
    assert found[:2] == (pytest.approx(2.0), FaultCode.PRESSURE_NOT_RISING)


def zone_sample(
    t: float, pressure: dict[Zone, float], connected: tuple[Zone, ...], pump: float = 0.0
) -> Sample:
    outputs: dict[str, float | bool] = {"relay": True, "pump": pump}
    outputs.update({f"valve_{z}": True for z in connected})
    return make_sample(t, pressure=pressure, outputs=outputs)


def test_air_compression_cap_counts_from_the_connect_and_names_the_time() -> None:
    checks = AirChecks(Safety())
    assert checks.check(zone_sample(0.0, {}, ()), NO_HEAT) is None
    assert checks.check(zone_sample(1.0, {"foot": 40.0}, ("foot",)), NO_HEAT) is None  # pressed from 1 s
    assert checks.check(zone_sample(60.9, {"foot": 40.0}, ("foot",)), NO_HEAT) is None
    trip = checks.check(zone_sample(61.0, {"foot": 40.0}, ("foot",)), NO_HEAT)
    assert trip == (
        FaultCode.COMPRESSION_TOO_LONG, "foot zone connected (pressed) for 60.0 s without venting (limit 60 s)"
    )


def test_air_fall_rule_skips_a_second_pass_at_the_same_time() -> None:
    checks = AirChecks(Safety())
    assert checks.check(zone_sample(1.0, {"foot": 50.0}, ("foot",)), NO_HEAT) is None
    assert checks.check(zone_sample(1.0, {"foot": 44.0}, ("foot",)), NO_HEAT) is None  # no time passed


def setpoint_trip(
    pressure_at: Callable[[float], dict[Zone, float]],
    setpoints_at: Callable[[float], dict[Zone, float]],
    seconds: float,
) -> tuple[float, FaultCode, str] | None:
    """The air rules with every zone of the setpoints connected, pump off; the first trip."""
    checks = AirChecks(Safety())
    for i in range(round(seconds / DT)):
        t = i * DT
        setpoints = setpoints_at(t)
        expect = Expectations(heat_target_c=None, setpoints_mmhg=setpoints)
        trip = checks.check(zone_sample(t, pressure_at(t), tuple(setpoints)), expect)
        if trip is not None:
            return t, trip[0], trip[1]
    return None


def test_air_setpoint_timer_restarts_when_the_zone_reaches_it() -> None:
    found = setpoint_trip(
        lambda t: {"foot": 20.0}, lambda t: {"foot": 20.0 if 4.0 <= t < 5.0 else 60.0}, 20.0
    )
    assert found == (pytest.approx(15.0), FaultCode.PRESSURE_NOT_RISING,
                     "foot zone at 20.0 mmHg, setpoint 60.0 mmHg not reached in 10.0 s (limit 10 s)")


def test_air_setpoint_timers_are_per_zone() -> None:
    def setpoints_at(t: float) -> dict[Zone, float]:
        return {"foot": 60.0 if t < 4.0 else 20.0, "ankle": 20.0 if t < 3.0 else 60.0}

    found = setpoint_trip(lambda t: {"foot": 20.0, "ankle": 20.0}, setpoints_at, 20.0)
    assert found is not None
    assert found[0] == pytest.approx(13.0) and found[2].startswith("ankle zone at 20.0 mmHg")


def test_air_setpoint_judges_any_positive_setpoint_only() -> None:
    # a reading below zero (a drifting sensor: the vented rule's business) never misses a zero setpoint
    assert setpoint_trip(lambda t: {"foot": -6.0}, lambda t: {"foot": 0.0}, 12.0) is None
    found = setpoint_trip(lambda t: {"foot": -4.5}, lambda t: {"foot": 1.0}, 12.0)
    assert found is not None and found[0] == pytest.approx(10.0)


def test_air_valve_stuck_counts_from_the_vent_and_a_reading_at_the_zero_band_is_vented() -> None:
    def stuck(t: float) -> Sample:
        return zone_sample(t, {"foot": 50.0}, ("foot",) if t < 1.0 - 1e-9 else ())

    found = air_trip(stuck, 6.0)
    assert found is not None
    assert found[:2] == (pytest.approx(4.0), FaultCode.VALVE_STUCK)
    assert found[2] == (
        "foot zone still at 50.0 mmHg 3.0 s after its valve vented (must be below 10 mmHg within 3 s)"
    )
    assert air_trip(lambda t: zone_sample(t, {"foot": -5.0}, ()), 6.0) is None


def test_air_fill_gaining_exactly_the_needed_rise_does_not_trip() -> None:
    # 2.5 mmHg/s: 5 mmHg in the 2 s window, exactly the rise needed
    assert air_trip(lambda t: foot_sample(t, pump=1.0, mmhg=20.0 + 2.5 * t), 2.05) is None


def test_air_fill_message_names_the_zones_and_their_readings() -> None:
    found = air_trip(lambda t: hand_off_sample(t, 20.0 + 4.0 * t, 20.0), 6.0, PRESS_ANKLE)
    assert found is not None
    assert found[2] == (
        "foot+ankle gained 8.0 mmHg (foot volumes) in 2.00 s of pumping (needs 5.0: 5 per 2 s); "
        "foot 20.0 -> 28.0, ankle 20.0 -> 20.0 mmHg"
    )


def test_air_a_sample_without_the_pump_output_counts_the_pump_off() -> None:
    def sample_at(t: float) -> Sample:
        sample = zone_sample(t, {"foot": 20.0}, ("foot",))
        return dataclasses.replace(sample, outputs={"relay": True, "valve_foot": True})

    assert air_trip(sample_at, 12.0) is None


def test_air_pump_overrun_counts_from_the_pump_start() -> None:
    found = air_trip(lambda t: zone_sample(t, {}, (), pump=0.0 if t < 1.0 - 1e-9 else 1.0), 15.0)
    assert found == (
        pytest.approx(11.0), FaultCode.PUMP_OVERRUN, "pump on continuously for 10.0 s (limit 10 s)"
    )


def test_air_fall_rule_restarts_after_a_missing_reading() -> None:
    def sample_at(t: float) -> Sample:
        foot = 50.0 if t < 0.01 else (None if t < 0.06 else 25.0)
        return zone_sample(t, {"foot": foot}, ("foot",))  # type: ignore[dict-item]

    assert air_trip(sample_at, 1.0) is None  # 50 -> (none) -> 25 is not judged as a fall


def test_air_a_missing_reading_does_not_skip_the_other_zones() -> None:
    pressure: dict[Zone, float | None] = {"foot": None, "ankle": 96.0}
    found = air_trip(lambda t: zone_sample(t, pressure, ("ankle",)), 1.0)  # type: ignore[arg-type]
    assert found is not None and found[:2] == (0.0, FaultCode.OVER_PRESSURE)


def test_air_setpoint_absent_means_zero() -> None:
    """A connected zone with no setpoint (holding) is not judged against one, whatever it reads."""
    assert air_trip(lambda t: zone_sample(t, {"foot": -4.5}, ("foot",)), 12.0) is None


def test_air_hand_off_judges_any_positive_setpoint_and_the_share_itself_is_enough() -> None:
    press_low = Expectations(heat_target_c=None, setpoints_mmhg={"ankle": 1.0})
    found = air_trip(lambda t: hand_off_sample(t, 20.0 + 4.0 * t, 20.0), 6.0, press_low)
    assert found is not None and found[:2] == (pytest.approx(2.0), FaultCode.PRESSURE_NOT_RISING)
    # the pressed foot gains exactly its share (2.5 of the 5 needed in 2 s), the ankle gives the rest
    press_foot = Expectations(heat_target_c=None, setpoints_mmhg={"foot": 60.0})
    assert air_trip(lambda t: hand_off_sample(t, 20.0 + 1.25 * t, 20.0 + 1.0 * t), 2.05, press_foot) is None


# -- the supervisor's latch and reset (device/safety/supervisor.py) ----------------------------------


def make_supervisor() -> Supervisor:
    return Supervisor(Safety(), thermistors=["pad_1", "pad_2"], wall_clock=lambda: 1_700_000_000.0)


def latched_over_temperature() -> Supervisor:
    supervisor = make_supervisor()
    fault = supervisor.check(make_sample(0.0, temp=46.0), NO_HEAT)
    assert fault is not None and fault.code is FaultCode.OVER_TEMPERATURE
    return supervisor


def test_supervisor_reset_reasons_name_the_missing_readings_and_what_is_on() -> None:
    supervisor = latched_over_temperature()
    no_pad = make_sample(1.0, temps={"pad_1": None, "pad_2": 30.0}, errors={"pad_1": "open circuit"})
    assert supervisor.reset(no_pad) == "thermistor pad_1 still has no reading: open circuit"
    no_pad = make_sample(1.0, temps={"pad_1": None, "pad_2": 30.0})
    assert supervisor.reset(no_pad) == "thermistor pad_1 still has no reading: no value"
    no_zone = make_sample(1.0, pressure={"calf": None}, errors={"calf": "stuck at the rail"})
    assert supervisor.reset(no_zone) == "pressure sensor calf still has no reading: stuck at the rail"
    assert supervisor.reset(make_sample(1.0, pressure={"calf": None})) == (
        "pressure sensor calf still has no reading: no value"
    )
    on = make_sample(1.0, outputs={"relay": True, "pump": 1.0})
    assert supervisor.reset(on) == "outputs still on: pump, relay"


def test_supervisor_reset_edges_at_the_trip_the_sensor_range_and_the_vented_level() -> None:
    supervisor = make_supervisor()  # a fault of no family: only the checks every reset needs
    supervisor.latch(supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "silent", t=0.0))
    assert supervisor.reset(make_sample(1.0, pressure={"foot": 10.0})) == (
        "foot zone still at 10.0 mmHg, not vented below 10 mmHg"
    )
    assert supervisor.reset(make_sample(1.0, temps={"pad_1": -10.0, "pad_2": 45.0})) is None
    assert supervisor.latched is None


def test_supervisor_logs_latch_refusal_and_reset(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = make_supervisor()

    def broken() -> None:
        raise RuntimeError("driver gone")

    supervisor.trip_outputs = broken
    with caplog.at_level(logging.INFO, logger="device.safety.supervisor"):
        supervisor.latch(supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "loop silent", t=0.0))
        supervisor.reset(make_sample(1.0, outputs={"pump": 1.0}))
        supervisor.reset(make_sample(2.0))
    assert caplog.messages == [
        "forcing the outputs off failed",
        "fault latched: CONTROL_LOOP_STALL: loop silent",
        "reset of CONTROL_LOOP_STALL refused: outputs still on: pump",
        "fault CONTROL_LOOP_STALL reset",
    ]


def test_supervisor_reset_reports_a_fault_latched_meanwhile() -> None:
    other = Fault(code=FaultCode.MOTOR_STALL, message="stall", since=0.0, t=0.0)
    for meanwhile, reason in ((other, "MOTOR_STALL"), (None, "none")):
        supervisor = latched_over_temperature()

        def persisting(code: FaultCode, sample: Sample, s: Supervisor = supervisor,
                       f: Fault | None = meanwhile) -> str | None:
            s._latched = f  # another thread reset it and latched another, or only reset it
            return None

        supervisor._persisting = persisting  # type: ignore[method-assign]
        assert supervisor.reset(make_sample(1.0)) == f"another fault latched meanwhile: {reason}"


def test_supervisor_check_after_a_reset_reports_nothing() -> None:
    supervisor = make_supervisor()
    supervisor.latch(supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "silent", t=0.0))  # unreported
    assert supervisor.reset(make_sample(1.0)) is None
    assert supervisor.check(make_sample(1.05), NO_HEAT) is None


def test_supervisor_without_outputs_latches_quietly_and_doubts_until_judged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = make_supervisor()
    assert supervisor.doubt == "no sample judged yet"
    with caplog.at_level(logging.INFO, logger="device.safety.supervisor"):
        supervisor.latch(supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "silent", t=0.0))
    assert caplog.messages == ["fault latched: CONTROL_LOOP_STALL: silent"]  # the default hook does nothing


def test_supervisor_doubt_follows_each_sample() -> None:
    supervisor = make_supervisor()
    for i in range(21):  # the motors off for 1 s: a current now is the sense, not a coasting roller
        supervisor.check(make_sample(i * 0.05, current={"foot_rollers": 0.5}), NO_HEAT)
    assert supervisor.doubt == "foot_rollers draws 0.50 A while off (at most 0.3 A at rest)"
    supervisor.check(make_sample(1.05), NO_HEAT)
    assert supervisor.doubt is None


def test_supervisor_needs_a_thermistor_and_says_so() -> None:
    with pytest.raises(ValueError, match=r"^thermistors: the supervisor needs at least one thermistor name$"):
        Supervisor(Safety(), thermistors=[])


# -- heat (device/safety/heat.py) ---------------------------------------------------------------------


def heat_checks() -> HeatChecks:
    return HeatChecks(Safety(), Heater(), ["pad_1", "pad_2"])


def heat_at(
    heat: HeatChecks, t: float, pad_1: float | None, pad_2: float | None = 30.0, *,
    duty: float = 0.0, target: float | None = None,
) -> Trip | None:
    """One pass of the heat family as the supervisor runs it: the plausible readings, then ``check``."""
    temps = {"pad_1": pad_1, "pad_2": pad_2}
    heat.valid = [(name, value) for name, value in temps.items() if value is not None]
    sample = make_sample(t, temps=temps, outputs={"relay": True, "heater": duty} if duty else {})
    return heat.check(sample, Expectations(heat_target_c=target))


def exactly_after(start: float, span: float) -> float:
    """A time ``t`` with ``t - start == span`` to the last bit (rule edges that carry the EPS slack)."""
    t = start + span
    while t - start < span:
        t = math.nextafter(t, math.inf)
    while t - start > span:
        t = math.nextafter(t, -math.inf)
    assert t - start == span
    return t


def test_beside_prints_two_decimals_only_where_one_would_equal_the_limit() -> None:
    assert beside(45.04, 45.0) == "45.04"
    assert beside(46.0, 45.0) == "46.0"


def test_heat_runaway_at_exactly_the_rise_and_its_message() -> None:
    heat = heat_checks()
    assert heat_at(heat, 5.0, 30.0) is None
    assert heat_at(heat, 15.0, 30.5) == (
        FaultCode.HEATER_RUNAWAY,
        "thermistor pad_1 rose 0.50 °C in 10.0 s (30.0 -> 30.5 °C) with the heater duty at 0 "
        "(limit 0.5 °C per 10 s)",
    )


def test_heat_runaway_window_edge_is_inclusive_within_eps() -> None:
    heat = heat_checks()
    heat_at(heat, 0.0, 29.9)
    heat_at(heat, EPS, 30.0)  # exactly at the window's start when the last sample comes
    trip = heat_at(heat, 10.0, 30.5)
    assert trip is not None and trip[1].startswith("thermistor pad_1 rose 0.50 °C in 10.0 s (30.0 -> 30.5 °C)")


def test_heat_over_target_picks_the_hottest_reading_not_the_last_name() -> None:
    heat = heat_checks()
    assert heat_at(heat, 0.0, 43.0, 39.0, target=40.0) is None
    assert heat_at(heat, 10.0, 43.0, 39.0, target=40.0) == (
        FaultCode.HEATER_OVER_TARGET,
        "thermistor pad_1 read 43.0 °C, above target 40.0 + 2.0 °C for 10.0 s (limit 10 s)",
    )


def test_heat_over_target_window_restarts_after_no_target_or_a_pad_under_the_limit() -> None:
    for before in ({"pad_1": 43.0, "target": None}, {"pad_1": 41.0, "target": 40.0}):
        heat = heat_checks()
        assert heat_at(heat, 0.0, before["pad_1"], duty=0.1, target=before["target"]) is None
        times = [2.0 + i * 0.5 for i in range(21)]
        trips = [heat_at(heat, t, 43.0, duty=0.1, target=40.0) for t in times]
        assert trips[:-1] == [None] * 20 and trips[-1] is not None, before  # 10 s from t = 2


def test_heat_over_target_window_counts_from_its_own_start_and_its_edge_is_inclusive() -> None:
    heat = heat_checks()
    assert heat_at(heat, 5.0, 43.0, target=40.0) is None
    assert heat_at(heat, 14.5, 43.0, target=40.0) is None
    trip = heat_at(heat, 15.0, 43.0, target=40.0)
    assert trip is not None and trip[1].endswith("for 10.0 s (limit 10 s)")
    heat = heat_checks()
    assert heat_at(heat, 0.0, 43.0, target=40.0) is None
    assert heat_at(heat, exactly_after(0.0, 10.0 - EPS), 43.0, target=40.0) is not None


def test_heat_over_target_cooling_by_exactly_the_step_does_not_restart_the_window() -> None:
    heat = heat_checks()
    heat_at(heat, 0.0, 43.0, target=40.0)
    assert 43.0 - 0.1 == 42.9  # the pad cooled by exactly OVER_TARGET_COOLING_C: still "holding"
    assert heat_at(heat, 5.0, 42.9, target=40.0) is None
    assert heat_at(heat, 10.0, 42.9, target=40.0) is not None


def balance_run(heat: HeatChecks, start: float, seconds: float, reading: float, duty: float) -> float | None:
    """Heat at ``duty`` with both thermistors flat at ``reading``; the time of the HEAT_BALANCE trip."""
    for i in range(round(seconds / DT)):
        t = start + i * DT
        trip = heat_at(heat, t, reading, reading, duty=duty)
        if trip is not None:
            assert trip[0] is FaultCode.HEAT_BALANCE
            return t
    return None


def test_heat_balance_trips_when_the_pad_model_leads_flat_readings_by_the_margin_for_five_seconds() -> None:
    # Surroundings: the first reading (20 °C at power-on) less 3. With both thermistors flat at 20 °C and
    # the heater at full duty, the model (0.0595 * 0.8 °C/s in, 0.0025/s times its lead over 17 °C out:
    # m(t) = 36.04 - 16.04 exp(-0.0025 t)) leads them by 3 °C after ln(16.04 / 13.04) / 0.0025 = 82.8 s;
    # HEAT_BALANCE 5 s later. (A pass integrates its duty over the time since the pass before: the first
    # pass at full duty, at 1 s, counts from 0 s.)
    heat = heat_checks()
    heat_at(heat, 0.0, 20.0, 20.0)
    tripped = balance_run(heat, 1.0, 120.0, 20.0, 1.0)
    settle = math.log(16.04 / 13.04) / 0.0025
    assert tripped is not None and tripped == pytest.approx(settle + 5.0, abs=0.3)


def test_heat_balance_surroundings_are_lowered_only_at_rest() -> None:
    heat = heat_checks()
    heat_at(heat, 0.0, 20.0, 20.0)
    heat_at(heat, 1.0, 30.0, 30.0)  # warmer at rest: not the surroundings
    assert heat._surroundings_c == 17.0
    heat_at(heat, 2.0, 12.0, 12.0, duty=1.0)  # colder while heating: not the surroundings either
    assert heat._surroundings_c == 17.0
    heat_at(heat, 3.0, 14.0, 14.0)
    assert heat._surroundings_c == 11.0


def test_heat_balance_restarts_after_a_gap_in_the_readings() -> None:
    heat = heat_checks()
    heat_at(heat, 0.0, 34.0, 34.0)
    heat_at(heat, 1.0, 30.0, 30.0, duty=1.0)  # the model leads by 4 °C: the window starts
    heat_at(heat, 2.0, None, None, duty=1.0)  # no plausible reading: model and window restart
    assert balance_run(heat, 3.0, 4.0, 30.0, 1.0) is None  # from the readings: no lead yet
    heat = heat_checks()
    heat_at(heat, 0.0, 34.0, 34.0)
    heat.cleared()  # likewise after a reset
    assert balance_run(heat, 1.0, 4.0, 30.0, 1.0) is None


def test_heat_balance_window_counts_from_its_start_and_its_edge_is_inclusive() -> None:
    heat = heat_checks()
    heat_at(heat, 0.0, 34.0, 34.0)
    assert heat_at(heat, 1.0, 30.0, 30.0, duty=1.0) is None  # the lead starts here
    for t in (2.0, 4.0, 5.5):
        assert heat_at(heat, t, 30.0, 30.0, duty=1.0) is None, t
    trip = heat_at(heat, exactly_after(1.0, 5.0 - EPS), 30.0, 30.0, duty=1.0)
    assert trip is not None and trip[0] is FaultCode.HEAT_BALANCE
    heat = heat_checks()
    heat_at(heat, 0.0, 34.0, 34.0)
    heat_at(heat, 2.0, 30.0, 30.0, duty=1.0)
    trip = heat_at(heat, 7.0, 30.0, 30.0, duty=1.0)
    assert trip is not None and "read at most 30.0 °C for 5.0 s (margin 3.0 °C)" in trip[1]


def approach(heat: HeatChecks, times: list[float], pad: float | list[float], duty: float = 1.0,
             target: float | None = 40.0) -> None:
    """Passes at ``times`` with both pads at ``pad`` (one value, or one per time)."""
    values = pad if isinstance(pad, list) else [pad] * len(times)
    for t, value in zip(times, values, strict=True):
        assert heat_at(heat, t, value, value, duty=duty, target=target) is None


def warned(start: float = 0.0) -> HeatChecks:
    """A heat family whose pad stayed at 30 °C for 60 s of full heating: the warning stands."""
    heat = heat_checks()
    approach(heat, [start, start + 30.0, start + 60.0], 30.0)
    assert heat.warning is not None
    return heat


def test_heat_unreachable_warning_message_and_its_edge() -> None:
    heat = warned(start=10.0)
    assert heat.warning == (
        "the pad cannot reach its target: it rose only 0.00 °C in 60 s (30.0 -> 30.0 °C, target 40.0 °C); "
        "heat still works at what it reaches"
    )
    heat = heat_checks()
    approach(heat, [0.0, 30.0, 60.0 - EPS], 30.0)
    assert heat.warning is not None  # the deadline is inclusive within EPS


def test_heat_unreachable_is_not_watched_with_the_heater_off_or_holding_at_the_band() -> None:
    heat = heat_checks()
    approach(heat, [0.0, 60.0, 120.0], 30.0, duty=0.0)
    assert heat.warning is None
    heat = heat_checks()
    approach(heat, [0.0, 60.0, 120.0], 38.0)  # exactly target - NOT_HEATING_BAND_C: holding, not approaching
    assert heat.warning is None


def test_heat_unreachable_clears_when_the_pad_reaches_the_band_or_the_heat_goes() -> None:
    for t, pad, duty, target in ((61.0, 38.0, 0.0, 40.0), (61.0, 39.0, 0.0, 40.0), (61.0, 30.0, 1.0, None)):
        heat = warned()
        approach(heat, [t], pad, duty=duty, target=target)
        assert heat.warning is None, (pad, duty, target)


def test_heat_unreachable_stays_across_a_pause_of_the_heater_and_clears_on_a_gain() -> None:
    heat = warned()
    approach(heat, [61.0], 30.0, duty=0.0)  # the heater paused below the band: the warning stands
    approach(heat, [62.0], 30.0)  # heating again from the same place
    assert heat.warning is not None
    approach(heat, [63.0, 64.0], [30.5, 31.0])  # a gain of not_heating_gain_c
    assert heat.warning is None


def test_heat_unreachable_a_gain_of_exactly_the_goal_restarts_the_window() -> None:
    heat = heat_checks()
    approach(heat, [0.0, 30.0, 61.0], [30.0, 31.0, 31.0])
    assert heat.warning is None  # from 30 s the pad has until 90 s to gain again


def test_heat_cleared_restarts_the_approach_warning_and_target() -> None:
    heat = warned()
    heat.trip_target_c = 40.0
    heat.cleared()
    assert heat.warning is None and heat.trip_target_c is None
    approach(heat, [61.0, 62.0], 30.0)  # watched again from here, without error
    assert heat.persisting(FaultCode.HEATER_OVER_TARGET, make_sample(63.0, temp=45.0)) is None


def test_heat_persisting_without_readings_or_a_known_target_says_nothing() -> None:
    heat = heat_checks()
    no_readings = make_sample(0.0, temps={"pad_1": None, "pad_2": None})
    for code in (FaultCode.OVER_TEMPERATURE, FaultCode.HEATER_OVER_TARGET, FaultCode.HEATER_RUNAWAY):
        assert heat.persisting(code, no_readings) is None, code
    # a HEATER_OVER_TARGET restored after a restart has no target: the other reset checks decide
    assert heat.persisting(FaultCode.HEATER_OVER_TARGET, make_sample(0.0, temp=44.0)) is None


def test_heat_persisting_over_target_until_the_pad_is_at_target_plus_margin() -> None:
    heat = heat_checks()
    heat.trip_target_c = 40.0
    assert heat.persisting(FaultCode.HEATER_OVER_TARGET, make_sample(0.0, temp=42.0)) is None
    assert heat.persisting(FaultCode.HEATER_OVER_TARGET, make_sample(0.0, temp=42.1)) == (
        "the pad still reads 42.1 °C, above target + margin 42.0 °C"
    )
    assert heat.persisting(FaultCode.OVER_TEMPERATURE, make_sample(0.0, temp=42.0)) is None


@pytest.mark.parametrize(
    ("readings", "message"),
    [
        ([30.0, 30.1, 30.3], "thermistor pad_1 still rising with the heater off: +0.30 °C in 2.0 s"),
        ([30.0, 30.3], "thermistor pad_1 still rising with the heater off: +0.30 °C in 1.0 s"),
        ([30.0, 30.25], "thermistor pad_1 still rising with the heater off: +0.25 °C in 1.0 s"),
        ([30.0, 30.2], None),  # below half the trip rate
        ([30.0, 30.0, 30.0], None),
    ],
)
def test_heat_persisting_runaway_while_still_rising_at_half_the_rate(
    readings: list[float], message: str | None
) -> None:
    heat = heat_checks()
    for i, value in enumerate(readings):
        heat_at(heat, 5.0 + i, value, 30.0)
    assert heat.persisting(FaultCode.HEATER_RUNAWAY, make_sample(8.0)) == message
    assert heat.persisting(FaultCode.HEATER_OVER_TARGET, make_sample(8.0)) is None  # runaway's rule only


# -- sensors and bus (device/safety/sensors.py) -------------------------------------------------------


def sensor_checks() -> SensorChecks:
    return SensorChecks(Safety(), ["pad_1", "pad_2"])


def sensors_at(checks: SensorChecks, t: float, pad_1: float | None, pad_2: float | None = 30.0,
               **extra: Any) -> Trip | None:
    return checks.check(make_sample(t, temps={"pad_1": pad_1, "pad_2": pad_2}, **extra), NOTHING_EXPECTED)


def test_sensors_disagreement_names_the_hot_and_the_cold_thermistor_by_their_readings() -> None:
    checks = sensor_checks()
    for i in range(110):
        trip = sensors_at(checks, 5.0 + i * 0.05, 40.0, 30.0)
        if trip is not None:
            break
    assert trip == (
        FaultCode.TEMP_SENSOR_FAULT,
        "thermistors disagree: pad_1 40.0 °C vs pad_2 30.0 °C for 5.0 s (limit 3.0 °C for 5.0 s)",
    )
    assert 5.0 + i * 0.05 == pytest.approx(10.0)


def test_sensors_disagreement_window_restarts_after_agreement_or_a_missing_pad_and_its_edge() -> None:
    for before in ((31.0, 30.0), (None, 30.0)):
        checks = sensor_checks()
        assert sensors_at(checks, 0.0, *before) is None
        assert sensors_at(checks, 3.0, 40.0, 30.0) is None  # 3 °C/s: no jump; the window starts
        assert sensors_at(checks, 7.95, 40.0, 30.0) is None
        assert sensors_at(checks, exactly_after(3.0, 5.0 - EPS), 40.0, 30.0) is not None, before


def test_sensors_pressure_reading_count_restarts_at_zero_and_names_the_error() -> None:
    checks = sensor_checks()
    calf_gone = {"pressure": {"calf": None}}
    assert checks.check(make_sample(0.0, **calf_gone), NOTHING_EXPECTED) is None
    assert checks.check(make_sample(0.05), NOTHING_EXPECTED) is None  # a reading: the count restarts
    assert checks.check(make_sample(0.1, **calf_gone), NOTHING_EXPECTED) is None
    assert checks.check(make_sample(0.15, **calf_gone), NOTHING_EXPECTED) is None
    assert checks.check(make_sample(0.2, **calf_gone), NOTHING_EXPECTED) == (
        FaultCode.SENSOR_BUS_FAULT, "pressure sensor calf: no reading for 3 samples")
    checks = sensor_checks()
    for i in range(3):
        trip = checks.check(make_sample(i * 0.05, errors={"calf": "stuck at the rail"}, **calf_gone),
                            NOTHING_EXPECTED)
    assert trip == (FaultCode.SENSOR_BUS_FAULT, "pressure sensor calf: stuck at the rail for 3 samples")


def test_sensors_thermistor_range_is_inclusive_and_a_bad_one_does_not_hide_the_other() -> None:
    checks = sensor_checks()
    for i in range(3):
        assert sensors_at(checks, i * 0.05, 80.0, 78.0) is None  # sensor_max_c itself is a reading
    assert checks.valid == [("pad_1", 80.0), ("pad_2", 78.0)]
    checks = sensor_checks()
    sensors_at(checks, 0.0, None, 31.0)
    assert checks.valid == [("pad_2", 31.0)]
    for i in range(1, 3):
        trip = sensors_at(checks, i * 0.05, None, 31.0)
    assert trip == (
        FaultCode.TEMP_SENSOR_FAULT, "thermistor pad_1: no reading for 3 samples (valid range -10..80 °C)")


def test_sensors_stale_reading_edge_and_a_pad_that_never_read() -> None:
    checks = sensor_checks()
    sensors_at(checks, 0.0, 30.0)
    assert sensors_at(checks, exactly_after(0.0, 1.0 + EPS), None) is None
    assert sensors_at(checks, 1.1, None) == (
        FaultCode.TEMP_SENSOR_FAULT, "thermistor pad_1: last good reading 1.10 s old (limit 1.0 s)")
    checks = sensor_checks()  # never a good reading: stale from the first sample seen
    assert sensors_at(checks, 0.0, None) is None
    assert sensors_at(checks, 1.1, None) == (
        FaultCode.TEMP_SENSOR_FAULT, "thermistor pad_1: last good reading 1.10 s old (limit 1.0 s)")


def test_sensors_jump_rate_edges_and_message() -> None:
    checks = sensor_checks()
    sensors_at(checks, 0.0, 30.0)
    assert sensors_at(checks, 0.5, 32.5) is None  # exactly the limit rate: allowed
    checks = sensor_checks()
    sensors_at(checks, 0.0, 30.0)
    assert sensors_at(checks, RATE_MIN_DT_S, 31.0) is not None  # judged from exactly RATE_MIN_DT_S apart
    checks = sensor_checks()
    sensors_at(checks, 1.0, 30.0)
    assert sensors_at(checks, 1.5, 40.0) == (
        FaultCode.TEMP_SENSOR_FAULT,
        "thermistor pad_1 jumped 30.0 -> 40.0 °C in 0.50 s (+20.0 °C/s, limit 5.0 °C/s)",
    )


def test_sensors_a_close_extra_pass_keeps_the_rate_reference() -> None:
    checks = sensor_checks()
    sensors_at(checks, 1.0, 30.0)
    assert sensors_at(checks, 1.03, 30.3) is None  # too close to judge, and not the new reference
    assert sensors_at(checks, 1.05, 30.35) is not None  # 7 °C/s from the reference at 1.0 s
    checks = sensor_checks()
    sensors_at(checks, 0.0, 30.0)
    assert sensors_at(checks, RATE_MIN_DT_S, 30.1) is None  # far enough: the new reference
    assert sensors_at(checks, RATE_MIN_DT_S + 0.05, 30.4) is not None  # 6 °C/s from it


def test_sensors_persisting_disagreement_edge_and_message() -> None:
    checks = sensor_checks()
    at = make_sample(0.0, temps={"pad_1": 33.0, "pad_2": 30.0})
    assert checks.persisting(FaultCode.TEMP_SENSOR_FAULT, at) is None
    at = make_sample(0.0, temps={"pad_1": 35.0, "pad_2": 30.0})
    assert checks.persisting(FaultCode.TEMP_SENSOR_FAULT, at) == (
        "thermistors still disagree by 5.0 °C (limit 3.0 °C)")


def test_heat_and_sensor_families_start_with_no_plausible_readings() -> None:
    heat = heat_checks()
    assert heat.valid == [] and sensor_checks().valid == []
    assert heat.check(make_sample(0.0), NO_HEAT) is None  # before the sensor family has judged any


def test_heat_a_sample_without_the_heater_output_counts_the_heater_off() -> None:
    heat = heat_checks()
    outputs = {k: v for k, v in make_sample(0.0).outputs.items() if k != "heater"}
    for t, pad in ((0.0, 30.0), (10.0, 30.5)):
        heat.valid = [("pad_1", pad), ("pad_2", 30.0)]
        sample = dataclasses.replace(make_sample(t, temps={"pad_1": pad, "pad_2": 30.0}), outputs=outputs)
        trip = heat.check(sample, NO_HEAT)
    assert trip is not None and trip[0] is FaultCode.HEATER_RUNAWAY  # the runaway rule: the heater was off


def test_heat_balance_window_starts_afresh_after_a_gap_or_a_reset() -> None:
    for gap in ("readings", "reset"):
        heat = heat_checks()
        heat_at(heat, 0.0, 30.0, 30.0)
        if gap == "readings":
            heat_at(heat, 1.0, None, None)
        else:
            heat.cleared()
        heat_at(heat, 2.0, 30.0, 30.0)  # the model restarts from the readings
        # A long pass at full duty: the model leads by far more than the margin at once.
        assert heat_at(heat, 102.0, 30.0, 30.0, duty=1.0) is None, gap  # the window starts here
        trip = heat_at(heat, 107.0, 30.0, 30.0, duty=1.0)
        assert trip is not None and trip[0] is FaultCode.HEAT_BALANCE, gap


def test_sensors_doubt_names_each_problem_at_rest() -> None:
    checks = sensor_checks()

    def doubt(**kwargs: Any) -> str | None:
        return checks.doubt(make_sample(0.0, **kwargs))

    assert doubt(bus_error="no ACK") == "the sensor bus fails: no ACK"
    assert doubt(temps={"pad_1": None, "pad_2": 30.0}) == "thermistor pad_1: no reading"
    assert doubt(temps={"pad_1": None, "pad_2": 30.0}, errors={"pad_1": "open circuit"}) == (
        "thermistor pad_1: open circuit")
    assert doubt(temp=-10.0) is None and doubt(temp=80.0) is None  # the range's ends are readings
    assert doubt(temp=-10.1) == "thermistor pad_1 reads -10.1 °C, outside -10..80 °C"
    assert doubt(temp=80.1) == "thermistor pad_1 reads 80.1 °C, outside -10..80 °C"
    assert doubt(temps={"pad_1": 33.0, "pad_2": 30.0}) is None  # exactly the disagreement limit
    assert doubt(temps={"pad_1": 35.0, "pad_2": 30.0}) == "thermistors disagree by 5.0 °C (limit 3.0 °C)"
    assert doubt(pressure={"calf": None}) == "pressure sensor calf: no reading"
    assert doubt(pressure={"calf": None}, errors={"calf": "stuck at the rail"}) == (
        "pressure sensor calf: stuck at the rail")
    assert doubt() is None


def test_power_and_motor_doubt_settle_times_count_from_the_switch_and_their_edges_are_inclusive() -> None:
    welded = "the 12 V rail reads 7.0 V with the relay commanded off (above 6.0 V): the relay is welded"
    power = PowerChecks(Safety())
    power.check(make_sample(5.0, rail_v=7.0), NOTHING_EXPECTED)  # the relay seen off from 5 s
    assert power.doubt(make_sample(5.1, rail_v=7.0)) is None  # still settling
    assert power.doubt(make_sample(5.2, rail_v=7.0)) == welded
    power = PowerChecks(Safety())
    power.check(make_sample(0.0, rail_v=7.0), NOTHING_EXPECTED)
    assert power.doubt(make_sample(exactly_after(0.0, RAIL_SETTLE_S - EPS), rail_v=7.0)) == welded
    calf_off = motors_at((0.0, 0.0), (0.31, 0.0))
    drawing = "calf_rollers draws 0.31 A while off (at most 0.3 A at rest)"
    motors = MotorChecks(Safety())
    motors.check(calf_off(5.0), NOTHING_EXPECTED)  # off from 5 s
    assert motors.doubt(calf_off(5.5)) is None  # may still coast
    assert motors.doubt(calf_off(6.0)) == drawing
    motors = MotorChecks(Safety())
    motors.check(calf_off(0.0), NOTHING_EXPECTED)
    assert motors.doubt(calf_off(exactly_after(0.0, REST_SETTLE_S - EPS))) == drawing


# -- a pass held between its time stamp and its reads (the host took the core) ---------------------------


def test_air_fall_rule_judges_over_the_longest_time_the_readings_can_be_apart() -> None:
    # Seen in a real-time test under load: "ankle fell 16.7 -> 5.3 mmHg in 0.05 s" from a healthy plant,
    # whose reads came 0.3 s after the pass's time stamp.
    def fall(read_s: float, to: float) -> Trip | None:
        air = AirChecks(Safety())
        air.check(make_sample(1.0, pressure={"ankle": 16.7}), NOTHING_EXPECTED)
        late = dataclasses.replace(make_sample(1.05, pressure={"ankle": to}), read_s=read_s)
        return air.check(late, NOTHING_EXPECTED)

    held = fall(0.0, 5.3)
    assert held is not None and held[0] is FaultCode.PRESSURE_SENSOR_FAULT and "in 0.05 s" in held[1]
    assert fall(0.3, 5.3) is None  # a vent empties that much in 0.35 s
    gone = fall(0.05, -20.0)
    assert gone is not None and "in 0.10 s" in gone[1]  # still judged, over the longest interval


def test_thermistor_jump_rule_judges_over_the_longest_time_the_readings_can_be_apart() -> None:
    checks = sensor_checks()
    sensors_at(checks, 1.0, 30.0)
    late = dataclasses.replace(make_sample(1.5, temps={"pad_1": 40.0, "pad_2": 30.0}), read_s=2.0)
    assert checks.check(late, NOTHING_EXPECTED) is None  # 10 °C in up to 2.5 s: 4 °C/s
    checks = sensor_checks()
    sensors_at(checks, 1.0, 30.0)
    late = dataclasses.replace(make_sample(1.5, temps={"pad_1": 40.0, "pad_2": 30.0}), read_s=0.5)
    assert checks.check(late, NOTHING_EXPECTED) == (
        FaultCode.TEMP_SENSOR_FAULT,
        "thermistor pad_1 jumped 30.0 -> 40.0 °C in 1.00 s (+10.0 °C/s, limit 5.0 °C/s)",
    )


def test_hardware_sample_says_how_long_its_reads_took_after_its_time_stamp(config: Config) -> None:
    ticks = iter(range(1000))
    rig = build_sim(config, clock=lambda: 0.25 * next(ticks))  # every look at the clock: 0.25 s later
    try:
        sample = rig.hardware.read_sample()
        assert sample.read_s > 0.0 and sample.read_s == pytest.approx(0.25 * round(sample.read_s / 0.25))
    finally:
        rig.close()
