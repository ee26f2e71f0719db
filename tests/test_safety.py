"""The safety supervisor on synthetic samples: every threshold at its edge, the latch, and reset."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping

import pytest

from device.config import Config, Safety
from device.safety import Expectations, Fault, FaultCode, Supervisor
from modes.limits import ZONES, Zone
from modes.signals import Sample

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

DT = 0.05
NO_HEAT = Expectations(heat_target_c=None)
HEAT_40 = Expectations(heat_target_c=40.0)
OUTPUTS_OFF: dict[str, float | bool] = {
    "foot_rollers": 0.0,
    "calf_rollers": 0.0,
    "pump": 0.0,
    "valve_foot": False,
    "valve_ankle": False,
    "valve_calf": False,
    "heater": 0.0,
    "relay": False,
}


def make_sample(
    t: float,
    *,
    temp: float | None = 30.0,
    temps: Mapping[str, float | None] | None = None,
    pressure: Mapping[Zone, float | None] | None = None,
    current: Mapping[str, float | None] | None = None,
    outputs: Mapping[str, float | bool] | None = None,
    errors: Mapping[str, str] | None = None,
    bus_error: str | None = None,
    rail_v: float | None = None,
) -> Sample:
    """A Sample with calm defaults: both pads at ``temp``, zones empty, motors idle, outputs off.

    The rail follows the relay (12 V when ``outputs`` has it on) unless ``rail_v`` is given.
    """
    if bus_error is not None:
        return Sample(
            t=t,
            temperature_c={"pad_1": None, "pad_2": None},
            pressure_mmhg=dict.fromkeys(ZONES),
            motor_current_a={"foot_rollers": None, "calf_rollers": None},
            rail_v=None,
            outputs={**OUTPUTS_OFF, **(outputs or {})},
            errors={"bus": bus_error},
            bus_error=bus_error,
        )
    return Sample(
        t=t,
        temperature_c=dict(temps) if temps is not None else {"pad_1": temp, "pad_2": temp},
        pressure_mmhg={**dict.fromkeys(ZONES, 0.0), **(pressure or {})},
        motor_current_a={"foot_rollers": 0.0, "calf_rollers": 0.0, **(current or {})},
        rail_v=rail_v if rail_v is not None else (12.0 if (outputs or {}).get("relay") else 0.0),
        outputs={**OUTPUTS_OFF, **(outputs or {})},
        errors=dict(errors or {}),
    )


def feed(
    supervisor: Supervisor,
    seconds: float,
    sample_at: Callable[[float], Sample],
    expect: Expectations = NO_HEAT,
    *,
    start: float = 0.0,
) -> Fault | None:
    """Check a sample every 50 ms for ``seconds``; return the first fault latched, else None."""
    for i in range(round(seconds / DT)):
        fault = supervisor.check(sample_at(start + i * DT), expect)
        if fault is not None:
            return fault
    return None


@pytest.fixture
def supervisor(config: Config) -> Supervisor:
    """A supervisor on the default envelope with a fixed wall clock."""
    return Supervisor(config.safety, thermistors=["pad_1", "pad_2"], wall_clock=lambda: 1_700_000_000.0)


def assert_trips(fault: Fault | None, code: FaultCode, at: float | None = None) -> Fault:
    """The fault is ``code`` (latched at sample time ``at`` when given)."""
    assert fault is not None, f"expected {code}, nothing tripped"
    assert fault.code is code, fault
    if at is not None:
        assert fault.t == pytest.approx(at, abs=DT / 2), fault
    return fault


# -- over-temperature --------------------------------------------------------------------------


def test_safety_over_temperature_at_the_trip_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 5.0, lambda t: make_sample(t, temp=45.0)) is None


def test_safety_over_temperature_just_above_trips_on_the_first_sample(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 1.0, lambda t: make_sample(t, temps={"pad_1": 30.0, "pad_2": 45.1}))
    fault = assert_trips(fault, FaultCode.OVER_TEMPERATURE, at=0.0)
    assert fault.message == "thermistor pad_2 read 45.1 °C, trip is 45.0 °C"
    assert fault.since == 1_700_000_000.0


# -- heater over target ------------------------------------------------------------------------


def test_safety_over_target_at_the_margin_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 30.0, lambda t: make_sample(t, temp=42.0), HEAT_40) is None


def test_safety_over_target_just_under_ten_seconds_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 9.95, lambda t: make_sample(t, temp=42.1), HEAT_40) is None
    assert feed(supervisor, 20.0, lambda t: make_sample(t, temp=41.9), HEAT_40, start=9.95) is None


def test_safety_over_target_for_ten_seconds_trips(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 15.0, lambda t: make_sample(t, temp=42.1), HEAT_40)
    assert_trips(fault, FaultCode.HEATER_OVER_TARGET, at=10.0)


def test_safety_over_target_is_not_checked_without_heat(supervisor: Supervisor) -> None:
    assert feed(supervisor, 15.0, lambda t: make_sample(t, temp=44.0)) is None


# -- heater runaway ----------------------------------------------------------------------------


def test_safety_runaway_just_below_the_rise_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 30.0, lambda t: make_sample(t, temp=30.0 + 0.049 * t)) is None


def test_safety_runaway_rise_with_heater_off_trips(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 30.0, lambda t: make_sample(t, temp=30.0 + 0.051 * t))
    fault = assert_trips(fault, FaultCode.HEATER_RUNAWAY, at=10.0)
    assert Supervisor.relay_must_drop(fault)


def test_safety_runaway_does_not_count_while_the_heater_is_on(supervisor: Supervisor) -> None:
    heating = {"heater": 1.0, "relay": True}
    assert feed(supervisor, 30.0, lambda t: make_sample(t, temp=30.0 + 0.06 * t, outputs=heating)) is None


# -- heater not heating ------------------------------------------------------------------------


def test_safety_not_heating_with_enough_gain_does_not_trip(supervisor: Supervisor) -> None:
    on = {"heater": 0.3, "relay": True}
    sample_at = lambda t: make_sample(t, temp=30.0 + 1.02 * t / 60.0, outputs=on)  # noqa: E731
    assert feed(supervisor, 240.0, sample_at, HEAT_40) is None


def test_safety_not_heating_with_too_little_gain_warns_without_latching(supervisor: Supervisor) -> None:
    on = {"heater": 0.3, "relay": True}  # a weak heater in a cold room: slow, and no hazard
    gain = lambda t: make_sample(t, temp=30.0 + 0.98 * t / 60.0, outputs=on)  # noqa: E731
    assert feed(supervisor, 59.0, gain, HEAT_40) is None and supervisor.warnings == {}
    assert feed(supervisor, 2.0, lambda t: gain(59.0 + t), HEAT_40) is None
    assert "HEAT_TARGET_UNREACHABLE" in supervisor.warnings
    assert "cannot reach its target" in supervisor.warnings["HEAT_TARGET_UNREACHABLE"]
    assert supervisor.latched is None


def test_safety_heat_balance_trips_when_the_heat_delivered_does_not_show(supervisor: Supervisor) -> None:
    # Full power for a minute and a half should warm the pad by several degrees; a flat reading
    # (both thermistors off the pad, or both reading low) is a hazard.
    on = {"heater": 1.0, "relay": True}
    assert feed(supervisor, 1.0, lambda t: make_sample(t, temp=30.0)) is None  # at rest first
    fault = feed(supervisor, 200.0, lambda t: make_sample(1.0 + t, temp=30.0, outputs=on), HEAT_40)
    assert fault is not None and fault.code is FaultCode.HEAT_BALANCE, fault
    assert 60.0 < fault.t < 120.0, fault


def test_safety_heat_balance_quiet_for_a_pad_that_warms(supervisor: Supervisor) -> None:
    on = {"heater": 1.0, "relay": True}
    warming = lambda t: make_sample(t, temp=30.0 + 0.04 * t, outputs=on)  # noqa: E731  (rated 0.0595 °C/s)
    assert feed(supervisor, 200.0, warming, HEAT_40) is None


def test_safety_not_heating_ignores_holding_near_the_target(supervisor: Supervisor) -> None:
    part = {"heater": 0.4, "relay": True}
    assert feed(supervisor, 240.0, lambda t: make_sample(t, temp=38.1, outputs=part), HEAT_40) is None


def test_safety_not_heating_ignores_a_pad_below_target_with_the_heater_off(supervisor: Supervisor) -> None:
    assert feed(supervisor, 240.0, lambda t: make_sample(t, temp=30.0), HEAT_40) is None


# -- temperature sensor faults -----------------------------------------------------------------


def test_safety_sensor_at_the_range_edge_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 10.0, lambda t: make_sample(t, temp=-10.0)) is None


def test_safety_sensor_out_of_range_for_two_samples_does_not_trip(supervisor: Supervisor) -> None:
    def sample_at(t: float) -> Sample:
        bad = round(t / DT) % 3 != 2  # two bad samples, then a good one
        return make_sample(t, temps={"pad_1": -10.1 if bad else -9.0, "pad_2": -9.0})

    assert feed(supervisor, 10.0, sample_at) is None


def test_safety_sensor_out_of_range_for_three_samples_trips(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 1.0, lambda t: make_sample(t, temps={"pad_1": -10.1, "pad_2": -9.0}))
    fault = assert_trips(fault, FaultCode.TEMP_SENSOR_FAULT, at=2 * DT)
    assert "pad_1" in fault.message and "-10.1" in fault.message


def test_safety_sensor_above_range_trips_as_over_temperature(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 1.0, lambda t: make_sample(t, temps={"pad_1": 80.1, "pad_2": 30.0}))
    assert_trips(fault, FaultCode.OVER_TEMPERATURE, at=0.0)


def test_safety_sensor_open_for_three_samples_trips(supervisor: Supervisor) -> None:
    def sample_at(t: float) -> Sample:
        return make_sample(t, temps={"pad_1": None, "pad_2": 30.0}, errors={"pad_1": "open circuit"})

    assert feed(supervisor, 2 * DT, sample_at) is None
    fault = feed(supervisor, 1.0, sample_at, start=2 * DT)
    fault = assert_trips(fault, FaultCode.TEMP_SENSOR_FAULT, at=2 * DT)
    assert "open circuit" in fault.message


def test_safety_sensor_reading_one_second_old_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 1.0, lambda t: make_sample(t)) is None
    last_good = 1.0 - DT
    assert supervisor.check(make_sample(last_good + 1.0, bus_error="EIO"), NO_HEAT) is None


def test_safety_sensor_reading_older_than_one_second_trips(supervisor: Supervisor) -> None:
    assert feed(supervisor, 1.0, lambda t: make_sample(t)) is None
    last_good = 1.0 - DT
    fault = supervisor.check(make_sample(last_good + 1.1, bus_error="EIO"), NO_HEAT)
    fault = assert_trips(fault, FaultCode.TEMP_SENSOR_FAULT)
    assert "1.10 s old" in fault.message


def test_safety_sensor_rate_just_below_the_limit_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 2.0, lambda t: make_sample(t, temp=30.0 + 4.9 * t)) is None


def test_safety_sensor_rate_above_the_limit_trips(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 2.0, lambda t: make_sample(t, temp=30.0 + 5.1 * t))
    fault = assert_trips(fault, FaultCode.TEMP_SENSOR_FAULT, at=DT)
    assert "°C/s" in fault.message


def test_safety_sensor_rate_ignores_an_extra_pass_milliseconds_later(supervisor: Supervisor) -> None:
    """The loop runs an extra pass right after a command: noise over 5 ms is not a 5 °C/s jump."""
    assert supervisor.check(make_sample(1.0, temp=30.0), NO_HEAT) is None
    assert supervisor.check(make_sample(1.005, temp=30.1), NO_HEAT) is None  # 20 °C/s over 5 ms
    assert supervisor.check(make_sample(1.05, temp=30.1), NO_HEAT) is None
    fault = supervisor.check(make_sample(1.1, temp=30.5), NO_HEAT)  # 8 °C/s over a full period
    assert_trips(fault, FaultCode.TEMP_SENSOR_FAULT, at=1.1)


def test_safety_sensors_disagreeing_at_the_limit_do_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 20.0, lambda t: make_sample(t, temps={"pad_1": 30.0, "pad_2": 33.0})) is None


def test_safety_sensors_disagreeing_just_under_five_seconds_do_not_trip(supervisor: Supervisor) -> None:
    apart = lambda t: make_sample(t, temps={"pad_1": 30.0, "pad_2": 33.1})  # noqa: E731
    assert feed(supervisor, 4.95, apart) is None
    together = lambda t: make_sample(t, temps={"pad_1": 30.0, "pad_2": 33.0})  # noqa: E731
    assert feed(supervisor, 20.0, together, start=4.95) is None


def test_safety_sensors_disagreeing_for_five_seconds_trip(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 20.0, lambda t: make_sample(t, temps={"pad_1": 30.0, "pad_2": 33.1}))
    fault = assert_trips(fault, FaultCode.TEMP_SENSOR_FAULT, at=5.0)
    assert "disagree" in fault.message


# -- over-pressure -----------------------------------------------------------------------------

TRIPS = {"foot": 135.0, "ankle": 95.0, "calf": 75.0}


@pytest.mark.parametrize("zone", ZONES)
def test_safety_over_pressure_at_the_trip_does_not_trip(supervisor: Supervisor, zone: Zone) -> None:
    held = {f"valve_{zone}": True, "relay": True}
    sample_at = lambda t: make_sample(t, pressure={zone: TRIPS[zone]}, outputs=held)  # noqa: E731
    assert feed(supervisor, 5.0, sample_at) is None


@pytest.mark.parametrize("zone", ZONES)
def test_safety_over_pressure_just_above_trips(supervisor: Supervisor, zone: Zone) -> None:
    held = {f"valve_{zone}": True, "relay": True}
    fault = feed(supervisor, 5.0, lambda t: make_sample(t, pressure={zone: TRIPS[zone] + 0.1}, outputs=held))
    fault = assert_trips(fault, FaultCode.OVER_PRESSURE, at=0.0)
    assert zone in fault.message and f"{TRIPS[zone]:.0f} mmHg" in fault.message


# -- pressure not rising -----------------------------------------------------------------------

PUMPING_FOOT = {"pump": 1.0, "valve_foot": True, "relay": True}


def test_safety_pumping_with_enough_rise_does_not_trip(supervisor: Supervisor) -> None:
    sample_at = lambda t: make_sample(t, pressure={"foot": 2.55 * t}, outputs=PUMPING_FOOT)  # noqa: E731
    assert feed(supervisor, 8.0, sample_at) is None


def test_safety_pumping_with_too_little_rise_trips(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 8.0, lambda t: make_sample(t, pressure={"foot": 2.45 * t}, outputs=PUMPING_FOOT))
    fault = assert_trips(fault, FaultCode.PRESSURE_NOT_RISING, at=2.0)
    assert "foot" in fault.message


def test_safety_setpoint_reached_within_tolerance_does_not_trip(supervisor: Supervisor) -> None:
    expect = Expectations(heat_target_c=None, setpoints_mmhg={"calf": 50.0})
    held = {"valve_calf": True, "relay": True}
    close = lambda t: make_sample(t, pressure={"calf": 45.0}, outputs=held)  # noqa: E731
    assert feed(supervisor, 30.0, close, expect) is None


def test_safety_setpoint_missed_just_under_ten_seconds_does_not_trip(supervisor: Supervisor) -> None:
    expect = Expectations(heat_target_c=None, setpoints_mmhg={"calf": 50.0})
    held = {"valve_calf": True, "relay": True}
    low = lambda t: make_sample(t, pressure={"calf": 44.9}, outputs=held)  # noqa: E731
    assert feed(supervisor, 9.95, low, expect) is None
    assert feed(supervisor, 30.0, lambda t: make_sample(t, pressure={"calf": 49.0}, outputs=held), expect,
                start=9.95) is None


def test_safety_setpoint_missed_for_ten_seconds_trips(supervisor: Supervisor) -> None:
    expect = Expectations(heat_target_c=None, setpoints_mmhg={"calf": 50.0})
    held = {"valve_calf": True, "relay": True}
    fault = feed(supervisor, 30.0, lambda t: make_sample(t, pressure={"calf": 44.9}, outputs=held), expect)
    fault = assert_trips(fault, FaultCode.PRESSURE_NOT_RISING, at=10.0)
    assert "setpoint 50.0 mmHg" in fault.message


# -- valve stuck closed ------------------------------------------------------------------------


def test_safety_zone_vented_below_ten_does_not_trip(supervisor: Supervisor) -> None:
    assert feed(supervisor, 10.0, lambda t: make_sample(t, pressure={"ankle": 9.9})) is None


def test_safety_zone_venting_in_time_does_not_trip(supervisor: Supervisor) -> None:
    slow_vent = lambda t: make_sample(t, pressure={"foot": 100.0 * math.exp(-t / 1.25)})  # noqa: E731
    assert feed(supervisor, 10.0, slow_vent) is None  # below 10 mmHg at 2.9 s


def test_safety_pressure_reading_that_drops_faster_than_venting_trips(supervisor: Supervisor) -> None:
    held = {"valve_foot": True, "relay": True}  # connected, holding: a hose pulled off the sensor
    fault = feed(supervisor, 2.0, lambda t: make_sample(t, pressure={"foot": 100.0 if t < 1.0 else 0.0},
                                                        outputs=held))
    fault = assert_trips(fault, FaultCode.PRESSURE_SENSOR_FAULT, at=1.0)
    assert "foot" in fault.message


def test_safety_pressure_reading_that_falls_as_fast_as_venting_does_not_trip(supervisor: Supervisor) -> None:
    fast_vent = lambda t: make_sample(t, pressure={"calf": 70.0 * math.exp(-t / 0.3)})  # noqa: E731
    assert feed(supervisor, 3.0, fast_vent) is None


def test_safety_zone_not_vented_within_three_seconds_trips(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 10.0, lambda t: make_sample(t, pressure={"ankle": 10.0}))
    fault = assert_trips(fault, FaultCode.VALVE_STUCK, at=3.0)
    assert Supervisor.relay_must_drop(fault)


def test_safety_vent_deadline_starts_when_the_valve_vents(supervisor: Supervisor) -> None:
    def sample_at(t: float) -> Sample:
        return make_sample(t, pressure={"foot": 80.0}, outputs={"valve_foot": t < 5.0, "relay": True})

    fault = feed(supervisor, 12.0, sample_at)
    assert_trips(fault, FaultCode.VALVE_STUCK, at=8.0)


# -- pump overrun ------------------------------------------------------------------------------


def test_safety_pump_on_just_under_ten_seconds_does_not_trip(supervisor: Supervisor) -> None:
    pumping = {"pump": 0.5, "relay": True}
    assert feed(supervisor, 9.95, lambda t: make_sample(t, outputs=pumping)) is None
    assert feed(supervisor, 20.0, lambda t: make_sample(t), start=9.95) is None


def test_safety_pump_on_for_ten_seconds_trips(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 20.0, lambda t: make_sample(t, outputs={"pump": 0.5, "relay": True}))
    assert_trips(fault, FaultCode.PUMP_OVERRUN, at=10.0)


# -- motor stall -------------------------------------------------------------------------------


def test_safety_motor_current_at_the_threshold_does_not_trip(supervisor: Supervisor) -> None:
    running = {"calf_rollers": 1.0, "relay": True}
    at_threshold = lambda t: make_sample(t, current={"calf_rollers": 2.0}, outputs=running)  # noqa: E731
    assert feed(supervisor, 5.0, at_threshold) is None


def test_safety_motor_inrush_shorter_than_half_a_second_does_not_trip(supervisor: Supervisor) -> None:
    running = {"foot_rollers": 1.0, "relay": True}

    def sample_at(t: float) -> Sample:
        return make_sample(t, current={"foot_rollers": 2.1 if t < 0.45 else 1.0}, outputs=running)

    assert feed(supervisor, 5.0, sample_at) is None


def test_safety_motor_current_above_threshold_for_half_a_second_trips(supervisor: Supervisor) -> None:
    running = {"foot_rollers": 1.0, "relay": True}
    fault = feed(supervisor, 5.0, lambda t: make_sample(t, current={"foot_rollers": 2.1}, outputs=running))
    fault = assert_trips(fault, FaultCode.MOTOR_STALL, at=0.5)
    assert "foot_rollers" in fault.message


# -- sensor bus --------------------------------------------------------------------------------


def test_safety_two_bus_errors_in_a_row_do_not_trip(supervisor: Supervisor) -> None:
    def sample_at(t: float) -> Sample:
        return make_sample(t) if round(t / DT) % 3 == 2 else make_sample(t, bus_error="[Errno 121] EREMOTEIO")

    assert feed(supervisor, 10.0, sample_at) is None


def test_safety_three_bus_errors_in_a_row_trip(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 1.0, lambda t: make_sample(t, bus_error="[Errno 121] Remote I/O error"))
    fault = assert_trips(fault, FaultCode.SENSOR_BUS_FAULT, at=2 * DT)
    assert "Remote I/O error" in fault.message


def test_safety_pressure_sensor_without_reading_for_three_samples_trips(supervisor: Supervisor) -> None:
    def sample_at(t: float) -> Sample:
        return make_sample(t, pressure={"calf": None}, errors={"calf": "open circuit"})

    assert feed(supervisor, 2 * DT, sample_at) is None
    fault = feed(supervisor, 1.0, sample_at, start=2 * DT)
    fault = assert_trips(fault, FaultCode.SENSOR_BUS_FAULT, at=2 * DT)
    assert "pressure sensor calf" in fault.message


# -- the latch and reset -----------------------------------------------------------------------


def test_safety_first_fault_wins_and_check_reports_it_once(supervisor: Supervisor) -> None:
    stall = supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "loop silent for 0.6 s", t=1.0)
    assert supervisor.latch(stall)
    assert not supervisor.latch(supervisor.new_fault(FaultCode.MOTOR_STALL, "later", t=1.1))
    assert supervisor.check(make_sample(1.0, temp=46.0), NO_HEAT) is stall
    assert supervisor.check(make_sample(1.05, temp=46.0), NO_HEAT) is None
    assert supervisor.latched is stall


def test_safety_latch_is_thread_safe(supervisor: Supervisor) -> None:
    results: list[bool] = []
    start = threading.Barrier(8)

    def race(i: int) -> None:
        start.wait()
        results.append(supervisor.latch(supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, f"thread {i}", t=0)))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=5)
    assert sorted(results) == [False] * 7 + [True]


def test_safety_reset_refused_while_over_temperature_persists(supervisor: Supervisor) -> None:
    assert_trips(feed(supervisor, 1.0, lambda t: make_sample(t, temps={"pad_1": 46.2, "pad_2": 40.0})),
                 FaultCode.OVER_TEMPERATURE)
    reason = supervisor.reset(make_sample(1.0, temps={"pad_1": 47.0, "pad_2": 40.0}))
    assert reason == "pad_1 still reads 47.0 °C, above the 45.0 °C trip"
    assert supervisor.latched is not None
    reason = supervisor.reset(make_sample(20.0, temps={"pad_1": 44.0, "pad_2": 43.0}))
    assert reason == "the pad still reads 44.0 °C; reset needs it at or below 42.0 °C (trip 45.0 °C)"
    assert supervisor.reset(make_sample(60.0, temps={"pad_1": 42.0, "pad_2": 41.0})) is None
    assert supervisor.latched is None


def test_safety_reset_refused_while_outputs_are_on(supervisor: Supervisor) -> None:
    assert_trips(feed(supervisor, 1.0, lambda t: make_sample(t, temp=46.0)), FaultCode.OVER_TEMPERATURE)
    reason = supervisor.reset(make_sample(2.0, outputs={"relay": True, "pump": 1.0}))
    assert reason is not None and "pump" in reason and "relay" in reason


def test_safety_reset_of_valve_stuck_needs_every_zone_vented(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 5.0, lambda t: make_sample(t, pressure={"foot": 60.0}))
    assert_trips(fault, FaultCode.VALVE_STUCK)
    assert "foot zone still at 60.0 mmHg" in (supervisor.reset(make_sample(5.0, pressure={"foot": 60.0})) or "")
    assert supervisor.reset(make_sample(6.0, pressure={"foot": 4.0})) is None


def test_safety_reset_of_bus_fault_needs_a_working_bus(supervisor: Supervisor) -> None:
    assert_trips(feed(supervisor, 1.0, lambda t: make_sample(t, bus_error="EIO")), FaultCode.SENSOR_BUS_FAULT)
    assert "sensor bus still fails" in (supervisor.reset(make_sample(1.0, bus_error="EIO")) or "")
    assert supervisor.reset(make_sample(1.05)) is None


def test_safety_reset_of_sensor_fault_needs_agreeing_sensors(supervisor: Supervisor) -> None:
    apart = {"pad_1": 30.0, "pad_2": 34.0}
    assert_trips(feed(supervisor, 6.0, lambda t: make_sample(t, temps=apart)), FaultCode.TEMP_SENSOR_FAULT)
    assert "disagree" in (supervisor.reset(make_sample(6.0, temps=apart)) or "")
    assert supervisor.reset(make_sample(6.05, temps={"pad_1": 30.0, "pad_2": 31.0})) is None


def test_safety_reset_of_over_target_needs_the_pad_under_target_plus_margin(supervisor: Supervisor) -> None:
    fault = feed(supervisor, 11.0, lambda t: make_sample(t, temp=42.5), HEAT_40)
    assert_trips(fault, FaultCode.HEATER_OVER_TARGET)
    assert "above target + margin 42.0 °C" in (supervisor.reset(make_sample(11.0, temp=42.5)) or "")
    assert supervisor.reset(make_sample(60.0, temp=41.5)) is None


def test_safety_reset_with_nothing_latched_is_accepted(supervisor: Supervisor) -> None:
    assert supervisor.reset(make_sample(0.0)) is None


def test_safety_checks_keep_running_while_latched(supervisor: Supervisor) -> None:
    supervisor.latch(supervisor.new_fault(FaultCode.CONTROL_LOOP_STALL, "loop silent", t=0.0))
    assert supervisor.check(make_sample(0.0), NO_HEAT) is not None
    # the over-target timer runs under the latch: after reset the condition is already known
    assert feed(supervisor, 10.0, lambda t: make_sample(t, temp=42.5), HEAT_40, start=0.05) is None
    assert supervisor.reset(make_sample(10.05)) is None
    fault = supervisor.check(make_sample(10.1, temp=42.5), HEAT_40)
    assert_trips(fault, FaultCode.HEATER_OVER_TARGET)


def test_safety_fault_as_dict_is_the_public_form() -> None:
    fault = Fault(code=FaultCode.OVER_PRESSURE, message="foot zone at 136.0 mmHg", since=1.23456, t=9.0)
    assert fault.as_dict() == {"code": "OVER_PRESSURE", "message": "foot zone at 136.0 mmHg", "since": 1.235}


def test_safety_fault_codes_are_their_names() -> None:
    assert all(code.value == code.name for code in FaultCode)
    assert len(FaultCode) == 18


def test_safety_needs_thermistor_names(config: Config) -> None:
    with pytest.raises(ValueError, match="thermistors"):
        Supervisor(config.safety, thermistors=[])


def test_safety_uses_a_tightened_envelope() -> None:
    tight = Safety(trip_temp_c=43.0, heat_target_max_c=41.0)
    supervisor = Supervisor(tight, thermistors=["pad_1", "pad_2"])
    fault = feed(supervisor, 1.0, lambda t: make_sample(t, temp=43.1))
    assert_trips(fault, FaultCode.OVER_TEMPERATURE, at=0.0)


def _rollers(duty: float, amps: float) -> Callable[[float], Sample]:
    outputs = {"foot_rollers": duty, "relay": True}
    return lambda t: make_sample(t, current={"foot_rollers": amps}, outputs=outputs)


def test_safety_low_duty_stall_below_the_per_duty_limit_does_not_trip(supervisor: Supervisor) -> None:
    # 1.2 A at duty 0.25 is 4.8 A per unit of duty: under the 5.0 limit (a heavily loaded roller)
    assert feed(supervisor, 2.0, _rollers(0.25, 1.2)) is None


def test_safety_low_duty_stall_above_the_per_duty_limit_trips_after_half_a_second(
    supervisor: Supervisor,
) -> None:
    # 1.9 A is under the 2.0 A absolute limit, but 7.6 A per unit of duty at duty 0.25: a stall
    assert feed(supervisor, 0.45, _rollers(0.25, 1.9)) is None
    fault = assert_trips(feed(supervisor, 0.2, _rollers(0.25, 1.9), start=0.45), FaultCode.MOTOR_STALL)
    assert "duty 0.25" in fault.message


def test_safety_per_duty_stall_rule_ignores_very_low_duty(supervisor: Supervisor) -> None:
    # at duty 0.05 the ratio is meaningless (0.3 A would read as 6 A per unit of duty)
    assert feed(supervisor, 2.0, _rollers(0.05, 0.3)) is None


def test_safety_vented_zone_reading_below_zero_is_a_sensor_fault(supervisor: Supervisor) -> None:
    """Open to the air a zone reads zero: a reading well below it means the sensor's zero drifted."""
    assert feed(supervisor, 5.0, lambda t: make_sample(t, pressure={"calf": -4.0})) is None
    fault = feed(supervisor, 5.0, lambda t: make_sample(5.0 + t, pressure={"calf": -8.0}))
    assert fault is not None and fault.code is FaultCode.PRESSURE_SENSOR_FAULT and "calf" in fault.message
