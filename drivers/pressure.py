"""Analog pressure transducer: volts to mmHg by a linear calibration, with open/short detection."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import SensorOpenCircuit, SensorShortCircuit


@dataclass(frozen=True, slots=True)
class PressureTransducer:
    """A transducer that reads ``zero_v`` at 0 mmHg and ``full_scale_v`` at ``full_scale_mmhg``."""

    name: str
    zero_v: float = 0.3
    full_scale_v: float = 3.0
    full_scale_mmhg: float = 300.0
    open_below_v: float = 0.1  # a live transducer never sits below its zero offset
    short_above_v: float = 3.2  # nor above its full-scale output

    def mmhg(self, volts: float) -> float:
        """Gauge pressure in mmHg for ``volts``; raises on an open or shorted signal."""
        if volts < self.open_below_v:
            raise SensorOpenCircuit(
                f"pressure sensor {self.name} reads {volts:.3f} V, below {self.open_below_v} V: "
                "open circuit"
            )
        if volts > self.short_above_v:
            raise SensorShortCircuit(
                f"pressure sensor {self.name} reads {volts:.3f} V, above {self.short_above_v} V: "
                "short to supply"
            )
        span = self.full_scale_v - self.zero_v
        return (volts - self.zero_v) * self.full_scale_mmhg / span

    def volts(self, mmhg: float) -> float:
        """The output voltage at ``mmhg`` (the inverse, used by the simulated plant)."""
        return self.zero_v + mmhg * (self.full_scale_v - self.zero_v) / self.full_scale_mmhg


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
