"""Analog pressure transducer: volts to mmHg by a linear calibration, with open/short detection."""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.errors import SensorOpenCircuit, SensorShortCircuit

OPEN_SHARE_OF_ZERO = 0.5  # a live-zero transducer never reads below half its zero offset
SHORT_SHARE_OF_SPAN = 0.08  # nor more than 8 % of its span above its full-scale output


def pressure_limits_v(zero_v: float, full_scale_v: float) -> tuple[float, float]:
    """The (open below, short above) voltages of a transducer with this calibration."""
    return zero_v * OPEN_SHARE_OF_ZERO, full_scale_v + (full_scale_v - zero_v) * SHORT_SHARE_OF_SPAN


@dataclass(frozen=True, slots=True)
class PressureTransducer:
    """A transducer that reads ``zero_v`` at 0 mmHg and ``full_scale_v`` at ``full_scale_mmhg``."""

    name: str
    zero_v: float = 0.3
    full_scale_v: float = 3.0
    full_scale_mmhg: float = 300.0
    open_below_v: float = field(init=False)  # derived from the calibration, see pressure_limits_v
    short_above_v: float = field(init=False)
    _mmhg_per_v: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.zero_v < self.full_scale_v or self.full_scale_mmhg <= 0.0:
            raise ValueError(
                f"pressure sensor {self.name}: need 0 < zero_v ({self.zero_v} V) < full_scale_v "
                f"({self.full_scale_v} V) and full_scale_mmhg ({self.full_scale_mmhg}) > 0"
            )
        open_v, short_v = pressure_limits_v(self.zero_v, self.full_scale_v)
        object.__setattr__(self, "open_below_v", open_v)
        object.__setattr__(self, "short_above_v", short_v)
        object.__setattr__(self, "_mmhg_per_v", self.full_scale_mmhg / (self.full_scale_v - self.zero_v))

    def mmhg(self, volts: float) -> float:
        """Gauge pressure in mmHg for ``volts``; raises on an open or shorted signal."""
        if volts < self.open_below_v:
            raise SensorOpenCircuit(
                f"pressure sensor {self.name} reads {volts:.3f} V, below {self.open_below_v:.3f} V: "
                "open circuit"
            )
        if volts > self.short_above_v:
            raise SensorShortCircuit(
                f"pressure sensor {self.name} reads {volts:.3f} V, above {self.short_above_v:.3f} V: "
                "short to supply"
            )
        return (volts - self.zero_v) * self._mmhg_per_v

    def volts(self, mmhg: float) -> float:
        """The output voltage at ``mmhg`` (the inverse, used by the simulated plant)."""
        return self.zero_v + mmhg / self._mmhg_per_v


@dataclass(frozen=True, slots=True)
class CurrentSense:
    """A shunt amplifier: ``volts_per_amp`` at the ADC input."""

    name: str
    volts_per_amp: float = 0.5

    def amps(self, volts: float) -> float:
        """Current in amperes for ``volts`` (never negative)."""
        return max(0.0, volts / self.volts_per_amp)

    def volts(self, amps: float) -> float:
        """Sense voltage at ``amps`` (used by the simulated plant)."""
        return amps * self.volts_per_amp
