"""What every hazard family shares: the fault codes, a latched fault, what the session expects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from modes.limits import Zone
from modes.signals import Sample

EPS = 1e-9  # float slack on time comparisons (sample times are sums of 0.05 s steps)
RATE_MIN_DT_S = 0.04  # rate checks compare readings at least this far apart


class FaultCode(StrEnum):
    """The public fault codes (MQTT ``fault.code``, the fault log): values are the names."""

    OVER_TEMPERATURE = "OVER_TEMPERATURE"
    HEATER_OVER_TARGET = "HEATER_OVER_TARGET"
    HEATER_RUNAWAY = "HEATER_RUNAWAY"
    HEATER_NOT_HEATING = "HEATER_NOT_HEATING"  # kept for old fault logs; now a warning, never latched
    HEAT_BALANCE = "HEAT_BALANCE"
    TEMP_SENSOR_FAULT = "TEMP_SENSOR_FAULT"
    OVER_PRESSURE = "OVER_PRESSURE"
    PRESSURE_NOT_RISING = "PRESSURE_NOT_RISING"
    PRESSURE_SENSOR_FAULT = "PRESSURE_SENSOR_FAULT"
    COMPRESSION_TOO_LONG = "COMPRESSION_TOO_LONG"
    VALVE_STUCK = "VALVE_STUCK"
    PUMP_OVERRUN = "PUMP_OVERRUN"
    MOTOR_STALL = "MOTOR_STALL"
    RELAY_WELDED = "RELAY_WELDED"
    POWER_FAULT = "POWER_FAULT"
    SENSOR_BUS_FAULT = "SENSOR_BUS_FAULT"
    CONTROL_LOOP_STALL = "CONTROL_LOOP_STALL"


Trip = tuple[FaultCode, str]


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


class HazardFamily(Protocol):
    """One family of hazards: its rules, thresholds and reset conditions side by side."""

    codes: frozenset[FaultCode]

    def check(self, sample: Sample, expect: Expectations) -> Trip | None:
        """Run the family's rules on one sample; the first trip found, else None."""

    def persisting(self, code: FaultCode, sample: Sample) -> str | None:
        """Why ``code`` (one of ``codes``) has not cleared on ``sample``, else None."""

    def doubt(self, sample: Sample) -> str | None:
        """Why a sensor of this family is implausible at rest (judged before READY and a start)."""


def beside(value: float, limit: float) -> str:
    """``value`` with one decimal, or two when one would print it equal to ``limit``."""
    text = f"{value:.1f}"
    return text if text != f"{limit:.1f}" else f"{value:.2f}"
