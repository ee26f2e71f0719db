"""NTC thermistor in a divider to ground: volts to °C by the beta equation, with open/short detection."""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.errors import SensorOpenCircuit, SensorShortCircuit

KELVIN = 273.15
OPEN_FRACTION = 0.98  # divider node above this share of the supply: the thermistor is open
SHORT_FRACTION = 0.02  # node below this share: the thermistor is shorted


@dataclass(frozen=True, slots=True)
class Thermistor:
    """An NTC thermistor from the sensed node to ground, with ``series_ohm`` from ``supply_v``."""

    name: str
    nominal_ohm: float = 10_000.0
    nominal_c: float = 25.0
    beta: float = 3950.0
    series_ohm: float = 10_000.0
    supply_v: float = 3.3
    open_fraction: float = OPEN_FRACTION
    short_fraction: float = SHORT_FRACTION

    def resistance(self, volts: float, supply_v: float | None = None) -> float:
        """Thermistor resistance in ohms for the node voltage (ratiometric when ``supply_v`` is measured)."""
        supply = self.supply_v if supply_v is None else supply_v
        fraction = volts / supply
        if fraction >= self.open_fraction:
            raise SensorOpenCircuit(
                f"thermistor {self.name} reads {volts:.3f} V of {supply:.3f} V: open circuit"
            )
        if fraction <= self.short_fraction:
            raise SensorShortCircuit(
                f"thermistor {self.name} reads {volts:.3f} V of {supply:.3f} V: short circuit"
            )
        return self.series_ohm * fraction / (1.0 - fraction)

    def celsius(self, volts: float, supply_v: float | None = None) -> float:
        """Temperature in °C for the node voltage (``supply_v``: the measured divider supply)."""
        ohm = self.resistance(volts, supply_v)
        inv_t = 1.0 / (self.nominal_c + KELVIN) + math.log(ohm / self.nominal_ohm) / self.beta
        return 1.0 / inv_t - KELVIN

    def volts(self, celsius: float) -> float:
        """The divider node voltage at ``celsius`` (the inverse, used by the simulated plant)."""
        t = celsius + KELVIN
        ohm = self.nominal_ohm * math.exp(self.beta * (1.0 / t - 1.0 / (self.nominal_c + KELVIN)))
        return self.supply_v * ohm / (ohm + self.series_ohm)
