"""The simulated plant: physics at plausible rates and every injected fault, seen through the drivers."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device.config import Config
from device.sim import SimRig, build_sim, mock_factory, plant_wiring
from drivers.clock import VirtualClock
from drivers.sim.plant import (
    EXTRA_PLANT_FAULTS,
    FAULT_PARAMETERS,
    PLANT_FAULTS,
    PLANT_RANGES,
    Plant,
    PlantFaultError,
    PlantParams,
)
from modes.limits import PRESSURE_CAP_MMHG, STALL_CURRENT_A, Zone
from modes.signals import Command, Sample

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

TICK_S = 0.05


def run(
    rig: SimRig, clock: VirtualClock, command: Command, seconds: float,
    until: Callable[[Sample], bool] | None = None,
) -> Sample:
    """The firmware's 20 Hz loop with a fixed command; stops early once ``until(sample)`` holds."""
    sample = rig.hardware.read_sample()
    for _ in range(round(seconds / TICK_S)):
        rig.hardware.apply(command)
        rig.plant.step(TICK_S)
        clock.advance(TICK_S)
        sample = rig.hardware.read_sample()
        if until is not None and until(sample):
            break
    return sample


def hold(rig: SimRig, clock: VirtualClock, command: Command, seconds: float) -> None:
    """Apply ``command`` once and let the plant run (the pins stay as they are): for long soaks."""
    rig.hardware.apply(command)
    rig.plant.step(seconds)
    clock.advance(seconds)


def inflate(rig: SimRig, clock: VirtualClock, zone: Zone, mmhg: float) -> None:
    """Pump one zone up to ``mmhg`` through the drivers."""
    cmd = Command(relay=True, pump=1.0, connected=frozenset({zone}))
    sample = run(rig, clock, cmd, 10.0, until=lambda s: (s.pressure_mmhg[zone] or 0.0) >= mmhg)
    assert (sample.pressure_mmhg[zone] or 0.0) >= mmhg


HEAT = Command(relay=True, heater=1.0)
IDLE = Command(relay=True)


# -- heater pad -----------------------------------------------------------------------------------


def test_plant_heater_warms_3_to_4_c_per_minute_at_full_power(rig: SimRig, clock: VirtualClock) -> None:
    start = rig.hardware.read_sample()
    assert start.temperature_c["pad_1"] == pytest.approx(28.5, abs=0.2)
    pad_start = rig.plant.pad_c
    sample = run(rig, clock, HEAT, 60.0)
    assert 3.0 <= rig.plant.pad_c - pad_start <= 4.0
    for name in ("pad_1", "pad_2"):  # the thermistors lag the pad a little
        before, after = start.temperature_c[name], sample.temperature_c[name]
        assert before is not None and after is not None
        assert 2.9 <= after - before <= 4.0


def test_plant_heater_settles_near_55_to_60_c_at_full_power(rig: SimRig, clock: VirtualClock) -> None:
    hold(rig, clock, HEAT, 3600.0)
    settled = rig.plant.pad_c
    hold(rig, clock, HEAT, 600.0)
    assert 55.0 <= settled <= 60.0
    assert abs(rig.plant.pad_c - settled) < 0.2  # no longer rising
    sample = rig.hardware.read_sample()
    assert sample.temperature_c["pad_1"] == pytest.approx(settled, abs=0.3)


def test_plant_heater_cools_with_duty_zero(rig: SimRig, clock: VirtualClock) -> None:
    hold(rig, clock, HEAT, 1200.0)
    hot = rig.plant.pad_c
    assert hot > 45.0
    sample = run(rig, clock, IDLE, 60.0)
    assert sample.outputs["heater"] == 0.0
    drop = hot - rig.plant.pad_c
    assert 1.0 < drop < 4.0  # loss to skin and air, slower than full-power warming
    hold(rig, clock, IDLE, 2400.0)
    assert rig.plant.pad_c == pytest.approx(28.5, abs=0.5)  # between the air (25) and the skin (32)


# -- airbags --------------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["foot", "ankle", "calf"])
def test_plant_empty_zone_reaches_its_cap_in_3_to_5_s(
    rig: SimRig, clock: VirtualClock, zone: Zone
) -> None:
    cap = PRESSURE_CAP_MMHG[zone]
    inflate(rig, clock, zone, cap)
    assert 3.0 <= clock.now() <= 5.0
    others = [z for z in ("foot", "ankle", "calf") if z != zone]
    assert all(rig.plant.pressure[z] == 0.0 for z in others)  # vented zones stay empty


def test_plant_airbag_holds_with_the_pump_off(rig: SimRig, clock: VirtualClock) -> None:
    inflate(rig, clock, "foot", 100.0)
    held = rig.plant.pressure["foot"]
    sample = run(rig, clock, Command(relay=True, connected=frozenset({"foot"})), 5.0)
    assert sample.outputs["pump"] == 0.0 and sample.outputs["valve_foot"] is True
    assert held * 0.97 < rig.plant.pressure["foot"] < held  # a small leak, no more
    assert sample.pressure_mmhg["foot"] == pytest.approx(rig.plant.pressure["foot"], abs=1.0)


def test_plant_airbag_vents_from_120_to_below_10_in_about_1_s(rig: SimRig, clock: VirtualClock) -> None:
    inflate(rig, clock, "foot", 120.0)
    start = clock.now()
    sample = run(rig, clock, IDLE, 3.0, until=lambda s: (s.pressure_mmhg["foot"] or 0.0) < 10.0)
    assert sample.outputs["valve_foot"] is False
    assert 0.8 <= clock.now() - start <= 1.3


def test_plant_pump_without_a_connected_zone_fills_nothing(rig: SimRig, clock: VirtualClock) -> None:
    rig.hardware.relay.energise()
    rig.hardware.pump.run(1.0)  # every valve venting
    rig.plant.step(3.0)
    assert rig.plant.outputs()["pump"] == 1.0
    assert all(p == 0.0 for p in rig.plant.pressure.values())


# -- motors ---------------------------------------------------------------------------------------


def test_plant_motor_current_rises_with_speed(rig: SimRig, clock: VirtualClock) -> None:
    currents = []
    for speed in (0.25, 0.5, 0.75, 1.0):
        sample = run(rig, clock, Command(relay=True, calf_rollers=speed), 2.0)
        amps = sample.motor_current_a["calf_rollers"]
        assert amps is not None
        currents.append(amps)
    assert currents == sorted(currents)
    assert currents[-1] - currents[0] > 0.5
    assert currents[-1] < STALL_CURRENT_A  # a healthy motor stays clear of the stall threshold
    assert rig.plant.motor_speed["calf_rollers"] == pytest.approx(1.0, abs=0.01)
    sample = run(rig, clock, IDLE, 2.0)
    assert sample.motor_current_a["calf_rollers"] == 0.0


def test_plant_stalled_motor_current_jumps(rig: SimRig, clock: VirtualClock) -> None:
    running = run(rig, clock, Command(relay=True, foot_rollers=0.5), 2.0).motor_current_a["foot_rollers"]
    assert running is not None and running < 1.0
    rig.plant.inject("motor_stall", motor="foot_rollers")
    stalled = run(rig, clock, Command(relay=True, foot_rollers=0.5), 0.1).motor_current_a["foot_rollers"]
    assert stalled is not None and stalled > STALL_CURRENT_A
    assert rig.plant.motor_speed["foot_rollers"] == 0.0
    calf = run(rig, clock, Command(relay=True, calf_rollers=0.5), 2.0).motor_current_a["calf_rollers"]
    assert calf is not None and calf < 1.0  # only the named motor stalls


# -- relay ----------------------------------------------------------------------------------------


def test_plant_relay_off_cuts_every_load(rig: SimRig, clock: VirtualClock) -> None:
    inflate(rig, clock, "calf", 50.0)
    hw = rig.hardware
    hw.pump.run(1.0)  # every load pin on, as a runaway firmware might leave them
    hw.heater.set_duty(1.0)
    hw.rollers["foot_rollers"].drive(1.0)
    hw.relay.drop()
    pad_before = rig.plant.pad_c
    rig.plant.step(2.0)
    out = rig.plant.outputs()
    assert out["relay"] is False
    assert out["pump"] == 1.0 and out["heater"] == 1.0 and out["valve_calf"] is True
    assert rig.plant.heater_power() == 0.0 and rig.plant.pump_duty() == 0.0
    assert rig.plant.pressure["calf"] < 10.0  # de-energised valves vent
    assert rig.plant.pad_c <= pad_before
    assert rig.plant.motor_amps["foot_rollers"] == 0.0
    sample = hw.read_sample()
    assert sample.rail_v == pytest.approx(0.0, abs=0.01)


# -- injected faults ------------------------------------------------------------------------------


def test_fault_heater_runaway_heats_with_duty_zero(rig: SimRig, clock: VirtualClock) -> None:
    before = run(rig, clock, IDLE, 0.05).temperature_c["pad_1"]
    rig.plant.inject("heater_runaway")
    after = run(rig, clock, IDLE, 10.0)
    assert after.outputs["heater"] == 0.0
    assert before is not None and after.temperature_c["pad_1"] is not None
    assert after.temperature_c["pad_1"] - before >= 0.5
    rig.hardware.safe_off()  # dropping the relay is the only cure
    pad = rig.plant.pad_c
    rig.plant.step(30.0)
    assert rig.plant.pad_c < pad


def test_fault_heater_open_does_not_heat(rig: SimRig, clock: VirtualClock) -> None:
    rig.plant.inject("heater_open")
    before = rig.hardware.read_sample().temperature_c["pad_1"]
    after = run(rig, clock, HEAT, 60.0)
    assert after.outputs["heater"] == 1.0
    assert before is not None and after.temperature_c["pad_1"] is not None
    assert abs(after.temperature_c["pad_1"] - before) < 0.2


@pytest.mark.parametrize(("fault", "reason"), [("thermistor_open", "open circuit"),
                                               ("thermistor_short", "short circuit")])
def test_fault_thermistor_reads_as_named(
    rig: SimRig, clock: VirtualClock, fault: str, reason: str
) -> None:
    rig.plant.inject(fault, sensor="pad_2")
    sample = run(rig, clock, IDLE, 0.05)
    assert sample.ok
    assert sample.temperature_c["pad_2"] is None
    assert reason in sample.errors["pad_2"]
    assert sample.temperature_c["pad_1"] == pytest.approx(rig.plant.sensor_c["pad_1"], abs=0.2)
    rig.plant.inject(fault, sensor="all")
    sample = run(rig, clock, IDLE, 0.05)
    assert sample.temperature_c == {"pad_1": None, "pad_2": None}


def test_fault_thermistor_defaults_to_the_first_sensor(rig: SimRig, clock: VirtualClock) -> None:
    rig.plant.inject("thermistor_open")
    sample = rig.hardware.read_sample()
    assert sample.temperature_c["pad_1"] is None and sample.temperature_c["pad_2"] is not None


def test_fault_valve_stuck_closed_does_not_vent(rig: SimRig, clock: VirtualClock) -> None:
    inflate(rig, clock, "ankle", 70.0)
    rig.plant.inject("valve_stuck_closed", zone="ankle")
    sample = run(rig, clock, Command(), 3.0)  # relay off: every valve de-energised
    assert sample.outputs["valve_ankle"] is False
    assert (sample.pressure_mmhg["ankle"] or 0.0) > 65.0


def test_fault_valve_stuck_open_does_not_fill(rig: SimRig, clock: VirtualClock) -> None:
    rig.plant.inject("valve_stuck_open", zone="calf")
    sample = run(rig, clock, Command(relay=True, pump=1.0, connected=frozenset({"calf"})), 3.0)
    assert sample.outputs["valve_calf"] is True and sample.outputs["pump"] == 1.0
    assert (sample.pressure_mmhg["calf"] or 0.0) < 2.0


def test_fault_pump_dead_does_not_fill(rig: SimRig, clock: VirtualClock) -> None:
    rig.plant.inject("pump_dead")
    sample = run(rig, clock, Command(relay=True, pump=1.0, connected=frozenset({"foot"})), 3.0)
    assert sample.outputs["pump"] == 1.0
    assert (sample.pressure_mmhg["foot"] or 0.0) < 2.0


def test_fault_i2c_dead_fails_every_read(rig: SimRig, clock: VirtualClock) -> None:
    rig.plant.inject("i2c_dead")
    sample = run(rig, clock, IDLE, 0.15)
    assert not sample.ok
    assert sample.bus_error is not None and "I2C" in sample.bus_error
    assert all(v is None for v in sample.pressure_mmhg.values())
    assert all(v is None for v in sample.temperature_c.values())


@pytest.mark.parametrize(
    ("fault", "params", "message"),
    [
        ("heater_melted", {}, "unknown plant fault 'heater_melted'"),
        ("loop_stall", {}, "unknown plant fault 'loop_stall'"),  # the app's, not the plant's
        ("valve_stuck_open", {"zone": "knee"}, "zone must be one of foot, ankle, calf"),
        ("motor_stall", {"motor": "arm"}, "motor must be one of foot_rollers, calf_rollers"),
        ("thermistor_short", {"sensor": "pad_9"}, "sensor must be one of pad_1, pad_2"),
        ("heater_open", {"zone": "foot"}, "heater_open takes no parameter zone"),
        ("pump_dead", {"seconds": 2}, "pump_dead takes no parameter seconds"),
    ],
)
def test_plant_refuses_unknown_faults_and_parameters(
    rig: SimRig, fault: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(PlantFaultError, match=message) as info:
        rig.plant.inject(fault, **params)
    assert isinstance(info.value, ValueError)
    assert rig.plant.faults == {}


def test_plant_clear_faults_restores_the_physics(rig: SimRig, clock: VirtualClock) -> None:
    for fault in PLANT_FAULTS:
        rig.plant.inject(fault)
    assert set(rig.plant.faults) == set(PLANT_FAULTS)
    rig.plant.clear_faults()
    assert rig.plant.faults == {}
    sample = run(rig, clock, Command(relay=True, pump=1.0, connected=frozenset({"foot"}),
                                     foot_rollers=0.5), 2.0)
    assert sample.ok
    assert all(v is not None for v in sample.temperature_c.values())
    assert (sample.pressure_mmhg["foot"] or 0.0) > 40.0
    current = sample.motor_current_a["foot_rollers"]
    assert current is not None and current < 1.0
    vented = run(rig, clock, IDLE, 2.0)
    assert (vented.pressure_mmhg["foot"] or 0.0) < 10.0


# -- faults of wear and of the sensors (EXTRA_PLANT_FAULTS) -----------------------------------------


def true_reading(rig: SimRig, zone: Zone) -> float:
    """The firmware's pressure reading of ``zone`` now (asserting it has one)."""
    value = rig.hardware.read_sample().pressure_mmhg[zone]
    assert value is not None
    return value


def test_fault_pressure_sensor_stuck_freezes_the_reading_while_the_pressure_moves(
    rig: SimRig, clock: VirtualClock
) -> None:
    inflate(rig, clock, "foot", 60.0)
    at_injection = rig.plant.pressure["foot"]
    rig.plant.inject("pressure_sensor_stuck", zone="foot")
    pumping = run(rig, clock, Command(relay=True, pump=1.0, connected=frozenset({"foot"})), 1.0)
    assert rig.plant.pressure["foot"] > at_injection + 10.0  # the bag keeps filling
    assert pumping.pressure_mmhg["foot"] == pytest.approx(at_injection, abs=0.5)
    vented = run(rig, clock, IDLE, 3.0)
    assert rig.plant.pressure["foot"] < 5.0
    assert vented.pressure_mmhg["foot"] == pytest.approx(at_injection, abs=0.5)


def test_fault_pressure_sensor_zero_reads_0_while_the_bag_holds_its_air(
    rig: SimRig, clock: VirtualClock
) -> None:
    inflate(rig, clock, "ankle", 80.0)
    rig.plant.inject("pressure_sensor_zero", zone="ankle")
    sample = run(rig, clock, Command(relay=True, connected=frozenset({"ankle"})), 1.0)
    assert rig.plant.pressure["ankle"] > 75.0
    assert sample.pressure_mmhg["ankle"] == pytest.approx(0.0, abs=1.0)
    assert sample.errors.get("ankle") is None  # the zero voltage is a live reading, not an open circuit


def test_fault_pressure_sensor_drift_grows_at_its_rate(rig: SimRig, clock: VirtualClock) -> None:
    inflate(rig, clock, "calf", 50.0)
    rig.plant.inject("pressure_sensor_drift", zone="calf", rate_mmhg_per_s=5.0)
    sample = run(rig, clock, Command(relay=True, connected=frozenset({"calf"})), 4.0)
    reading = sample.pressure_mmhg["calf"]
    assert reading is not None
    assert reading - rig.plant.pressure["calf"] == pytest.approx(20.0, abs=1.0)


def test_fault_pressure_sensor_drift_keeps_the_voltage_physical(rig: SimRig, clock: VirtualClock) -> None:
    address, channel, _model = rig.plant.wiring.pressure["foot"]
    rig.plant.inject("pressure_sensor_drift", zone="foot", rate_mmhg_per_s=-20.0)
    rig.plant.step(100.0)
    assert rig.plant.adc_volts(address, channel) == 0.0  # clamped at ground, not negative
    assert "open circuit" in rig.hardware.read_sample().errors["foot"]
    rig.plant.inject("pressure_sensor_drift", zone="foot", rate_mmhg_per_s=20.0)
    rig.plant.step(1000.0)
    assert rig.plant.adc_volts(address, channel) == pytest.approx(3.3)  # at the sensor's supply


def test_fault_leak_loses_its_rate_of_the_pressure_per_second(rig: SimRig, clock: VirtualClock) -> None:
    inflate(rig, clock, "calf", 100.0)
    hold_calf = Command(relay=True, connected=frozenset({"calf"}))
    rig.hardware.apply(hold_calf)
    start = rig.plant.pressure["calf"]
    rig.plant.inject("leak", zone="calf", rate=0.2)
    rig.plant.step(2.0)
    leak = rig.plant.params.leak_per_s
    assert rig.plant.pressure["calf"] == pytest.approx(start * math.exp(-(0.2 + leak) * 2.0), rel=0.01)


def test_fault_leak_empties_a_bag_held_by_a_stuck_closed_valve(rig: SimRig, clock: VirtualClock) -> None:
    inflate(rig, clock, "foot", 80.0)
    rig.plant.inject("valve_stuck_closed", zone="foot")
    rig.plant.inject("leak", zone="foot", rate=1.0)
    rig.hardware.safe_off()  # relay off: the valve would vent, but it is stuck
    rig.plant.step(3.0)
    assert rig.plant.pressure["foot"] < 80.0 * math.exp(-2.9)


def test_fault_thermistor_drift_adds_its_rate_to_that_sensor(rig: SimRig, clock: VirtualClock) -> None:
    rig.plant.inject("thermistor_drift", sensor="pad_2", rate_c_per_s=0.1)
    sample = run(rig, clock, IDLE, 10.0)
    pad_1, pad_2 = sample.temperature_c["pad_1"], sample.temperature_c["pad_2"]
    assert pad_1 is not None and pad_2 is not None
    assert pad_2 - rig.plant.sensor_c["pad_2"] == pytest.approx(1.0, abs=0.15)
    assert pad_1 == pytest.approx(rig.plant.sensor_c["pad_1"], abs=0.15)
    rig.plant.inject("thermistor_drift", sensor="both", rate_c_per_s=-0.5)  # replaces the first
    sample = run(rig, clock, IDLE, 4.0)
    for name in ("pad_1", "pad_2"):
        reading = sample.temperature_c[name]
        assert reading is not None
        assert reading - rig.plant.sensor_c[name] == pytest.approx(-2.0, abs=0.15)


def test_fault_thermistor_detached_tends_to_the_air(rig: SimRig, clock: VirtualClock) -> None:
    hold(rig, clock, HEAT, 1200.0)
    assert rig.plant.pad_c > 45.0
    rig.plant.inject("thermistor_detached", sensor="pad_1")
    hold(rig, clock, HEAT, 20.0)  # one time constant
    air = rig.plant.params.air_c
    hot = rig.plant.pad_c
    first_gap = rig.plant.sensor_c["pad_1"] - air
    assert 0.3 < first_gap / (hot - air) < 0.45  # about exp(-1) of the way still to go
    hold(rig, clock, HEAT, 100.0)
    sample = rig.hardware.read_sample()
    assert sample.temperature_c["pad_1"] == pytest.approx(air, abs=0.5)
    assert sample.temperature_c["pad_2"] == pytest.approx(rig.plant.pad_c, abs=0.3)  # still on the pad
    assert rig.plant.pad_c > hot  # the pad keeps heating


def test_fault_relay_welded_keeps_the_loads_powered_with_the_pin_off(
    config: Config, clock: VirtualClock
) -> None:
    rig = build_sim(config, clock=clock.now, params=PlantParams(deadman_timeout_s=0.5))
    try:
        rig.plant.inject("relay_welded")
        hw = rig.hardware
        hw.relay.energise()
        hw.pump.run(1.0)  # load pins on, as a firmware that dropped only the relay leaves them
        hw.heater.set_duty(1.0)
        hw.relay.drop()
        assert rig.plant.outputs()["relay"] is False
        pad = rig.plant.pad_c
        rig.plant.step(2.0)  # no heartbeat either: the deadman trips, the contacts stay shut
        assert rig.plant.deadman_tripped
        truth = rig.plant.truth()
        assert truth["relay_closed"] is True and truth["outputs"]["relay"] is False
        assert rig.plant.heater_power() == 1.0 and rig.plant.pump_duty() == 1.0
        assert rig.plant.pad_c > pad
        sample = hw.read_sample()
        assert sample.rail_v == pytest.approx(12.0, abs=0.05)
        rig.plant.clear_faults()
        assert rig.plant.truth()["relay_closed"] is False
        assert hw.read_sample().rail_v == pytest.approx(0.0, abs=0.01)
    finally:
        rig.close()


def test_fault_pump_weak_scales_the_flow(rig: SimRig, clock: VirtualClock) -> None:
    fill = Command(relay=True, pump=1.0, connected=frozenset({"foot"}))
    run(rig, clock, fill, 0.5)
    healthy = rig.plant.pressure["foot"]
    run(rig, clock, IDLE, 5.0)
    assert rig.plant.pressure["foot"] < 0.1
    rig.plant.inject("pump_weak", flow=0.5)
    run(rig, clock, fill, 0.5)
    assert rig.plant.pressure["foot"] / healthy == pytest.approx(0.5, abs=0.02)


def test_fault_heater_weak_scales_the_power(rig: SimRig, clock: VirtualClock) -> None:
    pad = rig.plant.pad_c
    hold(rig, clock, HEAT, 30.0)
    healthy = rig.plant.pad_c - pad
    hold(rig, clock, IDLE, 3600.0)
    pad = rig.plant.pad_c
    rig.plant.inject("heater_weak", power=0.4)
    hold(rig, clock, HEAT, 30.0)
    assert (rig.plant.pad_c - pad) / healthy == pytest.approx(0.4, abs=0.03)


def test_fault_divider_supply_scales_the_thermistor_voltage_and_the_supply_input(
    config: Config, clock: VirtualClock
) -> None:
    wiring = dataclasses.replace(plant_wiring(config), divider_supply=(0x4A, 1, 0.5))
    plant = Plant(mock_factory(), wiring, PlantParams(temp_noise_c=0.0))
    address, channel, _model = wiring.thermistors["pad_1"]
    assert 0x4A in plant.bus.devices  # a converter for the supply input too
    assert plant.adc_volts(0x4A, 1) == pytest.approx(3.3 * 0.5)
    nominal = plant.adc_volts(address, channel)
    plant.inject("divider_supply", factor=1.05)
    assert plant.adc_volts(address, channel) == pytest.approx(nominal * 1.05, rel=1e-9)
    assert plant.adc_volts(0x4A, 1) == pytest.approx(3.3 * 1.05 * 0.5)
    assert plant.truth()["fault_params"]["divider_supply"]["factor"] == 1.05
    plant.factory.close()


def test_fault_divider_supply_moves_a_non_ratiometric_reading(config: Config, clock: VirtualClock) -> None:
    unsensed = config.model_copy(update={"sensors": config.sensors.model_copy(update={"divider_supply": None})})
    rig = build_sim(unsensed, clock=clock.now)
    before = rig.hardware.read_sample().temperature_c["pad_1"]
    rig.plant.inject("divider_supply", factor=0.9)
    after = rig.hardware.read_sample().temperature_c["pad_1"]
    rig.close()
    assert before is not None and after is not None
    assert after - before > 2.0  # a lower node voltage reads as a hotter NTC


def test_fault_divider_supply_cancels_out_of_a_ratiometric_reading(rig: SimRig) -> None:
    before = rig.hardware.read_sample().temperature_c["pad_1"]
    rig.plant.inject("divider_supply", factor=0.95)
    after = rig.hardware.read_sample().temperature_c["pad_1"]
    assert before is not None and after is not None
    assert abs(after - before) < 0.2


def test_plant_wiring_takes_the_divider_supply_from_the_config(config: Config) -> None:
    supply = config.sensors.divider_supply
    assert supply is not None
    assert plant_wiring(config).divider_supply == (supply.address, supply.channel, supply.volts_per_volt)
    unsensed = config.model_copy(update={"sensors": config.sensors.model_copy(update={"divider_supply": None})})
    assert plant_wiring(unsensed).divider_supply is None


@pytest.mark.parametrize(
    ("fault", "params", "field", "message"),
    [
        ("leak", {"rate": 0.5}, "zone", "leak: zone is missing"),
        ("leak", {"zone": "foot"}, "rate", "leak: rate is missing"),
        ("leak", {"zone": "foot", "rate": 0}, "rate", "rate must be a number in (0, 5]"),
        ("leak", {"zone": "foot", "rate": 6}, "rate", "got 6"),
        ("leak", {"zone": "foot", "rate": "fast"}, "rate", "got 'fast'"),
        ("leak", {"zone": "foot", "rate": True}, "rate", "got True"),
        ("leak", {"zone": "knee", "rate": 1}, "zone", "zone must be one of foot, ankle, calf"),
        ("leak", {"zone": 3, "rate": 1}, "zone", "got 3"),
        ("leak", {"zone": "foot", "rate": 1, "size": 2}, "size", "leak takes no parameter size"),
        ("pressure_sensor_stuck", {}, "zone", "pressure_sensor_stuck: zone is missing"),
        ("pressure_sensor_zero", {"zone": "hand"}, "zone", "got 'hand'"),
        ("pressure_sensor_drift", {"zone": "foot"}, "rate_mmhg_per_s", "rate_mmhg_per_s is missing"),
        ("pressure_sensor_drift", {"zone": "foot", "rate_mmhg_per_s": 0}, "rate_mmhg_per_s", "not 0"),
        ("pressure_sensor_drift", {"zone": "foot", "rate_mmhg_per_s": -21}, "rate_mmhg_per_s",
         "rate_mmhg_per_s must be a number in [-20, 20]"),
        ("pressure_sensor_drift", {"zone": "foot", "rate_mmhg_per_s": float("nan")}, "rate_mmhg_per_s",
         "got nan"),
        ("thermistor_drift", {"sensor": "pad_1"}, "rate_c_per_s", "rate_c_per_s is missing"),
        ("thermistor_drift", {"sensor": "pad_1", "rate_c_per_s": 1.5}, "rate_c_per_s", "[-1, 1]"),
        ("thermistor_drift", {"rate_c_per_s": 0.1}, "sensor", "sensor is missing"),
        ("thermistor_detached", {"sensor": "pad_3"}, "sensor",
         "sensor must be one of pad_1, pad_2, 'both' or 'all'"),
        ("relay_welded", {"zone": "foot"}, "zone", "relay_welded takes no parameter zone"),
        ("pump_weak", {}, "flow", "pump_weak: flow is missing"),
        ("pump_weak", {"flow": 0}, "flow", "flow must be a number in (0, 1]"),
        ("pump_weak", {"flow": 1.2}, "flow", "got 1.2"),
        ("heater_weak", {"power": -0.5}, "power", "power must be a number in (0, 1]"),
        ("divider_supply", {}, "factor", "divider_supply: factor is missing"),
        ("divider_supply", {"factor": 1}, "factor", "not 1"),
        ("divider_supply", {"factor": 1.3}, "factor", "factor must be a number in [0.8, 1.2]"),
        ("divider_supply", {"factor": 0.79}, "factor", "got 0.79"),
    ],
)
def test_plant_refuses_bad_fault_parameters_naming_the_field(
    rig: SimRig, fault: str, params: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(PlantFaultError) as info:
        rig.plant.inject(fault, **params)
    assert message in str(info.value)
    assert field in str(info.value) and info.value.field == field
    assert isinstance(info.value, ValueError)
    assert rig.plant.faults == {}


def test_plant_refused_injection_keeps_the_previous_one(rig: SimRig) -> None:
    rig.plant.inject("leak", zone="ankle", rate=0.5)
    with pytest.raises(PlantFaultError):
        rig.plant.inject("leak", zone="ankle", rate=50)
    assert rig.plant.fault_params()["leak"] == {"zone": "ankle", "rate": 0.5, "since_s": 0.0}
    rig.plant.inject("leak", zone="all", rate=1)
    assert rig.plant.fault_params()["leak"]["zone"] == "all"


def test_plant_clear_faults_removes_every_new_fault(rig: SimRig, clock: VirtualClock) -> None:
    for fault, params in EXAMPLE_PARAMS.items():
        rig.plant.inject(fault, **params)
    assert set(rig.plant.faults) == set(EXTRA_PLANT_FAULTS)
    truth = rig.plant.truth()
    assert set(truth["fault_params"]) == set(EXTRA_PLANT_FAULTS)
    assert truth["fault_params"]["pump_weak"]["flow"] == 0.5
    json.dumps(truth)
    rig.plant.clear_faults()
    assert rig.plant.faults == {} and rig.plant.truth()["fault_params"] == {}
    sample = run(rig, clock, Command(relay=True, pump=1.0, connected=frozenset({"foot"})), 2.0)
    assert (sample.pressure_mmhg["foot"] or 0.0) == pytest.approx(rig.plant.pressure["foot"], abs=1.0)
    assert sample.temperature_c["pad_1"] == pytest.approx(rig.plant.sensor_c["pad_1"], abs=0.2)


EXAMPLE_PARAMS: dict[str, dict[str, object]] = {
    "pressure_sensor_stuck": {"zone": "foot"},
    "pressure_sensor_zero": {"zone": "ankle"},
    "pressure_sensor_drift": {"zone": "calf", "rate_mmhg_per_s": 2},
    "leak": {"zone": "all", "rate": 0.1},
    "thermistor_drift": {"sensor": "pad_1", "rate_c_per_s": 0.05},
    "thermistor_detached": {"sensor": "pad_2"},
    "relay_welded": {},
    "pump_weak": {"flow": 0.5},
    "heater_weak": {"power": 0.5},
    "divider_supply": {"factor": 1.05},
}


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-100, 100), st.floats(allow_nan=True),
                 st.text(max_size=8), st.sampled_from(["foot", "calf", "all", "both", "pad_1", "pad_2"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fault=st.sampled_from(EXTRA_PLANT_FAULTS),
       params=st.dictionaries(st.sampled_from(["zone", "sensor", "rate", "rate_mmhg_per_s", "rate_c_per_s",
                                               "flow", "power", "factor", "motor"]), JUNK, max_size=3))
def test_plant_fault_parameters_are_accepted_or_refused_naming_a_field(
    config: Config, fault: str, params: dict[str, object]
) -> None:
    plant = Plant(mock_factory(), plant_wiring(config))
    try:
        plant.inject(fault, **params)
    except PlantFaultError as exc:
        assert exc.field in params or exc.field in FAULT_PARAMETERS.get(fault, {}), (exc.field, str(exc))
        assert exc.field in str(exc)
        assert plant.faults == {}
    else:
        assert set(params) == set(FAULT_PARAMETERS.get(fault, {}))
        json.dumps(plant.truth())
        plant.step(1.0)  # and the physics runs with it
        assert all(0.0 <= v < 400.0 for v in plant.pressure.values())
    finally:
        plant.factory.close()


def test_every_new_fault_has_an_example_and_documented_parameters() -> None:
    assert set(EXAMPLE_PARAMS) == set(EXTRA_PLANT_FAULTS)
    for fault, params in EXAMPLE_PARAMS.items():
        assert set(params) == set(FAULT_PARAMETERS.get(fault, {})), fault


# -- a drawn plant (--plant-seed) ---------------------------------------------------------------


def _within(name: str, value: float, nominal: float) -> bool:
    lo, hi = PLANT_RANGES[name].bounds(nominal)
    return lo <= value <= hi


@given(st.integers(min_value=-(2**63), max_value=2**63))
@example(0)
@example(7)
def test_plant_draw_is_deterministic_and_within_every_documented_range(seed: int) -> None:
    drawn = PlantParams.draw(seed)
    assert drawn == PlantParams.draw(seed)
    nominal = PlantParams()
    for name in PLANT_RANGES:
        value, centre = getattr(drawn, name), getattr(nominal, name)
        if isinstance(value, Mapping):
            assert set(value) == set(centre)
            assert all(_within(name, value[k], centre[k]) for k in value), (name, value)
        elif isinstance(value, tuple):
            assert len(value) == len(centre)
            assert all(_within(name, v, c) for v, c in zip(value, centre, strict=True)), (name, value)
        else:
            assert _within(name, value, centre), (name, value)
    untouched = {f for f in PlantParams.__dataclass_fields__ if f not in PLANT_RANGES}
    assert all(getattr(drawn, f) == getattr(nominal, f) for f in untouched)


def test_plant_draw_varies_with_the_seed_and_each_zone_on_its_own() -> None:
    draws = [PlantParams.draw(seed) for seed in range(20)]
    assert len({d.pump_flow for d in draws}) == 20
    ratios = {round(d.zone_volume["calf"] / d.zone_volume["foot"], 6) for d in draws}
    assert len(ratios) == 20  # not one factor for every zone
    assert min(d.air_c for d in draws) < 20.0 < max(d.air_c for d in draws)


def test_plant_params_as_dict_is_json_and_in_the_truth(config: Config, clock: VirtualClock) -> None:
    drawn = PlantParams.draw(3)
    doc = json.loads(json.dumps(drawn.as_dict()))
    assert doc["pump_flow"] == pytest.approx(drawn.pump_flow)
    assert doc["zone_volume"]["calf"] == pytest.approx(drawn.zone_volume["calf"])
    assert doc["thermistor_lag_s"] == pytest.approx(list(drawn.thermistor_lag_s))
    assert doc["motor_load"]["calf_rollers"] == pytest.approx(drawn.motor_load["calf_rollers"])
    rig = build_sim(config, clock=clock.now, params=drawn)
    try:
        assert rig.plant.truth()["params"] == doc
        assert rig.plant.pad_c == pytest.approx((drawn.air_c + drawn.skin_c) / 2)
    finally:
        rig.close()


def test_plant_motor_load_sets_the_roller_current(config: Config, clock: VirtualClock) -> None:
    amps = []
    for load in (0.7, 1.4):
        params = PlantParams(motor_load={"foot_rollers": load, "calf_rollers": 1.0}, current_noise_a=0.0)
        rig = build_sim(config, clock=clock.now, params=params)
        try:
            rig.hardware.apply(Command(relay=True, foot_rollers=1.0))
            rig.plant.step(2.0)
            amps.append(rig.plant.motor_amps["foot_rollers"])
        finally:
            rig.close()
    assert amps[1] - amps[0] == pytest.approx(params.motor_load_a * 0.7, abs=0.01)


def test_plant_docs_list_every_fault_its_parameters_and_every_drawn_range() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "mqtt.md").read_text()
    for fault in (*PLANT_FAULTS, *EXTRA_PLANT_FAULTS):
        assert f"`{fault}`" in docs, fault
    for params in FAULT_PARAMETERS.values():
        for name in params:
            assert f"`{name}`" in docs, name
    for name in PLANT_RANGES:
        assert f"`{name}`" in docs, name
    assert "--plant-seed" in docs
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "--plant-seed" in readme
