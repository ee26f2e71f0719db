"""The safety supervisor in a closed loop with the simulated plant: faults injected into the physics.

Each test runs the production loop (device/harness.py SimUnit: the app's controller pass over mock
pins, the real drivers and the plant, at 20 Hz in virtual time) with a scripted operator in the
session's place: a control law of the test's own (an adversary's commands, such as a heater loop that
forgot its target) and the expectations it declares. Everything else is the product: the read, the
supervisor, the trip on a latch, the output drivers, the heartbeat. What happened is read from the
plant and the pins, never from the supervisor's own report.
"""

from __future__ import annotations

import pytest

from device.safety import Expectations, FaultCode
from modes.limits import ZONES, Zone
from modes.signals import Command, Sample
from tests.session_sim import DT, Bench, Control, Expect

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

CAPS: dict[Zone, float] = {"foot": 120.0, "ankle": 80.0, "calf": 60.0}


def hot(sample: Sample) -> float:
    """The hotter thermistor (both must read)."""
    values = [v for v in sample.temperature_c.values() if v is not None]
    assert values, sample.errors
    return max(values)


def bang_bang(target_c: float, **others: float) -> Control:
    """A bang-bang heater loop around ``target_c`` (full power below it), other outputs as given."""

    def control(_t: float, sample: Sample) -> Command:
        return Command(heater=1.0 if hot(sample) < target_c else 0.0, relay=True, **others)  # type: ignore[arg-type]

    return control


def inflate(zone: Zone, cap: float, *, hold_s: float = 3.0) -> tuple[Control, Expect]:
    """Fill ``zone`` to ``cap`` at full pump, hold, then vent; the matching expectations."""
    state: dict[str, float] = {}

    def control(t: float, sample: Sample) -> Command:
        p = sample.pressure_mmhg[zone] or 0.0
        if "full_at" not in state and p >= cap - 1.0:
            state["full_at"] = t
        full_at = state.get("full_at")
        if full_at is None:
            return Command(pump=1.0, connected=frozenset({zone}), relay=True)
        if t < full_at + hold_s:
            return Command(connected=frozenset({zone}), relay=True)
        return Command(relay=True)

    def expect(t: float) -> Expectations:
        full_at = state.get("full_at")
        venting = full_at is not None and t >= full_at + hold_s
        return Expectations(heat_target_c=None, setpoints_mmhg={} if venting else {zone: cap})

    return control, expect


def assert_safe(bench: Bench, *, vented: bool = True, except_zone: Zone | None = None) -> None:
    """Every output off at once (from the pins); every zone below 10 mmHg by the vent deadline."""
    plant = bench.plant
    assert plant.all_off(), plant.outputs()
    if not vented:
        return
    bench.idle(3.0)
    assert plant.all_off(), plant.outputs()
    for zone in ZONES:
        if zone != except_zone:
            assert plant.pressure[zone] < 10.0, (zone, plant.pressure)


# -- no false trips on a healthy plant -----------------------------------------------------------


def test_safety_plant_heating_from_cold_to_target_and_holding_does_not_trip(bench: Bench) -> None:
    heat = lambda _t: Expectations(heat_target_c=40.0)  # noqa: E731
    assert bench.run(600.0, bang_bang(40.0), heat) is None
    assert 39.0 < bench.plant.sensor_c["pad_1"] < 41.0
    assert bench.run(120.0, lambda _t, _s: Command(relay=True)) is None  # heat off: cooling is fine


@pytest.mark.parametrize("zone", ZONES)
def test_safety_plant_inflating_each_zone_to_its_cap_and_venting_no_trip(bench: Bench, zone: Zone) -> None:
    control, expect = inflate(zone, CAPS[zone])
    assert bench.run(15.0, control, expect) is None
    assert bench.plant.pressure[zone] < 10.0


def test_safety_plant_inflating_every_zone_together_does_not_trip(bench: Bench) -> None:
    def control(_t: float, sample: Sample) -> Command:
        full = (sample.pressure_mmhg["calf"] or 0.0) >= 55.0
        return Command(pump=0.0 if full else 1.0, connected=frozenset(ZONES), relay=True)

    setpoints = Expectations(heat_target_c=None, setpoints_mmhg=dict.fromkeys(ZONES, 55.0))
    assert bench.run(12.0, control, lambda _t: setpoints) is None
    assert all(bench.plant.pressure[z] > 50.0 for z in ZONES)
    assert bench.run(5.0, lambda _t, _s: Command(relay=True)) is None


def test_safety_plant_rollers_starting_and_reversing_do_not_trip(bench: Bench) -> None:
    def control(t: float, _s: Sample) -> Command:
        direction = 1.0 if int(t) % 4 < 2 else -1.0  # reverse every 2 s, the driver dwells between
        return Command(foot_rollers=direction, calf_rollers=-direction, relay=True)

    assert bench.run(20.0, control) is None
    peak = max(bench.plant.motor_amps.values())
    assert peak < 2.0


# -- injected plant faults -----------------------------------------------------------------------


def test_safety_plant_heater_runaway_latches_and_drops_the_relay(bench: Bench) -> None:
    bench.plant.inject("heater_runaway")
    fault = bench.run(30.0, lambda _t, _s: Command(foot_rollers=0.5, relay=True))
    assert fault is not None and fault.code is FaultCode.HEATER_RUNAWAY, fault
    assert fault.t <= 12.0
    assert not bench.plant.relay_on
    assert bench.plant.heater_power() == 0.0
    bench.idle(DT)
    assert "still rising" in (bench.reset() or "")
    assert_safe(bench)
    bench.idle(10.0)  # with the relay open the stuck switch cannot heat: the pad cools
    assert bench.reset() is None


def test_safety_plant_heater_open_latches_heat_balance(bench: Bench) -> None:
    bench.plant.inject("heater_open")
    fault = bench.run(150.0, bang_bang(40.0), lambda _t: Expectations(heat_target_c=40.0))
    assert fault is not None and fault.code is FaultCode.HEAT_BALANCE, fault
    assert 60.0 <= fault.t <= 120.0
    assert_safe(bench)
    assert bench.reset() is None  # judged again only by heating: a dead heater trips again


@pytest.mark.parametrize("fault_name", ["thermistor_open", "thermistor_short"])
def test_safety_plant_thermistor_fault_latches(bench: Bench, fault_name: str) -> None:
    heat = lambda _t: Expectations(heat_target_c=40.0)  # noqa: E731
    assert bench.run(5.0, bang_bang(40.0), heat) is None
    bench.plant.inject(fault_name, sensor="pad_2")
    fault = bench.run(1.0, bang_bang(40.0), heat)
    assert fault is not None and fault.code is FaultCode.TEMP_SENSOR_FAULT, fault
    assert fault.t <= 5.0 + 3 * DT + 1e-9 and "pad_2" in fault.message
    assert_safe(bench)
    assert "pad_2 still has no reading" in (bench.reset() or "")
    bench.plant.clear_faults()
    bench.idle(0.2)
    assert bench.reset() is None


def test_safety_plant_over_pressure_latches_and_vents(bench: Bench) -> None:
    fault = bench.run(20.0, lambda _t, _s: Command(pump=1.0, connected=frozenset({"foot"}), relay=True))
    assert fault is not None and fault.code is FaultCode.OVER_PRESSURE, fault
    assert bench.plant.pressure["foot"] < 135.0 + 5.0
    assert_safe(bench)
    assert bench.reset() is None


def test_safety_plant_valve_stuck_closed_latches_and_reset_waits_for_the_vent(bench: Bench) -> None:
    control, expect = inflate("foot", 100.0, hold_s=1.0)
    bench.plant.inject("valve_stuck_closed", zone="foot")
    fault = bench.run(20.0, control, expect)
    assert fault is not None and fault.code is FaultCode.VALVE_STUCK, fault
    assert not bench.plant.relay_on
    assert_safe(bench, except_zone="foot")
    assert bench.plant.pressure["foot"] > 10.0  # the physical truth: the stuck valve holds the air
    assert "foot zone still at" in (bench.reset() or "")
    bench.plant.clear_faults()
    bench.idle(3.0)
    assert bench.plant.pressure["foot"] < 10.0
    assert bench.reset() is None


@pytest.mark.parametrize("fault_name", ["valve_stuck_open", "pump_dead"])
def test_safety_plant_air_faults_latch_pressure_not_rising(bench: Bench, fault_name: str) -> None:
    bench.plant.inject(fault_name, **({"zone": "calf"} if fault_name == "valve_stuck_open" else {}))
    control, expect = inflate("calf", CAPS["calf"])
    fault = bench.run(20.0, control, expect)
    assert fault is not None and fault.code is FaultCode.PRESSURE_NOT_RISING, fault
    assert fault.t <= 2.0 + 2 * DT
    assert_safe(bench)
    assert bench.reset() is None


def test_safety_plant_pump_overrun_latches(bench: Bench) -> None:
    control = lambda _t, _s: Command(pump=0.5, connected=frozenset(ZONES), relay=True)  # noqa: E731
    fault = bench.run(20.0, control)
    assert fault is not None and fault.code is FaultCode.PUMP_OVERRUN, fault
    assert 10.0 <= fault.t <= 10.1
    assert_safe(bench)


@pytest.mark.parametrize("motor", ["foot_rollers", "calf_rollers"])
def test_safety_plant_motor_stall_latches(bench: Bench, motor: str) -> None:
    assert bench.run(2.0, lambda _t, _s: Command(**{motor: 0.8}, relay=True)) is None  # type: ignore[arg-type]
    bench.plant.inject("motor_stall", motor=motor)
    fault = bench.run(2.0, lambda _t, _s: Command(**{motor: 0.8}, relay=True))  # type: ignore[arg-type]
    assert fault is not None and fault.code is FaultCode.MOTOR_STALL and motor in fault.message, fault
    assert fault.t <= 2.0 + 0.5 + 2 * DT
    stalled = bench.last
    assert_safe(bench)
    assert stalled is not None and "still on" in (bench.supervisor.reset(stalled) or "")
    assert bench.reset() is None


def test_safety_plant_i2c_dead_latches_bus_fault(bench: Bench) -> None:
    control, expect = inflate("ankle", 70.0)
    assert bench.run(2.0, control, expect) is None
    bench.plant.inject("i2c_dead")
    fault = bench.run(1.0, control, expect)
    assert fault is not None and fault.code is FaultCode.SENSOR_BUS_FAULT, fault
    assert fault.t == pytest.approx(2.0 + 2 * DT)
    assert_safe(bench)
    assert "sensor bus still fails" in (bench.reset() or "")
    bench.plant.clear_faults()
    bench.idle(0.1)
    assert bench.reset() is None


def test_safety_plant_over_temperature_latches(bench: Bench) -> None:
    plant = bench.plant
    plant.pad_c = 43.0
    plant.sensor_c = dict.fromkeys(plant.sensor_c, 43.0)
    fault = bench.run(120.0, lambda _t, _s: Command(heater=1.0, relay=True))  # a loop that forgot its target
    assert fault is not None and fault.code is FaultCode.OVER_TEMPERATURE, fault
    assert plant.sensor_c["pad_1"] < 45.5
    assert_safe(bench, vented=False)
    bench.idle(DT)
    assert "reset needs it at or below 42.0 °C" in (bench.reset() or "")
    bench.idle(200.0)
    assert bench.reset() is None


def test_safety_plant_heater_over_target_latches(bench: Bench) -> None:
    plant = bench.plant
    plant.pad_c = 41.5
    plant.sensor_c = dict.fromkeys(plant.sensor_c, 41.5)
    heat = lambda _t: Expectations(heat_target_c=40.0)  # noqa: E731
    fault = bench.run(120.0, bang_bang(43.0), heat)  # a loop aiming 3 °C above the session's target
    assert fault is not None and fault.code is FaultCode.HEATER_OVER_TARGET, fault
    assert_safe(bench, vented=False)


def test_safety_plant_lowering_the_heat_target_while_warm_does_not_trip(bench: Bench) -> None:
    """The pad cools slowly toward a lowered target: above target + 2 °C for minutes, but falling."""
    plant = bench.plant
    plant.pad_c = 42.0
    plant.sensor_c = dict.fromkeys(plant.sensor_c, 42.0)
    expect = Expectations(heat_target_c=36.0, setpoints_mmhg={})
    fault = bench.run(120.0, lambda _t, _s: Command(relay=True), lambda _t: expect)  # heater off, relay on
    assert fault is None, fault
    assert plant.pad_c > 38.0  # still above target + margin: the check was exercised


def test_safety_plant_stuck_heater_above_a_target_still_trips_over_target(bench: Bench) -> None:
    """A pad held warm above target + 2 °C by a stuck-on switch is not cooling: the window runs out."""
    plant = bench.plant
    plant.pad_c = 42.0
    plant.sensor_c = dict.fromkeys(plant.sensor_c, 42.0)
    plant.inject("heater_runaway")
    expect = Expectations(heat_target_c=38.0, setpoints_mmhg={})
    fault = bench.run(30.0, lambda _t, _s: Command(relay=True), lambda _t: expect)
    assert fault is not None
    assert fault.code in (FaultCode.HEATER_OVER_TARGET, FaultCode.HEATER_RUNAWAY)
    assert plant.all_off(), plant.outputs()
