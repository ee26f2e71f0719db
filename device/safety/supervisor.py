"""The safety supervisor: every hazard family on every sample, the first fault latched until reset.

The families (sensors and bus, heat, air, motors, power rail) each hold their rules, thresholds and
reset conditions; the supervisor orders them, latches, forces the outputs off through its hooks, and
decides resets. The checks read what the plant does (sensor values) and what the drivers read back
from their pins, never only what the logic asked for. Time comes from the samples (``Sample.t``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from device.config import Heater, Safety
from device.safety.air import AirChecks
from device.safety.faults import NOTHING_EXPECTED, Expectations, Fault, FaultCode, HazardFamily, Trip, beside
from device.safety.heat import UNREACHABLE, HeatChecks
from device.safety.motors import MotorChecks
from device.safety.power import PowerChecks
from device.safety.sensors import SensorChecks
from modes.limits import ZONES
from modes.signals import Sample

log = logging.getLogger(__name__)

# DESIGN.md section 3 names dropping the power relay as these faults' own action. Every fault drops
# the relay anyway (hardware.safe_off), so this is informational.
RELAY_FAULTS = frozenset({FaultCode.HEATER_RUNAWAY, FaultCode.VALVE_STUCK, FaultCode.RELAY_WELDED})


def _nothing() -> None:
    """The default output hook: no hardware attached."""


class Supervisor:
    """Runs every hazard family on every sample and latches the first fault until an explicit reset."""

    def __init__(
        self,
        safety: Safety,
        *,
        thermistors: Sequence[str],
        heater: Heater | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not thermistors:
            raise ValueError("thermistors: the supervisor needs at least one thermistor name")
        self.safety = safety
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._latched: Fault | None = None
        self._unreported: Fault | None = None  # latched from another thread, not yet returned by check
        # Hooks to the outputs (the controller wires them to Hardware.trip / release): called in the
        # latching thread, so a fault forces the outputs off before ``latch`` returns.
        self.trip_outputs: Callable[[], None] = _nothing
        self.release_outputs: Callable[[], None] = _nothing
        self.sensors = SensorChecks(safety, thermistors)
        self.heat = HeatChecks(safety, heater or Heater(), thermistors)
        self.air = AirChecks(safety)
        self.motors = MotorChecks(safety)
        self.power = PowerChecks(safety)
        # In the order their trips win (sensors and bus first: a bad reading explains the rest).
        self.families: tuple[HazardFamily, ...] = (self.sensors, self.heat, self.air, self.motors, self.power)
        self.doubt: str | None = "no sample judged yet"  # why a sensor is implausible now, else None

    # -- the latch ----------------------------------------------------------------------------

    @property
    def latched(self) -> Fault | None:
        """The latched fault, or None (safe to read from any thread)."""
        with self._lock:
            return self._latched

    @property
    def warnings(self) -> dict[str, str]:
        """Conditions the user should know of that are no hazard (never latched): code -> message."""
        return {UNREACHABLE: self.heat.warning} if self.heat.warning else {}

    def new_fault(self, code: FaultCode, message: str, *, t: float) -> Fault:
        """A Fault stamped with this supervisor's wall clock."""
        return Fault(code=code, message=message, since=self._wall_clock(), t=t)

    def latch(self, fault: Fault, *, report: bool = True) -> bool:
        """Latch ``fault`` unless one is already latched (first fault wins); outputs forced off; thread-safe.

        ``report=False`` for a fault restored after a restart: it was logged when it first latched.
        """
        with self._lock:
            first = self._latched is None
            if first:
                self._latched = fault
                if report:
                    self._unreported = fault
        try:
            self.trip_outputs()  # also when another fault was latched first: off is off
        except Exception:
            log.exception("forcing the outputs off failed")
        if first:
            log.error("fault latched: %s: %s", fault.code, fault.message)
        return first

    @staticmethod
    def relay_must_drop(fault: Fault) -> bool:
        """True when DESIGN.md names dropping the relay as this fault's own action (all faults drop it)."""
        return fault.code in RELAY_FAULTS

    # -- the checks ---------------------------------------------------------------------------

    def check(self, sample: Sample, expect: Expectations = NOTHING_EXPECTED) -> Fault | None:
        """Run every family on ``sample``; return the fault latched since the last call, else None.

        The checks keep running while a fault is latched so ``reset`` knows whether it cleared. A fault
        latched from another thread (the deadman) is returned once by the next call.
        """
        sensors = self.sensors.check(sample, expect)
        self.heat.valid = self.sensors.valid
        trips: list[Trip | None] = [sensors, *(family.check(sample, expect) for family in self.families[1:])]
        self.doubt = self._doubt(sample)
        trip = next((found for found in trips if found is not None), None)
        if trip is not None and self.latched is None:
            code, message = trip
            self.latch(self.new_fault(code, message, t=sample.t))
        with self._lock:
            fresh, self._unreported = self._unreported, None
        return fresh

    def _doubt(self, sample: Sample) -> str | None:
        """Why any sensor is implausible on this sample (a start is refused while it is not None)."""
        for family in self.families:
            reason = family.doubt(sample)
            if reason is not None:
                return reason
        return None

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
        self.heat.cleared()
        self.air.cleared()
        self.release_outputs()
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
        for name in self.sensors.thermistors:
            value = sample.temperature_c.get(name)
            if value is None:
                return f"thermistor {name} still has no reading: {sample.errors.get(name, 'no value')}"
            if value > s.trip_temp_c:
                return f"{name} still reads {beside(value, s.trip_temp_c)} °C, above the {s.trip_temp_c:.1f} °C trip"
            if not s.sensor_min_c <= value <= s.sensor_max_c:
                return (
                    f"thermistor {name} still reads {value:.1f} °C, outside "
                    f"{s.sensor_min_c:.0f}..{s.sensor_max_c:.0f} °C"
                )
        for zone in ZONES:  # every reset needs every zone empty: nothing restarts onto a pressed leg
            p = sample.pressure_mmhg.get(zone)
            if p is None:
                return f"pressure sensor {zone} still has no reading: {sample.errors.get(zone, 'no value')}"
            if p >= s.vented_mmhg:
                return f"{zone} zone still at {p:.1f} mmHg, not vented below {s.vented_mmhg:.0f} mmHg"
        for family in self.families:
            if code in family.codes:
                return family.persisting(FaultCode(code), sample)
        return None
