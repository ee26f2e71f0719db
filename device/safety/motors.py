"""Motors: a stalled roller (jammed, a foot pressing the rollers still) draws too much current.

| rule | threshold | latches | reset needs |
|---|---|---|---|
| current above the stall level | ``stall_current_a`` (2 A) for ``stall_s`` (0.5 s) | MOTOR_STALL | both motors below the stall level |
| current per unit of duty too high | ``stall_amps_per_duty`` (5 A) at duty >= ``STALL_MIN_DUTY`` | MOTOR_STALL | as above |
| current with the motor off | above ``REST_CURRENT_MAX_A`` | start refused (sense amplifier or H-bridge fault) | reads low again |

Below ``STALL_MIN_DUTY`` (0.1) a stall is not detected: the current is under the sense's resolution
for a stall there, and the torque at that duty (about a tenth of stall torque) cannot hurt; the
rollers' slip clutch limits the force on a foot at any duty (docs/safety.md).
"""

from __future__ import annotations

from device.config import Safety
from device.safety.faults import EPS, Expectations, FaultCode, Trip
from modes.limits import STALL_MIN_DUTY
from modes.signals import MOTORS, Sample

REST_CURRENT_MAX_A = 0.3  # a motor that is off draws nothing; more is a sense or H-bridge fault


class MotorChecks:
    """The stall rules over both roller motors."""

    codes = frozenset({FaultCode.MOTOR_STALL})

    def __init__(self, safety: Safety) -> None:
        self.safety = safety
        self._stall_since: dict[str, float | None] = dict.fromkeys(MOTORS)

    def check(self, sample: Sample, expect: Expectations) -> Trip | None:
        """A stall held for ``stall_s`` on either motor."""
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
            if sample.t - since >= s.stall_s - EPS and trip is None:
                trip = FaultCode.MOTOR_STALL, (
                    f"{motor} drew {amps:.2f} A at duty {duty:.2f} for {sample.t - since:.2f} s "
                    f"(stall above {s.stall_current_a} A, or above {s.stall_amps_per_duty} A per unit "
                    f"of duty, for {s.stall_s} s)"
                )
        return trip

    def persisting(self, code: FaultCode, sample: Sample) -> str | None:
        """A stall clears once neither motor draws stall current."""
        for motor in MOTORS:
            amps = sample.motor_current_a.get(motor)
            if amps is not None and amps > self.safety.stall_current_a:
                return f"{motor} still draws {amps:.2f} A (stall above {self.safety.stall_current_a} A)"
        return None

    def doubt(self, sample: Sample) -> str | None:
        """A motor that is off must draw (almost) nothing."""
        for motor in MOTORS:
            amps = sample.motor_current_a.get(motor)
            if amps is None:
                return f"{motor} current sense has no reading"
            if not sample.outputs.get(motor) and amps > REST_CURRENT_MAX_A:
                return f"{motor} draws {amps:.2f} A while off (at most {REST_CURRENT_MAX_A} A at rest)"
        return None
