"""Heat: over-temperature, over target, runaway, the energy balance, and a target the pad cannot reach.

| rule | threshold | latches | reset needs |
|---|---|---|---|
| either thermistor above trip | ``trip_temp_c`` (45 °C), every sample | OVER_TEMPERATURE | both at or below ``heat_target_max_c`` |
| above target + margin | ``over_target_margin_c`` for ``over_target_s`` | HEATER_OVER_TARGET | the pad at or below target + margin |
| rising with the heater off | ``runaway_rise_c`` per ``runaway_window_s`` | HEATER_RUNAWAY | no longer rising (half the rate) |
| energy balance: the heat delivered must show | lower-bound pad model minus the hottest reading above ``HEAT_BALANCE_MARGIN_C`` for ``HEAT_BALANCE_S`` | HEAT_BALANCE | every output off and both thermistors readable and in range |
| slow approach to target | gain < ``not_heating_gain_c`` per ``not_heating_window_s`` | warning HEAT_TARGET_UNREACHABLE (not latched) | clears when the pad gains again |

The energy balance integrates a pad model that can only under-estimate the pad: the heater's rated
warming rate less its tolerance, the largest loss coefficient, and the coldest surroundings seen (the
lowest reading at rest, less a margin). Where the pad took enough heat to warm several degrees but
the thermistors read flat (both detached, both drifting low fast), the model rises above the readings.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from device.config import Heater, Safety
from device.safety.faults import EPS, Expectations, FaultCode, Trip, beside
from modes.signals import Sample

# Below target minus this band the pad counts as "approaching" and must gain heat (Klipper's
# hysteresis idea). Near the target a controller may legitimately hold at part duty.
NOT_HEATING_BAND_C = 2.0
# Over target: falling by more than this since the window began restarts it (the pad is cooling).
OVER_TARGET_COOLING_C = 0.1
HEAT_BALANCE_MARGIN_C = 3.0  # the lower-bound pad model may lead the hottest reading by this much
HEAT_BALANCE_S = 5.0  # ... for this long before HEAT_BALANCE latches
SURROUNDINGS_MARGIN_C = 3.0  # the coldest surroundings: the lowest reading at rest less this
# ... and never warmer than the warmest the design allows (air 30 °C, skin 34 °C: a mean of 32 °C) less
# the margin: a pad still warm after a restart is not its surroundings.
SURROUNDINGS_MAX_C = 29.0
UNREACHABLE = "HEAT_TARGET_UNREACHABLE"


@dataclass
class _Approach:
    """A heating approach under watch: the pad should reach ``goal_c`` by ``deadline``."""

    start_c: float
    start_t: float
    goal_c: float
    deadline: float


class HeatChecks:
    """The heat rules; reads the sensor family's plausible readings of this sample."""

    codes = frozenset({
        FaultCode.OVER_TEMPERATURE, FaultCode.HEATER_OVER_TARGET, FaultCode.HEATER_RUNAWAY,
        FaultCode.HEAT_BALANCE,
    })

    def __init__(self, safety: Safety, heater: Heater, thermistors: Sequence[str]) -> None:
        self.safety = safety
        self.heater = heater
        self.thermistors = tuple(thermistors)
        self.valid: list[tuple[str, float]] = []  # set by the supervisor from the sensor family
        self.warning: str | None = None  # why the target cannot be reached, while that holds
        self.trip_target_c: float | None = None  # the target when HEATER_OVER_TARGET latched
        self._cooling: dict[str, deque[tuple[float, float]]] = {n: deque() for n in self.thermistors}
        self._over_target_since: float | None = None
        self._over_target_from_c = 0.0
        self._approach: _Approach | None = None
        self._model_c: float | None = None  # lower bound of the true pad temperature
        self._model_t: float | None = None
        self._surroundings_c: float | None = None
        self._balance_since: float | None = None

    def check(self, sample: Sample, expect: Expectations) -> Trip | None:
        """Over-temperature on every reading; the time-based rules on fresh plausible readings."""
        s = self.safety
        trip: Trip | None = None
        for name in self.thermistors:
            value = sample.temperature_c.get(name)
            if value is not None and value > s.trip_temp_c:
                trip = FaultCode.OVER_TEMPERATURE, (
                    f"thermistor {name} read {beside(value, s.trip_temp_c)} °C, trip is {s.trip_temp_c:.1f} °C"
                )
        if sample.bus_error is not None:
            return trip  # no readings: the time-based checks wait for fresh ones
        t = sample.t
        duty = float(sample.outputs.get("heater", 0.0))
        for result in (
            self._check_runaway(t, duty),
            self._check_over_target(t, expect.heat_target_c),
            self._check_balance(t, duty),
        ):
            trip = trip or result
        self._check_approach(t, duty, expect.heat_target_c)
        if trip is not None and trip[0] is FaultCode.HEATER_OVER_TARGET:
            self.trip_target_c = expect.heat_target_c
        return trip

    def _check_runaway(self, t: float, duty: float) -> Trip | None:
        s = self.safety
        if duty > 0.0:
            for history in self._cooling.values():
                history.clear()
            return None
        trip = None
        horizon = t - s.runaway_window_s + EPS
        for name, value in self.valid:
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

    def _check_over_target(self, t: float, target: float | None) -> Trip | None:
        s = self.safety
        if target is None or not self.valid:
            self._over_target_since = None
            return None
        name, hot = max(self.valid, key=_value)
        if hot <= target + s.over_target_margin_c:
            self._over_target_since = None
            return None
        if self._over_target_since is None or hot < self._over_target_from_c - OVER_TARGET_COOLING_C:
            # (Re)start the window: a pad cooling toward a lowered target is not a hazard; one
            # that holds or warms above target + margin (a stuck heater switch) trips.
            self._over_target_since = t
            self._over_target_from_c = hot
        if t - self._over_target_since >= s.over_target_s - EPS:
            return FaultCode.HEATER_OVER_TARGET, (
                f"thermistor {name} read {hot:.1f} °C, above target {target:.1f} + "
                f"{s.over_target_margin_c:.1f} °C for {t - self._over_target_since:.1f} s "
                f"(limit {s.over_target_s:.0f} s)"
            )
        return None

    def _check_balance(self, t: float, duty: float) -> Trip | None:
        """The lower-bound pad model against the hottest plausible reading."""
        if not self.valid:
            self._model_t = None  # a gap in the readings restarts the model from the next ones
            self._balance_since = None
            return None
        hot = max(v for _n, v in self.valid)
        cold = min(v for _n, v in self.valid)
        # The coldest surroundings: the first reading (the pad at rest at power-on), lowered by any
        # colder reading with the heater off.
        at_rest = min(cold - SURROUNDINGS_MARGIN_C, SURROUNDINGS_MAX_C)
        if self._surroundings_c is None or (duty <= 0.0 and at_rest < self._surroundings_c):
            self._surroundings_c = at_rest
        model, last_t = self._model_c, self._model_t
        self._model_t = t
        if model is None or last_t is None or self._surroundings_c is None:
            self._model_c = hot
            return None
        h = self.heater
        dt = max(0.0, t - last_t)
        power = h.rated_c_per_s * (1.0 - h.power_tolerance) * duty
        model += (power - h.loss_per_s * (model - self._surroundings_c)) * dt
        model = max(model, hot)  # the pad is at least as warm as a plausible reading shows
        self._model_c = model
        lead = model - hot
        if lead <= HEAT_BALANCE_MARGIN_C:
            self._balance_since = None
            return None
        if self._balance_since is None:
            self._balance_since = t
        if t - self._balance_since >= HEAT_BALANCE_S - EPS:
            return FaultCode.HEAT_BALANCE, (
                f"the heat delivered should have warmed the pad to at least {model:.1f} °C but the "
                f"thermistors read at most {hot:.1f} °C for {t - self._balance_since:.1f} s "
                f"(margin {HEAT_BALANCE_MARGIN_C} °C): thermistors off the pad or reading low, or the heater open"
            )
        return None

    def _check_approach(self, t: float, duty: float, target: float | None) -> None:
        """Klipper's idea as a warning: while heating toward the target, each window must bring a gain."""
        s = self.safety
        if target is None or not self.valid:
            self._approach = None
            self.warning = None
            return
        hot = max(v for _n, v in self.valid)
        if duty <= 0.0 or hot >= target - NOT_HEATING_BAND_C:
            self._approach = None
            if hot >= target - NOT_HEATING_BAND_C:
                self.warning = None
            return
        a = self._approach
        if a is None or hot >= a.goal_c:
            if a is not None:
                self.warning = None
            self._approach = _Approach(hot, t, hot + s.not_heating_gain_c, t + s.not_heating_window_s)
        elif t >= a.deadline - EPS and self.warning is None:
            self.warning = (
                f"the pad cannot reach its target: it rose only {hot - a.start_c:.2f} °C in "
                f"{t - a.start_t:.0f} s ({a.start_c:.1f} -> {hot:.1f} °C, target {target:.1f} °C); "
                "heat still works at what it reaches"
            )

    def persisting(self, code: FaultCode, sample: Sample) -> str | None:
        """Hysteresis for each heat fault (readings and range: the supervisor)."""
        s = self.safety
        temps = [v for v in sample.temperature_c.values() if v is not None]
        hot = max(temps) if temps else None
        if code is FaultCode.OVER_TEMPERATURE and hot is not None and hot > s.heat_target_max_c:
            return (  # an over-heated pad must cool to the highest target first
                f"the pad still reads {hot:.1f} °C; reset needs it at or below "
                f"{s.heat_target_max_c:.1f} °C (trip {s.trip_temp_c:.1f} °C)"
            )
        if code is FaultCode.HEATER_OVER_TARGET and self.trip_target_c is not None and hot is not None:
            limit = self.trip_target_c + s.over_target_margin_c
            if hot > limit:
                return f"the pad still reads {hot:.1f} °C, above target + margin {limit:.1f} °C"
        if code is FaultCode.HEATER_RUNAWAY:
            for name, history in self._cooling.items():  # still warming at half the trip rate
                if len(history) >= 2 and history[-1][1] - history[0][1] >= s.runaway_rise_c / 2:
                    return (
                        f"thermistor {name} still rising with the heater off: "
                        f"+{history[-1][1] - history[0][1]:.2f} °C in {history[-1][0] - history[0][0]:.1f} s"
                    )
        return None

    def cleared(self) -> None:
        """After an accepted reset: restart the time-based rules from the next readings."""
        self._approach = None
        self.warning = None
        self.trip_target_c = None
        self._model_c = self._model_t = None
        self._balance_since = None

    def doubt(self, sample: Sample) -> str | None:
        """Nothing at rest beyond the sensor family's judgement."""
        return None


def _value(item: tuple[str, float]) -> float:
    return item[1]
