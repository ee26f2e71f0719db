"""Sensors and bus: a failing I2C bus, thermistors that are open, shorted, stale, jumping or disagreeing.

| rule | threshold (config ``safety``) | latches | reset needs |
|---|---|---|---|
| bus errors in a row | ``bus_errors_max`` (3) | SENSOR_BUS_FAULT | a clean read of every sensor |
| thermistor out of range / no reading | ``sensor_min_c``..``sensor_max_c`` for ``sensor_bad_samples`` | TEMP_SENSOR_FAULT | both read in range and agree |
| last good reading too old | ``sensor_stale_s`` | TEMP_SENSOR_FAULT | as above |
| reading jumps | ``sensor_max_rate_c_per_s`` | TEMP_SENSOR_FAULT | as above |
| thermistors disagree | ``sensor_disagree_c`` for ``sensor_disagree_s`` | TEMP_SENSOR_FAULT | as above |
| pressure sensor without a reading | ``sensor_bad_samples`` | SENSOR_BUS_FAULT | every zone reads |
"""

from __future__ import annotations

from collections.abc import Sequence

from device.config import Safety
from device.safety.faults import EPS, RATE_MIN_DT_S, Expectations, FaultCode, Trip
from modes.limits import ZONES
from modes.signals import Sample


class SensorChecks:
    """The sensor and bus rules; ``valid`` holds this sample's plausible thermistor readings."""

    codes = frozenset({FaultCode.SENSOR_BUS_FAULT, FaultCode.TEMP_SENSOR_FAULT})

    def __init__(self, safety: Safety, thermistors: Sequence[str]) -> None:
        self.safety = safety
        self.thermistors = tuple(thermistors)
        self._bus_errors = 0
        self._temp_bad = dict.fromkeys(self.thermistors, 0)
        self._temp_last_good: dict[str, tuple[float, float]] = {}  # name -> (t, °C)
        self._temp_seen_t: float | None = None
        self._disagree_since: float | None = None
        self._pressure_bad = dict.fromkeys(ZONES, 0)
        self.valid: list[tuple[str, float]] = []

    def check(self, sample: Sample, expect: Expectations) -> Trip | None:
        """Bus, thermistor and pressure-reading rules on one sample."""
        bus = self._check_bus(sample)
        temps = self._check_thermistors(sample)
        pressures = self._check_pressure_readings(sample)
        return bus or temps or pressures

    def _check_bus(self, sample: Sample) -> Trip | None:
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

    def _check_thermistors(self, sample: Sample) -> Trip | None:
        s = self.safety
        t = sample.t
        trip: Trip | None = None
        bus_ok = sample.bus_error is None
        self.valid = valid = []
        for name in self.thermistors:
            value = sample.temperature_c.get(name)
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
                if since is not None and t - since > s.sensor_stale_s + EPS and trip is None:
                    trip = FaultCode.TEMP_SENSOR_FAULT, (
                        f"thermistor {name}: last good reading {t - since:.2f} s old "
                        f"(limit {s.sensor_stale_s} s)"
                    )
                continue
            self._temp_bad[name] = 0
            # Rate over at least most of a sample period: an extra pass right after a command
            # comes milliseconds after the last one, where sensor noise alone would be a "jump".
            if last is not None and t - last[0] >= RATE_MIN_DT_S:
                rate = (value - last[1]) / (t + sample.read_s - last[0])  # over the longest it can be
                if abs(rate) > s.sensor_max_rate_c_per_s and trip is None:
                    trip = FaultCode.TEMP_SENSOR_FAULT, (
                        f"thermistor {name} jumped {last[1]:.1f} -> {value:.1f} °C in "
                        f"{t + sample.read_s - last[0]:.2f} s ({rate:+.1f} °C/s, limit {s.sensor_max_rate_c_per_s} °C/s)"
                    )
            if last is None or t - last[0] >= RATE_MIN_DT_S:
                self._temp_last_good[name] = (t, value)  # a close extra pass keeps the reference
            valid.append((name, value))
        if self._temp_seen_t is None:
            self._temp_seen_t = t
        if not bus_ok:
            return trip
        return trip or self._check_disagreement(t, valid)

    def _check_disagreement(self, t: float, valid: list[tuple[str, float]]) -> Trip | None:
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
        if t - self._disagree_since >= s.sensor_disagree_s - EPS:
            return FaultCode.TEMP_SENSOR_FAULT, (
                f"thermistors disagree: {hot_name} {hot:.1f} °C vs {cold_name} {cold:.1f} °C for "
                f"{t - self._disagree_since:.1f} s (limit {s.sensor_disagree_c} °C for {s.sensor_disagree_s} s)"
            )
        return None

    def _check_pressure_readings(self, sample: Sample) -> Trip | None:
        if sample.bus_error is not None:
            return None  # the bus check counts the failure
        trip: Trip | None = None
        for zone in ZONES:
            if sample.pressure_mmhg.get(zone) is not None:
                self._pressure_bad[zone] = 0
                continue
            self._pressure_bad[zone] += 1
            if self._pressure_bad[zone] >= self.safety.sensor_bad_samples and trip is None:
                trip = FaultCode.SENSOR_BUS_FAULT, (
                    f"pressure sensor {zone}: {sample.errors.get(zone, 'no reading')} for "
                    f"{self._pressure_bad[zone]} samples"
                )
        return trip

    def persisting(self, code: FaultCode, sample: Sample) -> str | None:
        """TEMP_SENSOR_FAULT needs the thermistors to agree again (range and bus: the supervisor)."""
        if code is FaultCode.TEMP_SENSOR_FAULT:
            values = [v for v in sample.temperature_c.values() if v is not None]
            s = self.safety
            if len(values) >= 2 and max(values) - min(values) > s.sensor_disagree_c:
                return (
                    f"thermistors still disagree by {max(values) - min(values):.1f} °C "
                    f"(limit {s.sensor_disagree_c} °C)"
                )
        return None

    def doubt(self, sample: Sample) -> str | None:
        """Every thermistor and pressure sensor reads, in range, and the thermistors agree."""
        s = self.safety
        if sample.bus_error is not None:
            return f"the sensor bus fails: {sample.bus_error}"
        values = []
        for name in self.thermistors:
            value = sample.temperature_c.get(name)
            if value is None:
                return f"thermistor {name}: {sample.errors.get(name, 'no reading')}"
            if not s.sensor_min_c <= value <= s.sensor_max_c:
                return f"thermistor {name} reads {value:.1f} °C, outside {s.sensor_min_c:.0f}..{s.sensor_max_c:.0f} °C"
            values.append(value)
        if len(values) >= 2 and max(values) - min(values) > s.sensor_disagree_c:
            return f"thermistors disagree by {max(values) - min(values):.1f} °C (limit {s.sensor_disagree_c} °C)"
        for zone in ZONES:
            if sample.pressure_mmhg.get(zone) is None:
                return f"pressure sensor {zone}: {sample.errors.get(zone, 'no reading')}"
        return None


def _value(item: tuple[str, float]) -> float:
    return item[1]
