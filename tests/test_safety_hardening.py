"""Single faults an adversary found (issue 11), each on the production loop with verdicts from the plant.

Every test runs the real App wiring (device/harness.py SimUnit) over mock pins, the real ADS1115
driver on the fake bus and the simulated plant, in virtual time.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest

from device.config import Config
from device.harness import SimUnit
from device.safety import FaultCode
from drivers.sim.plant import PlantParams
from modes.library import ProgramLibrary
from modes.limits import PRESSURE_TRIP_MMHG, SAMPLE_PERIOD_S, ZONES
from tests.session_sim import brief_warm_up

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

OVERSHOOT_MMHG = 5.0  # the design's bound on how far a lying sensor may let a zone pass its trip
PAD_MAX_C = 46.0


@pytest.fixture
def make_unit(config: Config) -> Iterator[object]:
    units: list[SimUnit] = []

    def make(params: PlantParams | None = None, library: ProgramLibrary | None = None) -> SimUnit:
        own = config.model_copy(update={"state_dir": config.state_dir / f"unit{len(units)}"})
        unit = SimUnit(own, plant_params=params, library=library)
        unit.start_up()
        units.append(unit)
        return unit

    yield make
    for unit in units:
        unit.close()


# Programs whose warm-up is cut to 2 x 15 s, for tests whose moment is in the work phase (a shipped warm-up is
# 2 to 2.5 minutes of every such test's time).
RELAX_BRIEF = brief_warm_up("relax")
RECOVERY_BRIEF = brief_warm_up("recovery")


def running(unit: SimUnit, **start: object) -> None:
    """Start a session through the command path and run into its work phase."""
    reply = unit.command(action="start", **start)
    assert reply.ok, reply
    unit.run(200.0, until=lambda: unit.app.session.snapshot().phase == "work")
    assert unit.app.session.snapshot().phase == "work" and not unit.faults, unit.faults


# -- 1. the deadman race ---------------------------------------------------------------------------


def test_deadman_trip_during_a_stalled_pass_keeps_every_output_off(make_unit: object) -> None:
    unit: SimUnit = make_unit(library=RELAX_BRIEF)  # type: ignore[operator]
    running(unit, program="relax_brief", heat=True)
    unit.run(30.0, until=lambda: unit.plant.outputs()["heater"] > 0 and any(
        unit.plant.outputs()[f"valve_{z}"] for z in ZONES))
    assert unit.plant.outputs()["relay"]
    session = unit.app.session
    in_step, release = threading.Event(), threading.Event()
    real_step = session.step

    def stalled_step(now: float, sample: object) -> object:
        in_step.set()
        release.wait(10.0)
        return real_step(now, sample)  # type: ignore[arg-type]

    session.step = stalled_step  # type: ignore[method-assign]
    pass_thread = threading.Thread(target=unit.app.controller.tick)
    pass_thread.start()
    assert in_step.wait(10.0)
    fake_now = [0.0]
    deadman = unit.app.deadman
    deadman._monotonic = lambda: fake_now[0]  # injected time: no race with this machine's speed
    deadman.feed()
    fake_now[0] = 1.0  # silent for longer than loop_stale_s
    assert deadman.poll() and deadman.tripped
    assert unit.plant.all_off(), unit.plant.outputs()  # off from the deadman's side at once
    release.set()
    pass_thread.join(10.0)
    session.step = real_step  # type: ignore[method-assign]
    assert unit.plant.all_off(), unit.plant.outputs()  # the resumed pass did not re-energise anything
    relay_pin = unit.app.rig.factory.pin(unit.app.config.pins.relay)  # type: ignore[union-attr]
    assert relay_pin.state == 0
    unit.run(1.0)
    assert unit.plant.all_off()
    latched = unit.app.supervisor.latched
    assert latched is not None and latched.code is FaultCode.CONTROL_LOOP_STALL


def test_deadman_keeps_watching_after_a_trip(make_unit: object) -> None:
    unit: SimUnit = make_unit()  # type: ignore[operator]
    stalled = [0.0]  # the deadman's clock: the unit's virtual time plus the stalls
    deadman = unit.app.deadman
    deadman._monotonic = lambda: unit.clock.now() + stalled[0]
    deadman.feed()
    stalled[0] += 1.0  # a stall: time passes without a pass
    assert deadman.poll()
    assert not deadman.poll()  # one trip per silence
    unit.run(5.0)
    assert unit.command(action="reset_fault").ok
    unit.faults.clear()
    running(unit, heat=True)  # the loop runs again (no rearm needed)
    stalled[0] += 0.6  # a second stall
    assert deadman.poll() and deadman.trips == 2
    assert unit.plant.all_off(), unit.plant.outputs()


# -- 2. a pressure sensor that lies ----------------------------------------------------------------


@pytest.mark.parametrize("fault", ["pressure_sensor_zero", "pressure_sensor_stuck"])
@pytest.mark.parametrize("zone", ZONES)
def test_pressure_sensor_fault_never_lets_a_zone_pass_its_trip(
    make_unit: object, fault: str, zone: str
) -> None:
    """Injected at many moments of a strong program: the true pressure stays within trip + 5 mmHg.

    The foot (the smallest bag: the fastest rise, docs/safety.md) at six moments 0.15 s apart; the
    ankle and calf at three of them (the campaign draws the rest). Recovery's work phase, after a warm-up
    cut to 2 x 15 s (the moment is in the work phase; each moment is a unit of its own)."""
    for moment in range(6) if zone == "foot" else (0, 2, 4):
        unit: SimUnit = make_unit(library=RECOVERY_BRIEF)  # type: ignore[operator]
        running(unit, program="recovery_brief", intensity=5)
        near = 0.75 * unit.app.config.safety.pressure_cap_mmhg[zone]  # pressed hard: the worst moment
        unit.run(60.0, until=lambda u=unit, z=zone, n=near: u.plant.pressure[z] > n)  # type: ignore[misc]
        assert unit.plant.pressure[zone] > near
        unit.run(0.15 * moment)
        unit.plant.inject(fault, zone=zone)
        worst = 0.0
        for _ in range(round(30.0 / SAMPLE_PERIOD_S)):
            unit.tick()
            worst = max(worst, unit.plant.pressure[zone])
            if unit.faults and unit.plant.all_off():
                break  # tripped, pump off and every valve open (the plant's pins): it can only fall now
        for _ in range(round(3.0 / SAMPLE_PERIOD_S)):  # and it stays so (the rest is the fault matrix's)
            unit.tick()
            worst = max(worst, unit.plant.pressure[zone])
            assert not unit.faults or unit.plant.all_off(), unit.plant.outputs()
        assert worst <= PRESSURE_TRIP_MMHG[zone] + OVERSHOOT_MMHG, (fault, zone, moment, worst, unit.faults)


# -- 3. a leak never hangs a wave ------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_leak_never_holds_a_zone_pressed(make_unit: object, rate: float) -> None:
    unit: SimUnit = make_unit()  # type: ignore[operator]
    running(unit, program="circulation", intensity=3)
    unit.plant.inject("leak", zone="ankle", rate=rate)
    pressed_since = dict.fromkeys(ZONES, 0.0)
    longest = 0.0
    for _ in range(round(300.0 / SAMPLE_PERIOD_S)):
        unit.tick()
        for zone in ZONES:
            if unit.plant.pressure[zone] > 10.0:
                pressed_since[zone] += SAMPLE_PERIOD_S
                longest = max(longest, pressed_since[zone])
            else:
                pressed_since[zone] = 0.0
    assert longest <= unit.app.config.safety.compression_max_s, longest


# -- 4. sensors judged before READY ----------------------------------------------------------------


def test_open_thermistor_at_power_on_is_judged_before_ready_and_start_is_refused(config: Config) -> None:
    unit = SimUnit(config)
    try:
        unit.plant.inject("thermistor_open", sensor="pad_1")
        unit.start_up()
        latched = unit.app.supervisor.latched
        assert latched is not None and latched.code is FaultCode.TEMP_SENSOR_FAULT
        reply = unit.command(action="start", heat=True)
        assert not reply.ok
        unit.run(1.0)
        heater_pin = unit.app.rig.factory.pin(config.pins.heater)  # type: ignore[union-attr]
        relay_pin = unit.app.rig.factory.pin(config.pins.relay)  # type: ignore[union-attr]
        assert all(state == 0 for _t, state in heater_pin.states)  # never on, not for one pass
        assert all(state == 0 for _t, state in relay_pin.states)
    finally:
        unit.close()


def test_start_refused_while_a_motor_current_sense_reads_at_rest(make_unit: object) -> None:
    unit: SimUnit = make_unit()  # type: ignore[operator]
    unit.plant.motor_amps["foot_rollers"] = 1.0  # a sense amplifier stuck high (no stall: the motor is off)
    original = unit.plant._step_motors
    unit.plant._step_motors = lambda *_: None  # type: ignore[method-assign]
    unit.run(1.5)  # off for longer than a coasting roller draws current
    reply = unit.command(action="start")
    assert not reply.ok and reply.error is not None and "foot_rollers" in reply.error
    unit.plant._step_motors = original  # type: ignore[method-assign]
    unit.plant.motor_amps["foot_rollers"] = 0.0
    unit.run(0.5)
    assert unit.command(action="start").ok


# -- 5. no reset with air in a zone ----------------------------------------------------------------


def test_reset_refused_while_a_zone_holds_air(make_unit: object) -> None:
    unit: SimUnit = make_unit(library=RECOVERY_BRIEF)  # type: ignore[operator]
    running(unit, program="recovery_brief", intensity=5)
    unit.run(60.0, until=lambda: unit.plant.pressure["foot"] > 60.0 and unit.plant.valve_connected("foot"))
    unit.plant.inject("valve_stuck_closed", zone="foot")
    unit.plant.inject("motor_stall", motor="all")
    unit.run(0.6)
    latched = unit.app.supervisor.latched
    assert latched is not None and latched.code is FaultCode.MOTOR_STALL, latched
    unit.plant.clear_faults()
    unit.plant.inject("valve_stuck_closed", zone="foot")  # the stall has cleared; the air has not
    unit.run(1.0)
    assert unit.plant.pressure["foot"] > 10.0
    reply = unit.command(action="reset_fault")
    assert not reply.ok and "foot" in (reply.error or "")
    unit.plant.clear_faults()
    unit.run(2.0)
    assert unit.command(action="reset_fault").ok


# -- 6. the rail sense ------------------------------------------------------------------------------


def test_welded_relay_latches_and_refuses_start_and_reset(make_unit: object) -> None:
    unit: SimUnit = make_unit()  # type: ignore[operator]
    unit.plant.inject("relay_welded")
    unit.run(0.5)
    latched = unit.app.supervisor.latched
    assert latched is not None and latched.code is FaultCode.RELAY_WELDED
    assert not unit.command(action="start").ok
    assert not unit.command(action="reset_fault").ok
    unit.plant.clear_faults()
    unit.run(0.5)
    assert unit.command(action="reset_fault").ok


def test_missing_rail_with_the_relay_on_latches_power_fault(make_unit: object) -> None:
    unit: SimUnit = make_unit()  # type: ignore[operator]
    unit.plant.params = dataclasses.replace(unit.plant.params, rail_v=0.0)  # fuse blown
    assert unit.command(action="start").ok
    unit.run(1.0)
    latched = unit.app.supervisor.latched
    assert latched is not None and latched.code is FaultCode.POWER_FAULT
    assert unit.plant.all_off()


# -- 7. common-mode temperature errors -------------------------------------------------------------


def test_divider_supply_error_does_not_shift_the_reading(make_unit: object) -> None:
    unit: SimUnit = make_unit()  # type: ignore[operator]
    unit.plant.inject("divider_supply", factor=1.05)
    unit.run(1.0)
    sample = unit.app.controller.last_sample
    assert sample is not None
    for name, value in sample.temperature_c.items():
        assert value is not None and abs(value - unit.plant.sensor_c[name]) < 0.3, (name, value)


def test_both_thermistors_detached_in_a_hot_room_latch_before_the_pad_overheats(make_unit: object) -> None:
    unit: SimUnit = make_unit(PlantParams(air_c=30.0, skin_c=34.0))  # type: ignore[operator]
    running(unit, heat=True, heat_target_c=42.0)
    unit.plant.inject("thermistor_detached", sensor="both")
    hottest = 0.0
    for _ in range(round(900.0 / SAMPLE_PERIOD_S)):
        unit.tick()
        hottest = max(hottest, unit.plant.pad_c)
        if unit.app.supervisor.latched is not None:
            break
    latched = unit.app.supervisor.latched
    assert latched is not None and latched.code is FaultCode.HEAT_BALANCE, latched
    unit.run(60.0)
    assert max(hottest, unit.plant.pad_c) <= PAD_MAX_C


# -- 8. healthy units do not trip (the corners of the plant's ranges: tests/test_runner.py) ----------


def test_weak_heater_in_a_cold_room_warns_without_latching(make_unit: object) -> None:
    nominal = PlantParams()
    weak = PlantParams(air_c=15.0, skin_c=30.0, heater_full_c_per_s=nominal.heater_full_c_per_s * 0.85)
    unit: SimUnit = make_unit(weak)  # type: ignore[operator]
    running(unit, heat=True, heat_target_c=42.0, timer_min=15)
    warned: list[object] = []
    for _ in range(round(900.0 / SAMPLE_PERIOD_S)):
        unit.tick()
        warned.extend(unit.app.device.state()["warnings"])
        if unit.app.session.snapshot().status == "idle":
            break
    assert unit.faults == [] and unit.app.supervisor.latched is None
    assert any(w["code"] == "HEAT_TARGET_UNREACHABLE" for w in warned)  # type: ignore[index]
    assert unit.plant.pad_c < 42.0
    # the warning is a problem too (Home Assistant's Problem event and Last problem), once per appearance
    problems = [p for p in unit.app.device.problems if p.kind == "warning"]
    assert problems and problems[0].code == "HEAT_TARGET_UNREACHABLE"
    assert problems[0].summary == "Warning: Heat target unreachable"


def test_slow_common_mode_drift_is_the_documented_residual_held_by_the_thermal_cutoff(
    make_unit: object,
) -> None:
    """Both thermistors drifting low together, slowly: invisible to software (docs/safety.md).

    Without the pad's thermal cutoff the pad follows the drift past 46 °C; with it fitted (the product's
    hardware layer) the pad stays at or below 46 °C: the cutoff opens, and the heat the firmware then
    delivers without effect latches the energy balance, after which nothing heats until a reset.
    """
    for cutoff, bounded in ((None, False), (45.0, True)):
        unit: SimUnit = make_unit(PlantParams(thermal_cutoff_c=cutoff))  # type: ignore[operator]
        running(unit, heat=True, heat_target_c=42.0, timer_min=30)
        unit.plant.inject("thermistor_drift", sensor="both", rate_c_per_s=-0.01)
        hottest = 0.0
        for _ in range(round(1500.0 / SAMPLE_PERIOD_S)):
            unit.tick()
            hottest = max(hottest, unit.plant.pad_c)
            if hottest > PAD_MAX_C or (unit.app.supervisor.latched is not None and unit.plant.all_off()):
                break  # the verdict is in: past the bound, or latched with every output off
        assert (hottest <= PAD_MAX_C) is bounded, (cutoff, hottest, unit.faults)
        if bounded:
            unit.run(60.0)  # latched: the pad only cools
            assert unit.plant.all_off() and max(hottest, unit.plant.pad_c) <= PAD_MAX_C


def test_restart_with_a_warm_pad_then_heat_does_not_trip_the_energy_balance(config: Config) -> None:
    """After a crash mid-session the pad is still warm: it is not the surroundings of the balance model."""
    unit = SimUnit(config, plant_params=PlantParams())
    try:
        unit.plant.pad_c = 41.0
        for name in unit.plant.sensor_c:
            unit.plant.sensor_c[name] = 41.0
        unit.start_up()
        assert unit.command(action="start", heat=True, heat_target_c=42.0, timer_min=20).ok
        unit.run(1200.0, until=lambda: unit.app.session.snapshot().status == "idle")
        assert unit.faults == [], unit.faults
    finally:
        unit.close()


def test_resume_right_after_pause_is_not_refused_for_a_coasting_roller(make_unit: object) -> None:
    """A roller still coasting after pause draws a little current: that is not a sensor fault (fuzz find)."""
    unit: SimUnit = make_unit(library=RECOVERY_BRIEF)  # type: ignore[operator]
    running(unit, program="recovery_brief", intensity=5)
    unit.run(5.0)
    assert unit.command(action="pause").ok
    unit.run(0.1)
    assert max(unit.plant.motor_amps.values()) > 0.3  # still coasting
    reply = unit.command(action="resume")
    assert reply.ok, reply
    assert unit.command(action="stop").ok
    unit.run(30.0, until=lambda: unit.app.session.snapshot().status == "idle")
    assert unit.command(action="start").ok  # straight after the finish, rollers just stopped
