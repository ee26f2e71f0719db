"""The fault-injection matrix (issue 4): every plant fault in every session state where it can occur.

Each case runs the production loop (device/harness.py SimUnit: the real App wiring, its start-up,
its controller pass and its command path) on the simulated plant in virtual time, injects a fault
into the physics, and asserts from the plant and the mock pins: the right code latches in time,
every output is off in the same pass, every zone is below 10 mmHg by the vent deadline, nothing
restarts by itself, and a reset is refused while the condition persists and accepted once it has
cleared.

The program is relax with its warm-up steps cut to 15 s each, loaded as a user program would be: a
session state is what the matrix varies, and relax's own 150 s warm-up walked before every work-phase
case cost a third of the matrix's time (the campaign and the runner's tests run the shipped programs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from device.config import Config
from device.harness import SimUnit
from device.safety import Fault, FaultCode, Supervisor
from drivers.clock import VirtualClock
from drivers.sim.plant import Plant
from modes.limits import SAMPLE_PERIOD_S, ZONES, Zone
from modes.session import Session, Status
from tests.session_sim import brief_warm_up

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

DT = SAMPLE_PERIOD_S
PROGRAM = "relax_brief"  # relax (three-zone waves, both rollers, in every phase), its warm-up 2 x 15 s
LIBRARY = brief_warm_up("relax")
TIMER_MIN = 5
VENT_DEADLINE_S = 3.0
STATES = ("idle", "warm_up", "work", "pause", "finishing")


@dataclass
class Unit:
    """A simulated unit on the production loop, with the matrix's ways of driving and judging it."""

    sim: SimUnit
    config: Config

    @classmethod
    def build(cls, config: Config, intensity: int = 3, timer_min: int = TIMER_MIN) -> Unit:
        """The unit with its session defaults in its config (program, intensity, timer), started up."""
        session = config.session.model_copy(
            update={"default_program": PROGRAM, "default_intensity": intensity, "timer_default_min": timer_min}
        )
        sim = SimUnit(config.model_copy(update={"session": session}), library=LIBRARY)
        sim.start_up()
        assert sim.supervisor.latched is None and sim.supervisor.doubt is None
        return cls(sim, sim.app.config)

    @property
    def plant(self) -> Plant:
        """The simulated physics."""
        return self.sim.plant

    @property
    def session(self) -> Session:
        """The unit's session."""
        return self.sim.session

    @property
    def supervisor(self) -> Supervisor:
        """The unit's safety supervisor."""
        return self.sim.supervisor

    @property
    def clock(self) -> VirtualClock:
        """The unit's virtual time."""
        return self.sim.clock

    @property
    def faults(self) -> list[Fault]:
        """Faults the loop reported through on_fault (the fault log, MQTT)."""
        return self.sim.faults

    def command(self, action: str, **fields: Any) -> None:
        """A command through the device's command path; it must be accepted."""
        reply = self.sim.command(action=action, **fields)
        assert reply.ok, reply

    def tick(self) -> None:
        """One 20 Hz pass of the production loop, then the physics catches up."""
        self.sim.tick()

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
        """Bring the session to ``state`` through the command path."""
        if state == "idle":
            self.run(2.0)
            return
        self.command("start", heat=heat)
        if state == "warm_up":
            self.run(20.0)
            assert self.session.snapshot().phase == "warm_up"
            return
        self.run_until(lambda: self.session.snapshot().phase == "work", 200.0)
        self.run(15.0)
        if state == "pause":
            self.command("pause")
            self.run(2.0)
        elif state == "finishing":
            self.command("stop")
        assert self.supervisor.latched is None, self.supervisor.latched

    def reset(self) -> str | None:
        """A ``reset_fault`` command: None when accepted, else why it was refused."""
        return self.sim.reset()

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
def make_unit(config: Config) -> Iterator[Any]:
    """Build units at a chosen intensity (each with its own state directory); closed afterwards."""
    units: list[Unit] = []

    def make(intensity: int = 3, timer_min: int = TIMER_MIN) -> Unit:
        own = config.model_copy(update={"state_dir": config.state_dir / f"unit{len(units)}"})
        unit = Unit.build(own, intensity, timer_min)
        units.append(unit)
        return unit

    yield make
    for unit in units:
        unit.sim.close()


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
        unit.command("start", heat=case.heat)
        unit.run_until(lambda: unit.session.snapshot().phase == "work", 200.0)
        unit.run_until(lambda: unit.plant.pressure["foot"] > 30.0 and unit.plant.outputs()["valve_foot"], 60.0)
        unit.plant.inject(case.fault, **params)
        if case.state == "pause":
            unit.command("pause")
        elif case.state == "finishing":
            unit.command("stop")
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
    unit.command("start", heat=True)
    again = unit.run(60.0)
    assert again is not None and again.code is FaultCode.PRESSURE_NOT_RISING
    assert unit.plant.all_off()


@pytest.mark.parametrize("state", STATES)
def test_fault_matrix_loop_stall(make_unit: Any, state: str) -> None:
    """``loop_stall``: the loop runs no pass; the app's deadman, from its own thread, forces every output
    off and latches CONTROL_LOOP_STALL while the loop is still silent. Time is the unit's virtual time."""
    unit: Unit = make_unit()
    unit.enter(state)
    if state == "finishing":
        unit.run(0.1)  # early: finishing lasts only until the zones are vented
    sim = unit.sim
    assert sim.app.rig is not None
    heartbeat = sim.app.rig.factory.pin(unit.config.pins.heartbeat)
    outputs_on = not unit.plant.all_off()
    assert outputs_on or state == "idle"
    deadman = sim.deadman
    deadman.start()
    try:
        sim.stall(unit.config.safety.loop_stale_s + 0.1)  # the loop is blocked: no pass, time goes on
        beats = len(heartbeat.states)
        assert deadman.wait_tripped(30.0)  # certain: the silence is past the timeout on the deadman's clock
        assert unit.plant.all_off(), unit.plant.outputs()  # off from the thread, the loop still silent
        assert len(heartbeat.states) == beats  # the heartbeat pin stopped with the loop
    finally:
        deadman.stop()
    fault = unit.supervisor.latched
    assert fault is not None and fault.code is FaultCode.CONTROL_LOOP_STALL
    assert unit.faults == []
    unit.tick()
    assert unit.faults == [fault]  # the loop reports it once it runs again
    unit.assert_safe_after(fault)
    assert unit.reset() is None  # the loop runs again: the condition has cleared
    unit.tick()
    assert not deadman.tripped  # rearmed by the next pass after the reset (App.after_pass)


def test_deadman_trip_forces_the_outputs_off_before_it_latches(make_unit: Any) -> None:
    """The app's trip path (App._deadman_trip) switches every output off through the drivers first,
    so a supervisor that is itself stuck (a hung thread in ``latch``) cannot keep anything on."""
    unit: Unit = make_unit()
    unit.enter("work")
    assert not unit.plant.all_off()
    supervisor = unit.supervisor
    real_latch = supervisor.latch
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def stuck_latch(fault: Fault, *, report: bool = True) -> bool:
        seen["outputs_when_latching"] = unit.plant.outputs()
        seen["all_off_when_latching"] = unit.plant.all_off()
        entered.set()
        release.wait(30.0)
        return real_latch(fault, report=report)

    supervisor.latch = stuck_latch  # type: ignore[method-assign]
    deadman = unit.sim.deadman
    unit.sim.stall(unit.config.safety.loop_stale_s + 0.1)
    trip = threading.Thread(target=deadman.poll, name="deadman-poll")
    trip.start()
    try:
        assert entered.wait(30.0)  # certain: poll() runs the app's trip, which latches
        assert seen["all_off_when_latching"], seen["outputs_when_latching"]
    finally:
        release.set()
        trip.join(30.0)
        supervisor.latch = real_latch  # type: ignore[method-assign]
    fault = supervisor.latched
    assert deadman.tripped and fault is not None and fault.code is FaultCode.CONTROL_LOOP_STALL
    unit.tick()
    unit.assert_safe_after(fault)


def test_start_up_vents_every_zone_and_judges_every_sensor_before_ready(config: Config) -> None:
    """After a restart with air left in the zones, the unit is ready only once the plant has vented."""
    sim = SimUnit(config.model_copy(update={"state_dir": config.state_dir / "restart"}))
    try:
        sim.plant.pressure.update({"foot": 90.0, "calf": 60.0})  # air held through a power cut
        sim.start_up()
        vented = sim.app.config.safety.vented_mmhg
        assert all(sim.plant.pressure[z] < vented for z in ZONES), sim.plant.pressure  # the truth
        assert sim.plant.all_off(), sim.plant.outputs()
        assert sim.supervisor.latched is None and sim.supervisor.doubt is None
        assert sim.command(action="start").ok  # judged sensors: a start is accepted at once
    finally:
        sim.close()


@pytest.mark.parametrize(("fault", "params", "code"), [
    ("thermistor_open", {"sensor": "pad_1"}, FaultCode.TEMP_SENSOR_FAULT),
    ("i2c_dead", {}, FaultCode.SENSOR_BUS_FAULT),
])
def test_start_up_latches_a_fault_present_at_power_on(
    config: Config, fault: str, params: dict[str, str], code: FaultCode
) -> None:
    """A fault present at power-on is latched by the start-up passes, before any command is taken."""
    sim = SimUnit(config.model_copy(update={"state_dir": config.state_dir / "faulty"}))
    try:
        sim.plant.inject(fault, **params)
        sim.start_up()
        latched = sim.supervisor.latched
        assert latched is not None and latched.code is code, latched
        assert sim.faults == [latched]  # reported (the fault log, MQTT) before ready
        assert sim.plant.all_off(), sim.plant.outputs()
        reply = sim.command(action="start")
        assert not reply.ok and "latched" in (reply.error or ""), reply
    finally:
        sim.close()
