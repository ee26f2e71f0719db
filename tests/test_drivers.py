"""Output drivers on gpiozero mock pins, and the thermistor / pressure / current conversions."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given
from hypothesis import strategies as st

from device.sim import mock_factory
from drivers.clock import VirtualClock
from drivers.errors import (
    DeviceClosedError,
    InterlockError,
    OutputBadValue,
    SensorFault,
    SensorOpenCircuit,
    SensorShortCircuit,
)
from drivers.heater import HeaterPad
from drivers.motor import RollerMotor
from drivers.output import OutputDriver
from drivers.pressure import CurrentSense, PressureTransducer
from drivers.pump import AirPump
from drivers.switches import HeartbeatPin, PowerRelay, ZoneValve
from drivers.thermistor import Thermistor

FWD, BWD, PUMP, VALVE, HEATER, RELAY, BEAT = 12, 13, 16, 20, 23, 24, 25


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A fresh mock pin factory with PWM pins, closed afterwards."""
    f = mock_factory()
    try:
        yield f
    finally:
        f.close()


def pin(factory: MockFactory, number: int) -> MockPWMPin:
    """The mock pin behind GPIO ``number``."""
    return factory.pin(number)


def history(factory: MockFactory, number: int) -> list[float]:
    """Every state the pin has been in, oldest first."""
    return [float(s.state) for s in pin(factory, number).states]


def make_all(factory: MockFactory, clock: VirtualClock) -> dict[str, OutputDriver]:
    """One of every output driver on its own pin."""
    relay = PowerRelay("relay", RELAY, pin_factory=factory)
    return {
        "relay": relay,
        "heartbeat": HeartbeatPin("heartbeat", BEAT, pin_factory=factory),
        "valve": ZoneValve("valve_foot", VALVE, pin_factory=factory),
        "pump": AirPump("pump", PUMP, pin_factory=factory),
        "heater": HeaterPad("heater", HEATER, relay=relay, pin_factory=factory),
        "rollers": RollerMotor("foot_rollers", FWD, BWD, clock=clock.now, pin_factory=factory),
    }


def turn_on(drivers: dict[str, OutputDriver]) -> None:
    """Drive every output on."""
    relay = drivers["relay"]
    assert isinstance(relay, PowerRelay)
    relay.energise()
    heartbeat = drivers["heartbeat"]
    assert isinstance(heartbeat, HeartbeatPin)
    heartbeat.toggle()
    valve = drivers["valve"]
    assert isinstance(valve, ZoneValve)
    valve.connect()
    pump = drivers["pump"]
    assert isinstance(pump, AirPump)
    pump.run(0.7)
    heater = drivers["heater"]
    assert isinstance(heater, HeaterPad)
    heater.set_duty(0.4)
    rollers = drivers["rollers"]
    assert isinstance(rollers, RollerMotor)
    rollers.drive(0.6)


ALL_PINS = (FWD, BWD, PUMP, VALVE, HEATER, RELAY, BEAT)


# -- start off, close -----------------------------------------------------------------------------


def test_drivers_start_off_and_never_pulse(factory: MockFactory) -> None:
    drivers = make_all(factory, VirtualClock())
    for number in ALL_PINS:
        assert pin(factory, number).function == "output"
        assert history(factory, number) == [0.0], f"GPIO{number} did not start off"
    assert not any(d.closed for d in drivers.values())


def test_drivers_close_twice_leaves_every_pin_off(factory: MockFactory) -> None:
    drivers = make_all(factory, VirtualClock())
    turn_on(drivers)
    assert all(pin(factory, n).state > 0 for n in (FWD, PUMP, VALVE, HEATER, RELAY, BEAT))
    for driver in drivers.values():
        driver.close()
        driver.close()
        assert driver.closed
    for number in ALL_PINS:
        assert pin(factory, number).state == 0, f"GPIO{number} left on after close"
        assert pin(factory, number).function == "input", f"GPIO{number} not released"
        assert history(factory, number)[-1] == 0.0


def test_drivers_refuse_work_after_close_but_allow_off(factory: MockFactory) -> None:
    drivers = make_all(factory, VirtualClock())
    for driver in drivers.values():
        driver.close()
        driver.off()  # always allowed
    relay, pump = drivers["relay"], drivers["pump"]
    assert isinstance(relay, PowerRelay) and isinstance(pump, AirPump)
    with pytest.raises(DeviceClosedError):
        relay.energise()
    with pytest.raises(DeviceClosedError):
        pump.run(0.5)
    assert relay.is_on is False and pump.duty == 0.0


def test_driver_context_manager_closes_to_off(factory: MockFactory) -> None:
    with ZoneValve("valve_calf", VALVE, pin_factory=factory) as valve:
        valve.connect()
        assert pin(factory, VALVE).state == 1
    assert valve.closed
    assert pin(factory, VALVE).state == 0
    assert history(factory, VALVE) == [0.0, 1.0, 0.0]


# -- range checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("duty", [-0.01, 1.01, 2, math.nan, math.inf, "0.5", True, None])
def test_pump_duty_out_of_range_is_refused(factory: MockFactory, duty: object) -> None:
    pump = AirPump("pump", PUMP, pin_factory=factory)
    pump.run(0.3)
    with pytest.raises(OutputBadValue) as info:
        pump.run(duty)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert "pump duty" in str(info.value)
    assert pump.duty == 0.3  # a refused value changes nothing


@pytest.mark.parametrize("speed", [1.2, -1.2, 0.81, -0.81, math.nan])
def test_motor_speed_beyond_max_speed_is_refused(factory: MockFactory, speed: float) -> None:
    rollers = RollerMotor("calf_rollers", FWD, BWD, clock=VirtualClock().now, pin_factory=factory,
                          max_speed=0.8)
    with pytest.raises(ValueError, match="calf_rollers speed") as info:
        rollers.drive(speed)
    assert isinstance(info.value, OutputBadValue)
    assert history(factory, FWD) == [0.0] and history(factory, BWD) == [0.0]


def test_motor_max_speed_itself_is_range_checked(factory: MockFactory) -> None:
    with pytest.raises(OutputBadValue, match="max_speed"):
        RollerMotor("foot_rollers", FWD, BWD, clock=VirtualClock().now, pin_factory=factory,
                    max_speed=1.5)


def test_heater_duty_above_max_duty_is_refused(factory: MockFactory) -> None:
    relay = PowerRelay("relay", RELAY, pin_factory=factory)
    heater = HeaterPad("heater", HEATER, relay=relay, pin_factory=factory, max_duty=0.6)
    relay.energise()
    heater.set_duty(0.6)
    assert heater.duty == pytest.approx(0.6)
    with pytest.raises(OutputBadValue, match=r"heater duty must be between 0.0 and 0.6") as info:
        heater.set_duty(0.61)
    assert isinstance(info.value, ValueError)
    with pytest.raises(OutputBadValue):
        heater.set_duty(-0.1)
    assert heater.duty == pytest.approx(0.6)


# -- heater interlock -----------------------------------------------------------------------------


def test_heater_refuses_to_heat_with_the_relay_off(factory: MockFactory) -> None:
    relay = PowerRelay("relay", RELAY, pin_factory=factory)
    heater = HeaterPad("heater", HEATER, relay=relay, pin_factory=factory)
    with pytest.raises(InterlockError, match="power relay is off") as info:
        heater.set_duty(0.5)
    assert isinstance(info.value, RuntimeError)
    assert history(factory, HEATER) == [0.0]
    heater.set_duty(0.0)  # zero is always fine
    assert history(factory, HEATER) == [0.0]


def test_heater_turns_its_pin_off_when_refused_after_the_relay_dropped(factory: MockFactory) -> None:
    relay = PowerRelay("relay", RELAY, pin_factory=factory)
    heater = HeaterPad("heater", HEATER, relay=relay, pin_factory=factory, pwm_frequency_hz=1)
    relay.energise()
    heater.set_duty(0.5)
    assert pin(factory, HEATER).state == 0.5
    assert pin(factory, HEATER).frequency == 1  # slow PWM
    relay.drop()
    with pytest.raises(InterlockError):
        heater.set_duty(0.5)
    assert pin(factory, HEATER).state == 0
    assert heater.duty == 0.0


# -- motor ----------------------------------------------------------------------------------------


def test_motor_reverse_passes_through_stop_for_the_dwell(factory: MockFactory) -> None:
    clock = VirtualClock()
    rollers = RollerMotor("foot_rollers", FWD, BWD, clock=clock.now, pin_factory=factory,
                          reverse_dwell_s=0.3, pwm_frequency_hz=1000)
    fwd, bwd = pin(factory, FWD), pin(factory, BWD)
    assert fwd.frequency == 1000 and bwd.frequency == 1000
    seen: list[tuple[float, float, float]] = []  # (time, forward, backward) after every call
    rollers.drive(0.8)
    seen.append((clock.now(), fwd.state, bwd.state))
    for _ in range(10):  # ask for reverse every 50 ms of virtual time
        clock.advance(0.05)
        rollers.drive(-0.8)
        seen.append((round(clock.now(), 3), fwd.state, bwd.state))
    assert seen[0] == (0.0, 0.8, 0.0)
    assert all(not (f > 0 and b > 0) for _t, f, b in seen), "both H-bridge sides on at once"
    backward_from = next(t for t, _f, b in seen if b > 0)
    stopped_at = 0.05
    assert backward_from == pytest.approx(stopped_at + 0.3)  # the dwell, on the injected clock
    assert all(f == 0 and b == 0 for t, f, b in seen if stopped_at <= t < backward_from)
    # Pin histories: forward fell to 0 and stayed there; backward rose once, after that.
    assert history(factory, FWD) == [0.0, 0.8, 0.0]
    assert history(factory, BWD) == [0.0, 0.8]
    fwd.assert_states([0.0, 0.8, 0.0])
    assert rollers.speed == pytest.approx(-0.8)
    assert rollers.target == -0.8


def test_motor_speed_change_in_one_direction_is_immediate(factory: MockFactory) -> None:
    clock = VirtualClock()
    rollers = RollerMotor("calf_rollers", FWD, BWD, clock=clock.now, pin_factory=factory)
    rollers.drive(-0.3)
    rollers.drive(-0.9)
    rollers.drive(-0.5)
    assert history(factory, BWD) == [0.0, 0.3, 0.9, 0.5]
    assert history(factory, FWD) == [0.0]


def test_motor_restart_after_stop_waits_for_the_dwell(factory: MockFactory) -> None:
    clock = VirtualClock()
    rollers = RollerMotor("foot_rollers", FWD, BWD, clock=clock.now, pin_factory=factory,
                          reverse_dwell_s=0.5)
    rollers.drive(0.5)
    clock.advance(1.0)
    rollers.off()
    assert rollers.speed == 0.0
    clock.advance(0.2)
    rollers.drive(-0.5)
    assert rollers.speed == 0.0  # 0.2 s after the stop: still standing
    clock.advance(0.3)
    rollers.drive(-0.5)
    assert rollers.speed == pytest.approx(-0.5)


def test_motor_current_readback(factory: MockFactory) -> None:
    amps = [1.25]
    rollers = RollerMotor("foot_rollers", FWD, BWD, clock=VirtualClock().now, pin_factory=factory,
                          current_reader=lambda: amps[0])
    assert rollers.read_current() == 1.25
    bare = RollerMotor("calf_rollers", 18, 19, clock=VirtualClock().now, pin_factory=factory)
    assert bare.read_current() == 0.0


# -- switches -------------------------------------------------------------------------------------


def test_valve_connects_and_vents(factory: MockFactory) -> None:
    valve = ZoneValve("valve_ankle", VALVE, pin_factory=factory)
    valve.connect()
    assert valve.is_connected
    valve.vent()
    assert not valve.is_connected
    assert history(factory, VALVE) == [0.0, 1.0, 0.0]


def test_heartbeat_toggles(factory: MockFactory) -> None:
    beat = HeartbeatPin("heartbeat", BEAT, pin_factory=factory)
    for _ in range(4):
        beat.toggle()
    assert history(factory, BEAT) == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_pump_runs_and_stops(factory: MockFactory) -> None:
    pump = AirPump("pump", PUMP, pin_factory=factory)
    assert not pump.is_running
    pump.run(0.45)
    assert pump.is_running and pin(factory, PUMP).state == 0.45
    pump.off()
    assert not pump.is_running and pin(factory, PUMP).state == 0


# -- thermistor -----------------------------------------------------------------------------------


def test_thermistor_nominal_point() -> None:
    t = Thermistor("pad_1")
    volts = t.volts(25.0)
    assert volts == pytest.approx(1.65)  # 10k over 10k from 3.3 V
    assert t.resistance(volts) == pytest.approx(10_000.0)
    assert t.celsius(1.65) == pytest.approx(25.0)


def test_thermistor_beta_equation_at_a_known_point() -> None:
    # 10k NTC, beta 3950: R(50 °C) = 10k * exp(3950 * (1/323.15 - 1/298.15)) = 3588 ohm.
    t = Thermistor("pad_1")
    ohm = 10_000.0 * math.exp(3950.0 * (1 / 323.15 - 1 / 298.15))
    assert ohm == pytest.approx(3588, abs=1)
    volts = 3.3 * ohm / (ohm + 10_000.0)
    assert t.celsius(volts) == pytest.approx(50.0, abs=1e-6)


@given(st.floats(min_value=-10.0, max_value=80.0))
def test_thermistor_round_trip(celsius: float) -> None:
    t = Thermistor("pad_2", beta=3435.0, series_ohm=4_700.0, supply_v=3.3)
    assert t.celsius(t.volts(celsius)) == pytest.approx(celsius, abs=1e-6)


def test_thermistor_hotter_reads_lower_volts() -> None:
    t = Thermistor("pad_1")
    assert t.volts(20.0) > t.volts(40.0) > t.volts(60.0)


@pytest.mark.parametrize("volts", [3.3, 3.25, 3.3 * 0.98])
def test_thermistor_open_circuit(volts: float) -> None:
    with pytest.raises(SensorOpenCircuit, match=r"pad_1.*open circuit") as info:
        Thermistor("pad_1").celsius(volts)
    assert isinstance(info.value, SensorFault) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("volts", [0.0, 0.01, 3.3 * 0.02])
def test_thermistor_short_circuit(volts: float) -> None:
    with pytest.raises(SensorShortCircuit, match=r"pad_2.*short circuit"):
        Thermistor("pad_2").celsius(volts)


# -- pressure transducer, current sense -----------------------------------------------------------


def test_pressure_transducer_linear_calibration() -> None:
    p = PressureTransducer("foot", zero_v=0.3, full_scale_v=3.0, full_scale_mmhg=300.0)
    assert p.mmhg(0.3) == pytest.approx(0.0)
    assert p.mmhg(1.65) == pytest.approx(150.0)
    assert p.mmhg(3.0) == pytest.approx(300.0)
    assert p.mmhg(0.3 + 2.7 * 120 / 300) == pytest.approx(120.0)
    for mmhg in (0.0, 10.0, 75.0, 135.0, 299.0):
        assert p.mmhg(p.volts(mmhg)) == pytest.approx(mmhg)


@pytest.mark.parametrize("volts", [0.0, 0.05, 0.14])
def test_pressure_transducer_open_circuit(volts: float) -> None:
    with pytest.raises(SensorOpenCircuit, match=r"calf.*open circuit"):
        PressureTransducer("calf").mmhg(volts)


@pytest.mark.parametrize("volts", [3.22, 3.3, 4.0])
def test_pressure_transducer_short_circuit(volts: float) -> None:
    with pytest.raises(SensorShortCircuit, match=r"ankle.*short"):
        PressureTransducer("ankle").mmhg(volts)


def test_pressure_fault_thresholds_follow_the_calibration() -> None:
    # A 0.5-4.5 V transducer reads 4.0 V at 262 mmHg: a value, not a short.
    p = PressureTransducer("foot", zero_v=0.5, full_scale_v=4.5, full_scale_mmhg=300.0)
    assert p.mmhg(4.0) == pytest.approx(262.5)
    assert p.mmhg(0.5) == pytest.approx(0.0)
    with pytest.raises(SensorOpenCircuit):
        p.mmhg(0.2)
    with pytest.raises(SensorShortCircuit):
        p.mmhg(4.9)


def test_pressure_transducer_rejects_a_bad_calibration() -> None:
    with pytest.raises(ValueError, match="zero_v"):
        PressureTransducer("foot", zero_v=3.0, full_scale_v=3.0)


def test_current_sense_conversion() -> None:
    c = CurrentSense("foot_rollers", volts_per_amp=0.5)
    assert c.amps(1.0) == pytest.approx(2.0)
    assert c.amps(0.0) == 0.0
    assert c.amps(-0.01) == 0.0  # amplifier offset below ground is no current, never negative
    assert c.volts(3.5) == pytest.approx(1.75)
    assert c.amps(c.volts(0.8)) == pytest.approx(0.8)


def test_mock_factory_gives_pwm_pins() -> None:
    f = mock_factory()
    try:
        assert isinstance(f.pin(PUMP), MockPWMPin)
    finally:
        f.close()
