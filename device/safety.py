"""The safety supervisor: every check of DESIGN.md section 3 on every sample, faults latched until reset.

The checks read what the plant does (sensor values) and what the drivers read back from their pins,
never only what the logic asked for. Time comes from the samples (``Sample.t``), so the same code runs
on a virtual clock in tests and on the monotonic clock on the device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from device.config import Safety
from modes.limits import STALL_MIN_DUTY, ZONES, Zone
from modes.signals import MOTORS, Sample

log = logging.getLogger(__name__)

# Below target minus this band the pad counts as "approaching" and must gain heat (Klipper's
# hysteresis idea). Near the target a controller may legitimately hold at part duty.
NOT_HEATING_BAND_C = 2.0
# A zone counts as having reached its ramped setpoint within this margin (a controller's hysteresis).
SETPOINT_TOLERANCE_MMHG = 5.0
# Over target: falling by more than this since the window began restarts it (the pad is cooling).
OVER_TARGET_COOLING_C = 0.1
RATE_MIN_DT_S = 0.04  # the rate-of-change check compares readings at least this far apart
_EPS = 1e-9  # float slack on time comparisons (sample times are sums of 0.05 s steps)


class FaultCode(StrEnum):
    """The public fault codes (MQTT ``fault.code``, the fault log): values are the names."""

    OVER_TEMPERATURE = "OVER_TEMPERATURE"
    HEATER_OVER_TARGET = "HEATER_OVER_TARGET"
    HEATER_RUNAWAY = "HEATER_RUNAWAY"
    HEATER_NOT_HEATING = "HEATER_NOT_HEATING"
    TEMP_SENSOR_FAULT = "TEMP_SENSOR_FAULT"
    OVER_PRESSURE = "OVER_PRESSURE"
    PRESSURE_NOT_RISING = "PRESSURE_NOT_RISING"
    VALVE_STUCK = "VALVE_STUCK"
    PUMP_OVERRUN = "PUMP_OVERRUN"
    MOTOR_STALL = "MOTOR_STALL"
    SENSOR_BUS_FAULT = "SENSOR_BUS_FAULT"
    CONTROL_LOOP_STALL = "CONTROL_LOOP_STALL"


# DESIGN.md section 3 names dropping the power relay as these faults' own action. Every fault drops
# the relay anyway (hardware.safe_off), so this is informational.
RELAY_FAULTS = frozenset({FaultCode.HEATER_RUNAWAY, FaultCode.VALVE_STUCK})


@dataclass(frozen=True)
class Fault:
    """A latched fault: stable code, a message carrying the values, wall-clock and sample time."""

    code: FaultCode | str  # a str only for a code restored from a stored record that this firmware lacks
    message: str
    since: float  # wall-clock epoch seconds (time.time()) when it latched
    t: float  # the sample's clock time

    def as_dict(self) -> dict[str, str | float]:
        """The public form (MQTT ``fault``, the fault log): code, message, since."""
        return {"code": str(self.code), "message": self.message, "since": round(self.since, 3)}


@dataclass(frozen=True)
class Expectations:
    """What the session is trying to do this tick."""

    heat_target_c: float | None  # None while heat is not active
    setpoints_mmhg: Mapping[Zone, float] = field(default_factory=dict)  # ramped targets; 0/absent: venting


NOTHING_EXPECTED = Expectations(heat_target_c=None)


@dataclass
class _Approach:
    """A heating approach under watch: the pad must reach ``goal_c`` by ``deadline``."""

    start_c: float
    start_t: float
    goal_c: float
    deadline: float


class Supervisor:
    """Runs every safety check on every sample and latches the first fault until an explicit reset."""

    def __init__(
        self,
        safety: Safety,
        *,
        thermistors: Sequence[str],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not thermistors:
            raise ValueError("thermistors: the supervisor needs at least one thermistor name")
        self.safety = safety
        self._thermistors = tuple(thermistors)
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._latched: Fault | None = None
        self._unreported: Fault | None = None  # latched from another thread, not yet returned by check
        self._trip_target_c: float | None = None  # the heat target when HEATER_OVER_TARGET latched
        # temperatures
        self._temp_bad = dict.fromkeys(self._thermistors, 0)
        self._temp_last_good: dict[str, tuple[float, float]] = {}  # name -> (t, °C)
        self._temp_seen_t: float | None = None
        self._cooling: dict[str, deque[tuple[float, float]]] = {n: deque() for n in self._thermistors}
        self._over_target_since: float | None = None
        self._over_target_from_c = 0.0  # the hottest reading when the over-target window began
        self._disagree_since: float | None = None
        self._approach: _Approach | None = None
        # pressures and air
        self._pressure_bad = dict.fromkeys(ZONES, 0)
        self._pump_on_since: float | None = None
        self._fill_key: tuple[Zone, ...] = ()
        self._fill_start: dict[Zone, tuple[float, float]] = {}  # zone -> (t, mmHg) of the 2 s window
        self._below_setpoint_since: dict[Zone, float] = {}
        self._vent_since: dict[Zone, float | None] = dict.fromkeys(ZONES)
        # motors, bus
        self._stall_since: dict[str, float | None] = dict.fromkeys(MOTORS)
        self._bus_errors = 0

    # -- the latch ----------------------------------------------------------------------------

    @property
    def latched(self) -> Fault | None:
        """The latched fault, or None (safe to read from any thread)."""
        with self._lock:
            return self._latched

    def new_fault(self, code: FaultCode, message: str, *, t: float) -> Fault:
        """A Fault stamped with this supervisor's wall clock."""
        return Fault(code=code, message=message, since=self._wall_clock(), t=t)

    def latch(self, fault: Fault, *, report: bool = True) -> bool:
        """Latch ``fault`` unless one is already latched (first fault wins); thread-safe.

        ``report=False`` for a fault restored after a restart: it was logged when it first latched.
        """
        with self._lock:
            if self._latched is not None:
                return False
            self._latched = fault
            if report:
                self._unreported = fault
        log.error("fault latched: %s: %s", fault.code, fault.message)
        return True

    @staticmethod
    def relay_must_drop(fault: Fault) -> bool:
        """True when DESIGN.md names dropping the relay as this fault's own action (all faults drop it)."""
        return fault.code in RELAY_FAULTS

    # -- the checks ---------------------------------------------------------------------------

    def check(self, sample: Sample, expect: Expectations = NOTHING_EXPECTED) -> Fault | None:
        """Run every check on ``sample``; return the fault latched since the last call, else None.

        The checks keep running while a fault is latched so ``reset`` knows whether it cleared. A fault
        latched from another thread (the deadman) is returned once by the next call.
        """
        t = sample.t
        trips = (
            self._check_bus(sample),
            self._check_temperatures(sample, expect),
            self._check_pressures(sample, expect),
            self._check_pump(sample),
            self._check_motors(sample),
        )
        trip = next((found for found in trips if found is not None), None)
        if trip is not None and self._latched is None:
            code, message = trip
            if self.latch(self.new_fault(code, message, t=t)) and code is FaultCode.HEATER_OVER_TARGET:
                self._trip_target_c = expect.heat_target_c
        with self._lock:
            fresh, self._unreported = self._unreported, None
        return fresh

    def _check_bus(self, sample: Sample) -> tuple[FaultCode, str] | None:
        if sample.bus_error is None:
            self._bus_errors = 0
            return None
        self._bus_errors += 1
        if self._bus_errors >= self.safety.bus_errors_max:
            return FaultCode.SENSOR_BUS_FAULT, (
                f"sensor bus failed on {self._bus_errors} consecutive reads "
                f"(limit {self.safety.bus_errors_max}): {sample.bus_error}"
            )
        return None

    def _check_temperatures(self, sample: Sample, expect: Expectations) -> tuple[FaultCode, str] | None:
        s = self.safety
        t = sample.t
        trip: tuple[FaultCode, str] | None = None
        readings = sample.temperature_c
        bus_ok = sample.bus_error is None
        valid: list[tuple[str, float]] = []
        for name in self._thermistors:
            value = readings.get(name)
            last = self._temp_last_good.get(name)
            if value is None or not s.sensor_min_c <= value <= s.sensor_max_c:
                if bus_ok:  # a bus failure is counted by the bus check, not as a bad sensor
                    self._temp_bad[name] += 1
                    if self._temp_bad[name] >= s.sensor_bad_samples and trip is None:
                        why = sample.errors.get(name, "no reading") if value is None else f"read {value:.1f} °C"
                        trip = FaultCode.TEMP_SENSOR_FAULT, (
                            f"thermistor {name}: {why} for {self._temp_bad[name]} samples "
                            f"(valid range {s.sensor_min_c:.0f}..{s.sensor_max_c:.0f} °C)"
                        )
                since = last[0] if last is not None else self._temp_seen_t
                if since is not None and t - since > s.sensor_stale_s + _EPS and trip is None:
                    trip = FaultCode.TEMP_SENSOR_FAULT, (
                        f"thermistor {name}: last good reading {t - since:.2f} s old "
                        f"(limit {s.sensor_stale_s} s)"
                    )
            else:
                self._temp_bad[name] = 0
                # Rate over at least most of a sample period: an extra pass right after a command
                # comes milliseconds after the last one, where sensor noise alone would be a "jump".
                if last is not None and t - last[0] >= RATE_MIN_DT_S:
                    rate = (value - last[1]) / (t - last[0])
                    if abs(rate) > s.sensor_max_rate_c_per_s and trip is None:
                        trip = FaultCode.TEMP_SENSOR_FAULT, (
                            f"thermistor {name} jumped {last[1]:.1f} -> {value:.1f} °C in "
                            f"{t - last[0]:.2f} s ({rate:+.1f} °C/s, limit {s.sensor_max_rate_c_per_s} °C/s)"
                        )
                if last is None or t - last[0] >= RATE_MIN_DT_S:
                    self._temp_last_good[name] = (t, value)  # a close extra pass keeps the reference
                valid.append((name, value))
            if value is not None and value > s.trip_temp_c:
                trip = FaultCode.OVER_TEMPERATURE, (
                    f"thermistor {name} read {_beside(value, s.trip_temp_c)} °C, trip is {s.trip_temp_c:.1f} °C"
                )
        if self._temp_seen_t is None:
            self._temp_seen_t = t
        if not bus_ok:
            return trip  # no readings: the time-based checks wait for fresh ones
        heater_duty = float(sample.outputs.get("heater", 0.0))
        for result in (
            self._check_disagreement(t, valid),
            self._check_runaway(t, heater_duty, valid),
            self._check_heat(t, heater_duty, valid, expect.heat_target_c),
        ):
            if trip is None:
                trip = result
        return trip

    def _check_disagreement(self, t: float, valid: list[tuple[str, float]]) -> tuple[FaultCode, str] | None:
        s = self.safety
        if len(valid) < 2:
            self._disagree_since = None
            return None
        (cold_name, cold), (hot_name, hot) = min(valid, key=_value), max(valid, key=_value)
        if hot - cold <= s.sensor_disagree_c:
            self._disagree_since = None
            return None
        if self._disagree_since is None:
            self._disagree_since = t
        if t - self._disagree_since >= s.sensor_disagree_s - _EPS:
            return FaultCode.TEMP_SENSOR_FAULT, (
                f"thermistors disagree: {hot_name} {hot:.1f} °C vs {cold_name} {cold:.1f} °C for "
                f"{t - self._disagree_since:.1f} s (limit {s.sensor_disagree_c} °C for {s.sensor_disagree_s} s)"
            )
        return None

    def _check_runaway(
        self, t: float, heater_duty: float, valid: list[tuple[str, float]]
    ) -> tuple[FaultCode, str] | None:
        s = self.safety
        if heater_duty > 0.0:
            for history in self._cooling.values():
                history.clear()
            return None
        trip = None
        horizon = t - s.runaway_window_s + _EPS
        for name, value in valid:
            history = self._cooling[name]
            history.append((t, value))
            while len(history) > 1 and history[1][0] <= horizon:
                history.popleft()
            start_t, start_c = history[0]
            if start_t <= horizon and value - start_c >= s.runaway_rise_c and trip is None:
                trip = FaultCode.HEATER_RUNAWAY, (
                    f"thermistor {name} rose {value - start_c:.2f} °C in {t - start_t:.1f} s "
                    f"({start_c:.1f} -> {value:.1f} °C) with the heater duty at 0 "
                    f"(limit {s.runaway_rise_c} °C per {s.runaway_window_s:.0f} s)"
                )
        return trip

    def _check_heat(
        self, t: float, heater_duty: float, valid: list[tuple[str, float]], target: float | None
    ) -> tuple[FaultCode, str] | None:
        s = self.safety
        if target is None or not valid:
            self._over_target_since = None
            self._approach = None
            return None
        name, hot = max(valid, key=_value)
        trip = None
        limit = target + s.over_target_margin_c
        if hot > limit:
            if self._over_target_since is None or hot < self._over_target_from_c - OVER_TARGET_COOLING_C:
                # (Re)start the window: a pad cooling toward a lowered target is not a hazard; one
                # that holds or warms above target + margin (a stuck heater switch) trips.
                self._over_target_since = t
                self._over_target_from_c = hot
            if t - self._over_target_since >= s.over_target_s - _EPS:
                trip = FaultCode.HEATER_OVER_TARGET, (
                    f"thermistor {name} read {hot:.1f} °C, above target {target:.1f} + "
                    f"{s.over_target_margin_c:.1f} °C for {t - self._over_target_since:.1f} s "
                    f"(limit {s.over_target_s:.0f} s)"
                )
        else:
            self._over_target_since = None
        # Klipper's idea: while heating toward the target, each window must bring a minimum gain.
        if heater_duty <= 0.0 or hot >= target - NOT_HEATING_BAND_C:
            self._approach = None
            return trip
        a = self._approach
        if a is None or hot >= a.goal_c:
            self._approach = _Approach(hot, t, hot + s.not_heating_gain_c, t + s.not_heating_window_s)
        elif t >= a.deadline - _EPS and trip is None:
            trip = FaultCode.HEATER_NOT_HEATING, (
                f"heater on but the pad rose only {hot - a.start_c:.2f} °C in {t - a.start_t:.0f} s "
                f"({a.start_c:.1f} -> {hot:.1f} °C, target {target:.1f} °C; needs "
                f"{s.not_heating_gain_c} °C per {s.not_heating_window_s:.0f} s)"
            )
        return trip

    def _check_pressures(self, sample: Sample, expect: Expectations) -> tuple[FaultCode, str] | None:
        s = self.safety
        t = sample.t
        if sample.bus_error is not None:
            return None  # no readings; the bus check counts the failure
        trip: tuple[FaultCode, str] | None = None
        outputs = sample.outputs
        pressures = sample.pressure_mmhg
        pumping = float(outputs.get("pump", 0.0)) > 0.0
        connected = tuple(z for z in ZONES if outputs.get(f"valve_{z}"))
        if not pumping or connected != self._fill_key:
            self._fill_start.clear()
            self._fill_key = connected if pumping else ()
        setpoints = expect.setpoints_mmhg
        for zone in ZONES:
            venting = not outputs.get(f"valve_{zone}")
            if not venting:
                self._vent_since[zone] = None
            elif self._vent_since[zone] is None:
                self._vent_since[zone] = t
            p = pressures.get(zone)
            if p is None:
                self._pressure_bad[zone] += 1
                if self._pressure_bad[zone] >= s.sensor_bad_samples and trip is None:
                    trip = FaultCode.SENSOR_BUS_FAULT, (
                        f"pressure sensor {zone}: {sample.errors.get(zone, 'no reading')} for "
                        f"{self._pressure_bad[zone]} samples"
                    )
                continue
            self._pressure_bad[zone] = 0
            if p > s.pressure_trip_mmhg[zone]:
                trip = FaultCode.OVER_PRESSURE, (
                    f"{zone} zone at {_beside(p, s.pressure_trip_mmhg[zone])} mmHg, "
                    f"trip is {s.pressure_trip_mmhg[zone]:.0f} mmHg"
                )
            # valve stuck closed: a venting zone must fall below the vented level by the deadline
            vent_since = self._vent_since[zone]
            if (
                vent_since is not None
                and p >= s.vented_mmhg
                and t - vent_since >= s.vent_deadline_s - _EPS
                and trip is None
            ):
                trip = FaultCode.VALVE_STUCK, (
                    f"{zone} zone still at {p:.1f} mmHg {t - vent_since:.1f} s after its valve "
                    f"vented (must be below {s.vented_mmhg:.0f} mmHg within {s.vent_deadline_s:.0f} s)"
                )
            # leak, valve stuck open, pump dead: continuous pumping into a connected zone must raise it
            if zone in self._fill_key:
                start = self._fill_start.get(zone)
                if start is None:
                    self._fill_start[zone] = (t, p)
                elif t - start[0] >= s.not_rising_s - _EPS:
                    if p - start[1] < s.not_rising_min_rise_mmhg and trip is None:
                        trip = FaultCode.PRESSURE_NOT_RISING, (
                            f"{zone} zone rose {p - start[1]:.1f} mmHg in {t - start[0]:.1f} s of pumping "
                            f"({start[1]:.1f} -> {p:.1f} mmHg; needs {s.not_rising_min_rise_mmhg:.0f} mmHg "
                            f"per {s.not_rising_s:.0f} s)"
                        )
                    self._fill_start[zone] = (t, p)
            # the ramped setpoint must be reached within the deadline
            setpoint = setpoints.get(zone, 0.0)
            if setpoint > 0.0 and p < setpoint - SETPOINT_TOLERANCE_MMHG:
                since = self._below_setpoint_since.setdefault(zone, t)
                if t - since >= s.setpoint_reach_s - _EPS and trip is None:
                    trip = FaultCode.PRESSURE_NOT_RISING, (
                        f"{zone} zone at {p:.1f} mmHg, setpoint {setpoint:.1f} mmHg not reached in "
                        f"{t - since:.1f} s (limit {s.setpoint_reach_s:.0f} s)"
                    )
            else:
                self._below_setpoint_since.pop(zone, None)
        return trip

    def _check_pump(self, sample: Sample) -> tuple[FaultCode, str] | None:
        s = self.safety
        if float(sample.outputs.get("pump", 0.0)) <= 0.0:
            self._pump_on_since = None
            return None
        if self._pump_on_since is None:
            self._pump_on_since = sample.t
        on_s = sample.t - self._pump_on_since
        if on_s >= s.pump_max_on_s - _EPS:
            return FaultCode.PUMP_OVERRUN, (
                f"pump on continuously for {on_s:.1f} s (limit {s.pump_max_on_s:.0f} s)"
            )
        return None

    def _check_motors(self, sample: Sample) -> tuple[FaultCode, str] | None:
        s = self.safety
        if sample.bus_error is not None:
            return None
        trip = None
        for motor in MOTORS:
            amps = sample.motor_current_a.get(motor)
            duty = abs(float(sample.outputs.get(motor, 0.0)))
            per_duty = amps / duty if amps is not None and duty >= STALL_MIN_DUTY else 0.0
            if amps is None or (amps <= s.stall_current_a and per_duty <= s.stall_amps_per_duty):
                self._stall_since[motor] = None
                continue
            since = self._stall_since[motor]
            if since is None:
                since = self._stall_since[motor] = sample.t
            if sample.t - since >= s.stall_s - _EPS and trip is None:
                trip = FaultCode.MOTOR_STALL, (
                    f"{motor} drew {amps:.2f} A at duty {duty:.2f} for {sample.t - since:.2f} s "
                    f"(stall above {s.stall_current_a} A, or above {s.stall_amps_per_duty} A per unit "
                    f"of duty, for {s.stall_s} s)"
                )
        return trip

    # -- reset --------------------------------------------------------------------------------

    def reset(self, sample: Sample) -> str | None:
        """Clear the latched fault if its condition has cleared: None when accepted, else the reason."""
        fault = self.latched
        if fault is None:
            return None
        reason = self._persisting(fault.code, sample)
        if reason is not None:
            log.warning("reset of %s refused: %s", fault.code, reason)
            return reason
        with self._lock:
            if self._latched is not fault:  # another fault latched meanwhile: that one must be reset
                return f"another fault latched meanwhile: {self._latched.code if self._latched else 'none'}"
            self._latched = None
            self._unreported = None
        self._approach = None
        self._trip_target_c = None
        log.info("fault %s reset", fault.code)
        return None

    def _persisting(self, code: FaultCode | str, sample: Sample) -> str | None:
        """Why the fault's condition (or a sensor needed to judge it) has not cleared, else None."""
        s = self.safety
        if sample.bus_error is not None:
            return f"the sensor bus still fails: {sample.bus_error}"
        on = [name for name, value in sample.outputs.items() if value]
        if on:
            return f"outputs still on: {', '.join(sorted(on))}"
        temps = sample.temperature_c
        for name in self._thermistors:
            value = temps.get(name)
            if value is None:
                return f"thermistor {name} still has no reading: {sample.errors.get(name, 'no value')}"
            if value > s.trip_temp_c:
                shown = _beside(value, s.trip_temp_c)
                return f"{name} still reads {shown} °C, above the {s.trip_temp_c:.1f} °C trip"
            if code is FaultCode.OVER_TEMPERATURE and value > s.heat_target_max_c:
                return (  # hysteresis: an over-heated pad must cool to the highest target first
                    f"{name} still reads {value:.1f} °C; reset needs it at or below "
                    f"{s.heat_target_max_c:.1f} °C (trip {s.trip_temp_c:.1f} °C)"
                )
            if not s.sensor_min_c <= value <= s.sensor_max_c:
                return (
                    f"thermistor {name} still reads {value:.1f} °C, outside "
                    f"{s.sensor_min_c:.0f}..{s.sensor_max_c:.0f} °C"
                )
        for zone in ZONES:
            p = sample.pressure_mmhg.get(zone)
            if p is None:
                return f"pressure sensor {zone} still has no reading: {sample.errors.get(zone, 'no value')}"
            if p > s.pressure_trip_mmhg[zone]:
                trip_mmhg = s.pressure_trip_mmhg[zone]
                return f"{zone} zone still at {p:.1f} mmHg, above its {trip_mmhg:.0f} mmHg trip"
            if code is FaultCode.VALVE_STUCK and p >= s.vented_mmhg:
                return f"{zone} zone still at {p:.1f} mmHg, not vented below {s.vented_mmhg:.0f} mmHg"
        if code is FaultCode.TEMP_SENSOR_FAULT:
            values = [v for v in temps.values() if v is not None]
            if len(values) >= 2 and max(values) - min(values) > s.sensor_disagree_c:
                return (
                    f"thermistors still disagree by {max(values) - min(values):.1f} °C "
                    f"(limit {s.sensor_disagree_c} °C)"
                )
        if code is FaultCode.HEATER_OVER_TARGET and self._trip_target_c is not None:
            limit = self._trip_target_c + s.over_target_margin_c
            hot = max(v for v in temps.values() if v is not None)
            if hot > limit:
                return f"the pad still reads {hot:.1f} °C, above target + margin {limit:.1f} °C"
        if code is FaultCode.HEATER_RUNAWAY:
            for name, history in self._cooling.items():  # hysteresis: still warming at half the trip rate
                if len(history) >= 2 and history[-1][1] - history[0][1] >= s.runaway_rise_c / 2:
                    return (
                        f"thermistor {name} still rising with the heater off: "
                        f"+{history[-1][1] - history[0][1]:.2f} °C in {history[-1][0] - history[0][0]:.1f} s"
                    )
        if code is FaultCode.MOTOR_STALL:
            for motor in MOTORS:
                amps = sample.motor_current_a.get(motor)
                if amps is not None and amps > s.stall_current_a:
                    return f"{motor} still draws {amps:.2f} A (stall above {s.stall_current_a} A)"
        return None


def _value(item: tuple[str, float]) -> float:
    return item[1]


def _beside(value: float, limit: float) -> str:
    """``value`` with one decimal, or two when one would print it equal to ``limit``."""
    text = f"{value:.1f}"
    return text if text != f"{limit:.1f}" else f"{value:.2f}"
