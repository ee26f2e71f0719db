"""Air: over-pressure, fills that do not rise, sensors that cannot be right, stuck valves, long squeezes.

| rule | threshold | latches | reset needs |
|---|---|---|---|
| a zone above its hard trip | ``pressure_trip_mmhg`` (135 / 95 / 75), every sample | OVER_PRESSURE | every zone vented |
| a reading falls faster than venting can empty a zone | ``VENT_TAU_FASTEST_S`` plus ``FALL_NOISE_MMHG`` per sample | PRESSURE_SENSOR_FAULT | every zone vented |
| continuous pumping does not raise the connected zones' air | ``not_rising_min_rise_mmhg`` per ``not_rising_s`` (foot-volume mmHg), judged sooner near the trip | PRESSURE_NOT_RISING | every zone vented |
| a ramped setpoint not reached | ``setpoint_reach_s`` | PRESSURE_NOT_RISING | every zone vented |
| a venting zone not emptied | below ``vented_mmhg`` within ``vent_deadline_s`` | VALVE_STUCK | every zone vented |
| a vented zone reads below zero (offset drifted low) | below ``-ZERO_BAND_MMHG`` after ``vent_deadline_s`` of venting | PRESSURE_SENSOR_FAULT | every zone vented |
| pump on too long | ``pump_max_on_s`` | PUMP_OVERRUN | every zone vented |
| a zone connected (pressed) too long | ``compression_max_s`` (hard cap ``COMPRESSION_MAX_S``) | COMPRESSION_TOO_LONG | every zone vented |

Bounding the pump against a lying sensor: near the trip the fill window shrinks so that even the
strongest pump cannot carry a zone more than ``TRIP_OVERSHOOT_MMHG`` past its trip before a reading
that does not rise is caught (a stuck or stale sensor); a reading that drops to zero at once is
caught by the fall rule (a hose or connector pulled off the sensor).
"""

from __future__ import annotations

import math
from collections import deque

from device.config import Safety
from device.safety.faults import EPS, Expectations, FaultCode, Trip, beside
from modes.airbags import ZONE_VOLUME
from modes.limits import ZONES, Zone
from modes.signals import Sample

VENT_TAU_FASTEST_S = 0.25  # no zone empties faster than this time constant (the plant: 0.3-0.5 s)
FALL_NOISE_MMHG = 3.0  # a reading may fall this much more than venting allows (sensor noise)
TRIP_OVERSHOOT_MMHG = 5.0  # a lying sensor may let the true pressure pass the trip by at most this
# The strongest pump fills each zone alone at most this fast from empty (rated flow +25 %, the bag
# 15 % smaller than drawn); the fill window near the trip is sized from it.
PUMP_MAX_FLOW_MMHG_S = 48.0  # into one foot-volume
FILL_RATE_MAX_MMHG_S: dict[Zone, float] = {z: PUMP_MAX_FLOW_MMHG_S / (ZONE_VOLUME[z] * 0.85) for z in ZONES}
FILL_WINDOW_MIN_S = 0.25  # the shortest fill window judged (five samples)
ZERO_BAND_MMHG = 5.0  # a zone vented to the air reads 0; below minus this its sensor has drifted
SETPOINT_TOLERANCE_MMHG = 5.0  # a zone counts as having reached its ramped setpoint within this margin


class AirChecks:
    """The air rules over the pump, the valves and the three pressure sensors."""

    codes = frozenset({
        FaultCode.OVER_PRESSURE, FaultCode.PRESSURE_NOT_RISING, FaultCode.PRESSURE_SENSOR_FAULT,
        FaultCode.VALVE_STUCK, FaultCode.PUMP_OVERRUN, FaultCode.COMPRESSION_TOO_LONG,
    })

    def __init__(self, safety: Safety) -> None:
        self.safety = safety
        self._last: dict[Zone, tuple[float, float]] = {}  # zone -> (t, mmHg) of its last reading
        self._pump_on_since: float | None = None
        self._fill_key: tuple[Zone, ...] = ()
        self._fill: deque[tuple[float, dict[Zone, float]]] = deque()  # readings while pumping
        self._below_setpoint_since: dict[Zone, float] = {}
        self._vent_since: dict[Zone, float | None] = dict.fromkeys(ZONES)
        self._connected_since: dict[Zone, float | None] = dict.fromkeys(ZONES)

    def check(self, sample: Sample, expect: Expectations) -> Trip | None:
        """Every air rule on one sample (the pump's on-time even without readings)."""
        pump = self._check_pump(sample)
        if sample.bus_error is not None:
            return pump
        s = self.safety
        t = sample.t
        trip: Trip | None = None
        outputs = sample.outputs
        pumping = float(outputs.get("pump", 0.0)) > 0.0
        connected = tuple(z for z in ZONES if outputs.get(f"valve_{z}"))
        for zone in ZONES:
            venting = not outputs.get(f"valve_{zone}")
            if venting:
                self._connected_since[zone] = None
                if self._vent_since[zone] is None:
                    self._vent_since[zone] = t
            else:
                self._vent_since[zone] = None
                if self._connected_since[zone] is None:
                    self._connected_since[zone] = t
            p = sample.pressure_mmhg.get(zone)
            if p is None:
                self._last.pop(zone, None)
                continue  # the sensor family counts missing readings
            if p > s.pressure_trip_mmhg[zone]:
                trip = FaultCode.OVER_PRESSURE, (
                    f"{zone} zone at {beside(p, s.pressure_trip_mmhg[zone])} mmHg, "
                    f"trip is {s.pressure_trip_mmhg[zone]:.0f} mmHg"
                )
            trip = trip or self._check_fall(zone, t, p, sample.read_s)
            trip = trip or self._check_vented(zone, t, p)
            trip = trip or self._check_setpoint(zone, t, p, expect.setpoints_mmhg.get(zone, 0.0))
            trip = trip or self._check_compression(zone, t)
        return pump or trip or self._check_fill(sample, pumping, connected, expect)

    def _check_fall(self, zone: Zone, t: float, p: float, read_s: float = 0.0) -> Trip | None:
        """No zone can lose air faster than an open vent empties it: a faster drop is the sensor.

        Judged over the longest time the two readings can be apart: this one was taken by ``t + read_s``.
        """
        last = self._last.get(zone)
        self._last[zone] = (t, p)
        if last is None or t <= last[0]:
            return None
        dt = t + read_s - last[0]
        allowed = last[1] * (1.0 - math.exp(-dt / VENT_TAU_FASTEST_S)) + FALL_NOISE_MMHG
        if last[1] - p > allowed:
            return FaultCode.PRESSURE_SENSOR_FAULT, (
                f"pressure sensor {zone} fell {last[1]:.1f} -> {p:.1f} mmHg in {dt:.2f} s, faster than a "
                f"vented zone can empty (at most {allowed:.1f} mmHg): hose or connector off the sensor?"
            )
        return None

    def _check_vented(self, zone: Zone, t: float, p: float) -> Trip | None:
        """Valve stuck closed: a venting zone must fall below the vented level by the deadline."""
        s = self.safety
        since = self._vent_since[zone]
        if since is None or t - since < s.vent_deadline_s - EPS:
            return None
        if p < -ZERO_BAND_MMHG:  # open to the air it must read zero: the sensor's offset has drifted
            return FaultCode.PRESSURE_SENSOR_FAULT, (
                f"pressure sensor {zone} reads {p:.1f} mmHg with its zone vented to the air "
                f"(at least -{ZERO_BAND_MMHG:.0f} mmHg): the sensor's zero has drifted"
            )
        if p < s.vented_mmhg:
            return None
        return FaultCode.VALVE_STUCK, (
            f"{zone} zone still at {p:.1f} mmHg {t - since:.1f} s after its valve "
            f"vented (must be below {s.vented_mmhg:.0f} mmHg within {s.vent_deadline_s:.0f} s)"
        )

    def _check_setpoint(self, zone: Zone, t: float, p: float, setpoint: float) -> Trip | None:
        """The ramped setpoint must be reached within the deadline."""
        s = self.safety
        if setpoint <= 0.0 or p >= setpoint - SETPOINT_TOLERANCE_MMHG:
            self._below_setpoint_since.pop(zone, None)
            return None
        since = self._below_setpoint_since.setdefault(zone, t)
        if t - since < s.setpoint_reach_s - EPS:
            return None
        return FaultCode.PRESSURE_NOT_RISING, (
            f"{zone} zone at {p:.1f} mmHg, setpoint {setpoint:.1f} mmHg not reached in "
            f"{t - since:.1f} s (limit {s.setpoint_reach_s:.0f} s)"
        )

    def _check_compression(self, zone: Zone, t: float) -> Trip | None:
        """No zone stays connected (pressed, its blood flow held back) longer than the cap."""
        since = self._connected_since[zone]
        limit = self.safety.compression_max_s
        if since is None or t - since < limit - EPS:
            return None
        return FaultCode.COMPRESSION_TOO_LONG, (
            f"{zone} zone connected (pressed) for {t - since:.1f} s without venting (limit {limit:.0f} s)"
        )

    def _check_fill(
        self, sample: Sample, pumping: bool, connected: tuple[Zone, ...], expect: Expectations
    ) -> Trip | None:
        """Continuous pumping must raise the connected zones' air, judged sooner the nearer the trip.

        A sliding window over the readings since the pump started on these zones: the reference is
        the reading ``window`` seconds ago, so a sensor that freezes is caught one window later.
        """
        s = self.safety
        t = sample.t
        if not pumping or not connected or connected != self._fill_key:
            self._fill_key = connected if pumping else ()
            self._fill.clear()
        if not self._fill_key:
            return None
        readings = {z: sample.pressure_mmhg.get(z) for z in connected}
        now = {z: float(v) for z, v in readings.items() if v is not None}
        if len(now) != len(connected):
            self._fill.clear()
            return None
        self._fill.append((t, now))
        window = s.not_rising_s
        for z in connected:  # how long even the strongest pump needs to carry z past trip + overshoot
            room = s.pressure_trip_mmhg[z] + TRIP_OVERSHOOT_MMHG - now[z]
            window = min(window, max(FILL_WINDOW_MIN_S, room / FILL_RATE_MAX_MMHG_S[z]))
        fill = self._fill
        while len(fill) > 1 and fill[1][0] <= t - window + EPS:
            fill.popleft()
        start_t, start = fill[0]
        elapsed = t - start_t
        if elapsed < window - EPS:
            return None
        gained = {z: ZONE_VOLUME[z] * (now[z] - start[z]) for z in connected}  # in foot-volume mmHg
        air = sum(gained.values())
        needed = s.not_rising_min_rise_mmhg * elapsed / s.not_rising_s
        # In a hand-off the zone being pressed must gain too: a donor zone filling alone means the
        # pressed zone's valve does not connect it (stuck open: it vents what it gets).
        share = needed / len(connected)
        pressed = [z for z in connected if expect.setpoints_mmhg.get(z, 0.0) > 0.0 and gained[z] < share]
        if air >= needed and not pressed:
            return None
        return FaultCode.PRESSURE_NOT_RISING, (
            f"{'+'.join(connected)} gained {air:.1f} mmHg (foot volumes) in {elapsed:.2f} s of pumping "
            f"(needs {needed:.1f}: {s.not_rising_min_rise_mmhg:.0f} per {s.not_rising_s:.0f} s); "
            f"{', '.join(f'{z} {start[z]:.1f} -> {now[z]:.1f}' for z in connected)} mmHg"
        )

    def _check_pump(self, sample: Sample) -> Trip | None:
        s = self.safety
        if float(sample.outputs.get("pump", 0.0)) <= 0.0:
            self._pump_on_since = None
            return None
        if self._pump_on_since is None:
            self._pump_on_since = sample.t
        on_s = sample.t - self._pump_on_since
        if on_s >= s.pump_max_on_s - EPS:
            return FaultCode.PUMP_OVERRUN, f"pump on continuously for {on_s:.1f} s (limit {s.pump_max_on_s:.0f} s)"
        return None

    def persisting(self, code: FaultCode, sample: Sample) -> str | None:
        """Every air fault needs every zone vented; the supervisor checks that for every fault."""
        return None

    def cleared(self) -> None:
        """After an accepted reset: the rate rule starts from fresh readings."""
        self._last.clear()

    def doubt(self, sample: Sample) -> str | None:
        """Nothing at rest beyond the sensor family's and the supervisor's vented check."""
        return None

