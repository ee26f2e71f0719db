"""The simulated plant: physics at plausible rates and every injected fault, seen through the drivers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from device.sim import SimRig
from drivers.clock import VirtualClock
from drivers.sim.plant import PLANT_FAULTS, PlantFaultError
from modes.limits import PRESSURE_CAP_MMHG, STALL_CURRENT_A, Zone
from modes.signals import Command, Sample

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
