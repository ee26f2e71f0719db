"""device/hardware.py on the simulated rig: samples match the plant, bus errors, safe_off, close."""

from __future__ import annotations

import pytest

from device.sim import SimRig
from drivers.clock import VirtualClock
from modes.limits import ZONES
from modes.signals import Command, Sample

TICK_S = 0.05
BUSY = Command(relay=True, pump=1.0, connected=frozenset({"foot", "ankle"}), heater=0.8,
               foot_rollers=0.6, calf_rollers=-0.4)


def run(rig: SimRig, clock: VirtualClock, command: Command, seconds: float) -> Sample:
    """The 20 Hz loop with a fixed command; returns the last sample."""
    sample = rig.hardware.read_sample()
    for _ in range(round(seconds / TICK_S)):
        rig.hardware.apply(command)
        rig.plant.step(TICK_S)
        clock.advance(TICK_S)
        sample = rig.hardware.read_sample()
    return sample


def test_read_sample_matches_the_plant(rig: SimRig, clock: VirtualClock) -> None:
    sample = run(rig, clock, BUSY, 2.5)
    plant = rig.plant
    assert sample.ok and sample.errors == {}
    assert sample.t == pytest.approx(clock.now())
    assert plant.pressure["foot"] > 30.0 and plant.pressure["calf"] == 0.0
    for zone in ZONES:
        assert sample.pressure_mmhg[zone] == pytest.approx(plant.pressure[zone], abs=1.0), zone
    for name, truth in plant.sensor_c.items():
        assert sample.temperature_c[name] == pytest.approx(truth, abs=0.15), name
    for motor, truth in plant.motor_amps.items():
        assert truth > 0.2
        assert sample.motor_current_a[motor] == pytest.approx(truth, abs=0.05), motor
    assert sample.rail_v == pytest.approx(12.0, abs=0.05)
    truth_out = plant.outputs()
    for key, value in sample.outputs.items():  # read back from the drivers, checked at the pins
        assert truth_out[key] == pytest.approx(value), key
    assert sample.outputs["calf_rollers"] == pytest.approx(-0.4)
    assert rig.hardware.rollers["foot_rollers"].read_current() == sample.motor_current_a["foot_rollers"]


def test_read_sample_reports_a_sensor_fault_per_sensor(rig: SimRig, clock: VirtualClock) -> None:
    rig.plant.inject("thermistor_short", sensor="pad_1")
    sample = rig.hardware.read_sample()
    assert sample.ok
    assert sample.temperature_c["pad_1"] is None and "short circuit" in sample.errors["pad_1"]
    assert sample.temperature_c["pad_2"] is not None
    assert all(v is not None for v in sample.pressure_mmhg.values())


def test_read_sample_on_a_dead_bus_never_raises(rig: SimRig, clock: VirtualClock) -> None:
    run(rig, clock, BUSY, 1.0)
    rig.plant.inject("i2c_dead")
    for _ in range(3):
        sample = rig.hardware.read_sample()
        assert not sample.ok
        assert sample.bus_error is not None and "0x48" in sample.bus_error
        assert sample.errors["bus"] == sample.bus_error
        assert all(v is None for v in sample.pressure_mmhg.values())
        assert all(v is None for v in sample.temperature_c.values())
        assert all(v is None for v in sample.motor_current_a.values())
        assert sample.rail_v is None
        assert sample.outputs["relay"] is True  # outputs are read from the drivers, not the bus
    rig.plant.clear_faults()
    assert rig.hardware.read_sample().ok


def test_read_sample_with_a_missing_converter_sets_bus_error(rig: SimRig) -> None:
    del rig.plant.bus.devices[0x49]
    sample = rig.hardware.read_sample()
    assert sample.bus_error is not None and "0x49" in sample.bus_error


def test_read_sample_with_a_hung_conversion_sets_bus_error(rig: SimRig) -> None:
    rig.plant.bus.devices[0x48].busy_polls = 10_000
    sample = rig.hardware.read_sample()
    assert sample.bus_error is not None and "no result" in sample.bus_error


def test_apply_without_the_relay_turns_everything_off(rig: SimRig, clock: VirtualClock) -> None:
    run(rig, clock, BUSY, 1.0)
    assert not rig.plant.all_off()
    rig.hardware.apply(Command(heater=1.0, pump=1.0, connected=frozenset({"foot"})))  # relay False
    assert rig.plant.all_off()
    assert rig.plant.outputs()["relay"] is False


@pytest.mark.parametrize("failing", ["heater", "pump", "foot_rollers", "valve_ankle", "relay"])
def test_safe_off_turns_everything_off_even_if_one_driver_raises(
    rig: SimRig, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    run(rig, clock, BUSY, 0.5)
    hw = rig.hardware
    driver = {
        "heater": hw.heater, "pump": hw.pump, "foot_rollers": hw.rollers["foot_rollers"],
        "valve_ankle": hw.valves["ankle"], "relay": hw.relay,
    }[failing]

    def broken() -> None:
        raise RuntimeError(f"{failing} driver is wedged")

    method = {"valve_ankle": "vent", "relay": "drop"}.get(failing, "off")
    monkeypatch.setattr(driver, method, broken)
    hw.safe_off()
    out = rig.plant.outputs()
    still_on = {k for k, v in out.items() if v and k != "heartbeat"}
    assert still_on <= {failing}, f"safe_off left {still_on} on"
    if failing != "relay":
        assert out["relay"] is False  # the relay cuts the one load whose driver failed
        assert rig.plant.heater_power() == 0.0 and rig.plant.pump_duty() == 0.0


def test_close_twice_leaves_every_pin_off_and_released(rig: SimRig, clock: VirtualClock) -> None:
    run(rig, clock, BUSY, 0.5)
    rig.hardware.close()
    rig.hardware.close()
    assert rig.plant.all_off()
    for name, number in (("pump", 16), ("heater", 23), ("relay", 24), ("valve_foot", 20)):
        assert rig.factory.pin(number).function == "input", name
        assert rig.factory.pin(number).state == 0, name
