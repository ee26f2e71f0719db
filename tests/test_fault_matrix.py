"""The fault-injection matrix (issue 4): every plant fault in every session state where it can occur.

Each case runs the real loop (device/controller.py: sensors -> supervisor -> session -> drivers) on
the simulated plant in virtual time, injects a fault into the physics, and asserts from the plant
and the mock pins: the right code latches in time, every output is off in the same pass, every zone
is below 10 mmHg by the vent deadline, nothing restarts by itself, and a reset is refused while the
condition persists and accepted once it has cleared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from device.config import Config
from device.controller import Controller
from device.deadman import Deadman
from device.safety import Fault, FaultCode, Supervisor
from device.sim import SimRig
from drivers.clock import VirtualClock
from modes.library import ProgramLibrary, load_library
from modes.limits import SAMPLE_PERIOD_S, ZONES, Zone
from modes.session import Session, SessionSettings, Status

DT = SAMPLE_PERIOD_S
PROGRAM = "relax"  # three-zone waves and both rollers in every phase
TIMER_MIN = 5
VENT_DEADLINE_S = 3.0
STATES = ("idle", "warm_up", "work", "pause", "finishing")
_LIBRARY: list[ProgramLibrary] = []


def library() -> ProgramLibrary:
    """The built-in programs, loaded once."""
    if not _LIBRARY:
        lib, problems = load_library(None)
        assert problems == []
        _LIBRARY.append(lib)
    return _LIBRARY[0]


@dataclass
class Unit:
    """The whole safety path of the firmware on the rig: controller, session, supervisor."""

    rig: SimRig
    clock: VirtualClock
    config: Config
    session: Session
    supervisor: Supervisor
    controller: Controller
    faults: list[Fault] = field(default_factory=list)

    @classmethod
    def build(
        cls, rig: SimRig, clock: VirtualClock, config: Config, intensity: int = 3, timer_min: int = TIMER_MIN
    ) -> Unit:
        """Wire the loop the way device/app.py does."""
        s = config.safety
        settings = SessionSettings(
            pressure_cap_mmhg=dict(s.pressure_cap_mmhg),
            heat_target_c=config.heater.default_target_c,
            heat_target_max_c=s.heat_target_max_c,
            heater_max_duty=config.heater.max_duty,
            roller_max_speed=config.motors.max_speed,
            timer_default_min=timer_min,
            timer_max_min=config.session.timer_max_min,
            default_program=PROGRAM,
            default_intensity=intensity,
        )
        session = Session(library=library(), settings=settings)
        supervisor = Supervisor(s, thermistors=list(config.sensors.thermistors))
        unit = cls(rig, clock, config, session, supervisor,
                   Controller(hardware=rig.hardware, session=session, supervisor=supervisor, clock=clock))
        unit.controller.on_fault = unit.faults.append
        return unit

    @property
    def plant(self) -> Any:
        """The simulated physics."""
        return self.rig.plant

    def tick(self) -> None:
        """One 20 Hz pass of the loop, then the physics catches up."""
        self.controller.tick()
        self.rig.plant.step(DT)
        self.clock.advance(DT)

    def run(self, seconds: float, *, stop_on_fault: bool = True) -> Fault | None:
        """Run the loop; return the fault that latched (the tick it latched in has completed)."""
        for _ in range(round(seconds / DT)):
            self.tick()
            if stop_on_fault and self.supervisor.latched is not None:
                return self.supervisor.latched
        return self.supervisor.latched

    def run_until(self, done: Any, limit_s: float) -> None:
        """Run until ``done()`` holds; fail after ``limit_s``."""
        for _ in range(round(limit_s / DT)):
            if done():
                return
            self.tick()
            assert self.supervisor.latched is None, self.supervisor.latched
        raise AssertionError(f"condition not reached within {limit_s} s")

    def enter(self, state: str, *, heat: bool = True) -> None:
        """Bring the session to ``state``."""
        if state == "idle":
            self.run(2.0)
            return
        self.session.start(self.clock.now(), heat=heat)
        if state == "warm_up":
            self.run(20.0)
            assert self.session.snapshot().phase == "warm_up"
            return
        self.run_until(lambda: self.session.snapshot().phase == "work", 200.0)
        self.run(15.0)
        if state == "pause":
            self.session.pause(self.clock.now())
            self.run(2.0)
        elif state == "finishing":
            self.session.stop(self.clock.now())
        assert self.supervisor.latched is None, self.supervisor.latched

    def reset(self) -> str | None:
        """The reset path of device/api.py: supervisor first, then the session."""
        sample = self.controller.last_sample
        assert sample is not None
        reason = self.supervisor.reset(sample)
        if reason is None:
            self.session.clear_fault(self.clock.now())
        return reason

    def assert_safe_after(self, fault: Fault, *, stuck_zone: Zone | None = None) -> None:
        """Outputs off in the pass that latched; zones vented by the deadline; nothing restarts."""
        plant = self.plant
        assert plant.all_off(), plant.outputs()
        assert self.session.status is Status.FAULT
        for _ in range(round(VENT_DEADLINE_S / DT)):
            self.tick()
            assert plant.all_off(), plant.outputs()
        for zone in ZONES:
            if zone != stuck_zone:
                assert plant.pressure[zone] < 10.0, (zone, plant.pressure)
        for _ in range(round(10.0 / DT)):  # nothing restarts by itself
            self.tick()
            assert plant.all_off(), plant.outputs()
        assert self.session.status is Status.FAULT
        assert self.supervisor.latched is fault
        assert self.faults[-1] is fault  # reported once through on_fault (the fault log, MQTT)


@pytest.fixture
def make_unit(rig: SimRig, clock: VirtualClock, config: Config) -> Iterator[Any]:
    """Build the unit at a chosen intensity."""
    yield lambda intensity=3, timer_min=TIMER_MIN: Unit.build(rig, clock, config, intensity, timer_min)


@dataclass(frozen=True)
class Case:
    """One row of the matrix."""

    fault: str
    state: str
    codes: frozenset[FaultCode]
    within_s: float
    params: tuple[tuple[str, str], ...] = ()
    intensity: int = 3
    heat: bool = True
    persists: bool = False  # the condition stays visible with every output off: reset must be refused
    stuck_zone: Zone | None = None
    timer_min: int = TIMER_MIN

    @property
    def id(self) -> str:
        """A readable test id."""
        return f"{self.fault}-{self.state}-i{self.intensity}{'' if self.heat else '-noheat'}"


def _cases() -> list[Case]:
    cases: list[Case] = []
    sensor = frozenset({FaultCode.TEMP_SENSOR_FAULT})
    for state in STATES:  # sensors are read in every state
        for fault in ("thermistor_open", "thermistor_short"):
            cases.append(Case(fault, state, sensor, 3 * DT, (("sensor", "pad_1"),), persists=True))
        cases.append(Case("i2c_dead", state, frozenset({FaultCode.SENSOR_BUS_FAULT}), 3 * DT, persists=True))
    runaway = frozenset({FaultCode.HEATER_RUNAWAY})
    # Heat on from cold: the stuck switch looks like full power until the PI backs off near 40 °C, where
    # the stuck pad warms only ~0.36 °C per 10 s (below the runaway rule): over-target catches it.
    runaway_or_over = frozenset({FaultCode.HEATER_RUNAWAY, FaultCode.HEATER_OVER_TARGET})
    cases.append(Case("heater_runaway", "warm_up", runaway_or_over, 600.0, timer_min=15))
    # the warming itself is the condition; it fades once the relay is open (see the test below)
    cases.append(Case("heater_runaway", "work", runaway, 12.0, heat=False))
    cases.append(Case("heater_runaway", "pause", runaway, 12.0))
    # A pad that does not warm under full power looks, to the thermistors, like a pad whose sensors
    # came off it: the energy balance latches (a merely weak heater only warns: the campaign tests).
    balance = frozenset({FaultCode.HEAT_BALANCE})
    cases.append(Case("heater_open", "warm_up", balance, 120.0))
    cases.append(Case("heater_open", "work", balance, 120.0))
    not_rising = frozenset({FaultCode.PRESSURE_NOT_RISING})
    stall = frozenset({FaultCode.MOTOR_STALL})
    for fault, params in (("valve_stuck_open", (("zone", "calf"),)), ("pump_dead", ())):
        cases.append(Case(fault, "warm_up", not_rising, 40.0, params, intensity=5))
        for intensity in range(1, 6):
            cases.append(Case(fault, "work", not_rising, 40.0, params, intensity=intensity))
    stuck = frozenset({FaultCode.VALVE_STUCK})
    for intensity in range(1, 6):
        cases.append(Case("valve_stuck_closed", "work", stuck, 40.0, (("zone", "foot"),), intensity=intensity,
                          persists=True, stuck_zone="foot"))
        cases.append(Case("motor_stall", "work", stall, 1.0, (("motor", "all"),), intensity=intensity))
    for state in ("pause", "finishing"):
        cases.append(Case("valve_stuck_closed", state, stuck, VENT_DEADLINE_S + 0.2, (("zone", "foot"),),
                          persists=True, stuck_zone="foot"))
    for intensity in range(1, 6):  # low-duty warm-up stalls are caught by current per unit of duty
        cases.append(Case("motor_stall", "warm_up", stall, 1.0, (("motor", "all"),), intensity=intensity))
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_matrix(make_unit: Any, case: Case) -> None:
    unit: Unit = make_unit(case.intensity, case.timer_min)
    params = dict(case.params)
    if case.fault == "valve_stuck_closed":
        # stick the valve while its zone holds air, so venting it is what fails
        unit.session.start(unit.clock.now(), heat=case.heat)
        unit.run_until(lambda: unit.session.snapshot().phase == "work", 200.0)
        unit.run_until(lambda: unit.plant.pressure["foot"] > 30.0 and unit.plant.outputs()["valve_foot"], 60.0)
        unit.plant.inject(case.fault, **params)
        if case.state == "pause":
            unit.session.pause(unit.clock.now())
        elif case.state == "finishing":
            unit.session.stop(unit.clock.now())
    else:
        unit.enter(case.state, heat=case.heat)
        unit.plant.inject(case.fault, **params)
    injected_at = unit.clock.now()
    fault = unit.run(case.within_s + DT)
    assert fault is not None, f"{case.fault} in {case.state}: nothing latched within {case.within_s} s"
    assert fault.code in case.codes, fault
    assert fault.t - injected_at <= case.within_s + 1e-6, (fault.t - injected_at, fault)
    unit.assert_safe_after(fault, stuck_zone=case.stuck_zone)
    if case.persists:
        reason = unit.reset()
        assert reason is not None, f"reset accepted while {case.fault} persists"
        assert unit.supervisor.latched is fault
    unit.plant.clear_faults()
    unit.run(15.0, stop_on_fault=False)
    assert unit.reset() is None
    assert unit.supervisor.latched is None and unit.session.status is Status.IDLE
    unit.run(5.0)
    assert unit.plant.all_off() and unit.supervisor.latched is None  # idle after reset: nothing starts


@pytest.mark.parametrize("state", ["work", "pause"])
def test_fault_matrix_runaway_reset_refused_while_the_pad_still_warms(make_unit: Any, state: str) -> None:
    unit: Unit = make_unit()
    unit.enter(state, heat=False)
    unit.plant.inject("heater_runaway")
    fault = unit.run(12.0)
    assert fault is not None and fault.code is FaultCode.HEATER_RUNAWAY
    unit.run(3.0, stop_on_fault=False)  # every zone vented: the reset is judged on the heat alone
    assert "still rising" in (unit.reset() or "")
    assert unit.plant.all_off()


def test_fault_matrix_heater_runaway_in_idle_is_harmless(make_unit: Any) -> None:
    unit: Unit = make_unit()
    unit.enter("idle")
    start_c = max(unit.plant.sensor_c.values())
    unit.plant.inject("heater_runaway")
    assert unit.run(60.0) is None  # the relay is open while idle: the stuck switch has no power
    assert max(unit.plant.sensor_c.values()) <= start_c + 0.1
    assert unit.plant.heater_power() == 0.0


def test_fault_matrix_dead_pump_is_caught_again_after_a_reset(make_unit: Any) -> None:
    unit: Unit = make_unit()
    unit.enter("work")
    unit.plant.inject("pump_dead")
    fault = unit.run(40.0)
    assert fault is not None and fault.code is FaultCode.PRESSURE_NOT_RISING
    unit.run(1.0, stop_on_fault=False)
    assert unit.reset() is None  # nothing to see with the pump off; the next attempt shows it again
    unit.session.start(unit.clock.now(), heat=True)
    again = unit.run(60.0)
    assert again is not None and again.code is FaultCode.PRESSURE_NOT_RISING
    assert unit.plant.all_off()


class FakeMonotonic:
    """The deadman's clock, moved by the blocking call under test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("state", STATES)
async def test_fault_matrix_loop_stall(make_unit: Any, state: str) -> None:
    """``loop_stall``: the event loop blocks; the deadman thread forces every output off and latches."""
    unit: Unit = make_unit()
    unit.enter(state)
    monotonic = FakeMonotonic()
    hardware, supervisor = unit.rig.hardware, unit.supervisor

    def deadman_trip() -> None:  # what device/app.py passes as on_trip
        hardware.safe_off()
        stall = supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "control loop silent", t=unit.clock.now())
        supervisor.latch(stall)

    deadman = Deadman(timeout_s=unit.config.safety.loop_stale_s, on_trip=deadman_trip, monotonic=monotonic,
                      poll_s=0.005)
    heartbeat = unit.rig.factory.pin(unit.config.pins.heartbeat)
    seen: dict[str, Any] = {}

    def block_event_loop() -> None:  # the sim's loop_stall: a blocking call on the loop
        seen["beats"] = len(heartbeat.states)
        seen["outputs_on"] = not unit.plant.all_off() or state == "idle"
        monotonic.now += unit.config.safety.loop_stale_s + 0.1  # the time that passes while blocked
        seen["tripped"] = deadman.wait_tripped(5.0)
        seen["beats_after"] = len(heartbeat.states)
        seen["all_off"] = unit.plant.all_off()

    async def loop() -> None:
        for i in range(200):
            unit.tick()
            deadman.feed()
            if i == 1:  # early: finishing lasts only until the zones are vented
                asyncio.get_running_loop().call_soon(block_event_loop)
            await asyncio.sleep(0)

    deadman.start()
    try:
        await asyncio.wait_for(loop(), timeout=30.0)
    finally:
        deadman.stop()
    assert seen["outputs_on"]
    assert seen["tripped"] and seen["all_off"]  # off from the thread while the loop was still blocked
    assert seen["beats_after"] == seen["beats"]  # the heartbeat pin stopped with the loop
    fault = supervisor.latched
    assert fault is not None and fault.code is FaultCode.CONTROL_LOOP_STALL
    assert unit.faults == [fault]  # the loop reports it once it runs again
    unit.assert_safe_after(fault)
    assert unit.reset() is None  # the loop runs again: the condition has cleared
    deadman.rearm()
    assert not deadman.tripped
