"""What crosses between the hardware and the logic: a sensor sample in, an output command out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modes.limits import ZONES, Zone

MOTORS = ("foot_rollers", "calf_rollers")


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of every sensor; ``None`` marks a reading that failed (see ``errors``)."""

    t: float
    temperature_c: Mapping[str, float | None]
    pressure_mmhg: Mapping[Zone, float | None]
    motor_current_a: Mapping[str, float | None]
    rail_v: float | None
    outputs: Mapping[str, float | bool]  # read back from the drivers
    errors: Mapping[str, str] = field(default_factory=dict)  # sensor name -> why it has no value
    bus_error: str | None = None  # the I2C bus failed during this sample
    read_s: float = 0.0  # the reads took this long after ``t``: each reading was taken in [t, t + read_s]

    @property
    def ok(self) -> bool:
        """True when the sample was read without a bus error."""
        return self.bus_error is None


@dataclass(frozen=True, slots=True)
class Command:
    """What the outputs should do: signed roller speeds, pump duty, connected zones, heater duty."""

    foot_rollers: float = 0.0
    calf_rollers: float = 0.0
    pump: float = 0.0
    connected: frozenset[Zone] = frozenset()  # zones whose valves are energised
    heater: float = 0.0
    relay: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.connected) - set(ZONES)
        if unknown:
            raise ValueError(f"unknown zones in command: {sorted(unknown)}")


OFF = Command()
