"""Closed-loop airbag control: compression waves foot -> ankle -> calf over one pump and 3/2 valves.

Physics this rests on: one pump feeds a manifold; an energised valve connects its zone to the
manifold (inflate, or hold while the pump is off: the pump has a check valve), a de-energised one
vents the zone. There is no isolated hold, so every connected zone shares the manifold pressure.
A wave therefore inflates one zone at a time; a long pulse hands the air of the zone below on to
the next one (both connected) when that cannot push either past its target, then vents the lower one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from modes.limits import ZONES, Zone
from modes.program import WavePlan

log = logging.getLogger(__name__)

# Relative airbag volumes (foot = 1), from the bag sizes: used to predict the pressure two connected
# zones settle at. The cap guard below keeps every zone safe even if the prediction is off.
ZONE_VOLUME: Mapping[Zone, float] = {"foot": 1.0, "ankle": 1.65, "calf": 2.24}
CAP_MARGIN_MMHG = 6.0  # targets stay this far below each zone's cap
CAP_GUARD_MMHG = 3.0  # a zone this close to its cap is vented at once
MIN_TARGET_MMHG = 5.0
PUMP_LEAD_MMHG = 0.5  # the pump stops this far below the setpoint (the last tick still adds some)
TRACK_BAND_MMHG = 1.5  # while inflating, the pump restarts this far below the ramped setpoint
HOLD_BAND_MMHG = 3.0  # while holding, the pump tops up this far below the target
REACHED_MMHG = 1.0  # a zone within this of its target has reached it
PUMP_BURST_MAX_S = 7.0  # the pump never runs longer in one go (the supervisor trips at 10 s)
PUMP_REST_S = 0.5  # rest after a burst that hit the limit
HANDOFF_MARGIN_MMHG = 2.0  # a hand-off must settle at least this far below the next zone's target
# A zone that has not reached its target this long after its ramp should have (a leak): end the wave
# (vent all) rather than hold the leg pressed; the supervisor's COMPRESSION_TOO_LONG is the hard cap.
INFLATE_GRACE_S = 15.0

_VENTED, _INFLATE, _HOLD = "vented", "inflate", "hold"


def settle_mmhg(pressure: Mapping[Zone, float | None], zones: tuple[Zone, ...]) -> float:
    """The pressure ``zones`` settle at when connected together (volume-weighted mean)."""
    total = sum(ZONE_VOLUME[z] for z in zones)
    return sum(ZONE_VOLUME[z] * (pressure.get(z) or 0.0) for z in zones) / total


class AirbagControl:
    """Runs compression waves and the pump from the pressure sensors; exposes its ramped setpoints."""

    def __init__(self, caps_mmhg: Mapping[Zone, float]) -> None:
        missing = [z for z in ZONES if z not in caps_mmhg]
        if missing:
            raise ValueError(f"pressure_cap_mmhg: no cap for {', '.join(missing)}")
        self.caps = {z: float(caps_mmhg[z]) for z in ZONES}
        self.connected: frozenset[Zone] = frozenset()
        self.pump = 0.0
        self.setpoints: dict[Zone, float] = dict.fromkeys(ZONES, 0.0)
        self._state = _VENTED
        self._wait_until = 0.0
        self._last_now: float | None = None
        self._wave: WavePlan | None = None
        self._zones: tuple[Zone, ...] = ()
        self._index = 0
        self._target = 0.0
        self._targets: dict[Zone, float] = {}
        self._setpoint = 0.0
        self._rise: float | None = None
        self._hold_until = 0.0
        self._pump_since: float | None = None
        self._rest_until = 0.0
        self._give_up_at = 0.0

    @property
    def state(self) -> str:
        """``vented`` between waves, ``inflate`` or ``hold`` during one."""
        return self._state

    @property
    def in_wave(self) -> bool:
        """True while a wave is under way (a zone is inflating or holding)."""
        return self._state != _VENTED

    @property
    def wave_zones(self) -> tuple[Zone, ...]:
        """The zones of the wave under way (empty between waves)."""
        return self._zones if self._state != _VENTED else ()

    def target_mmhg(self, zone: Zone, fraction: float, scale: float) -> float:
        """The pressure a wave presses ``zone`` to: its cap times fraction and intensity, with a margin."""
        cap = self.caps[zone]
        return max(MIN_TARGET_MMHG, min(fraction * scale * cap, cap - CAP_MARGIN_MMHG))

    def vent_all(self, now: float, pause_s: float = 0.0) -> None:
        """End any wave: every zone vents, the pump stops; the next wave waits ``pause_s``."""
        if self._state != _VENTED:
            log.debug("airbags: wave ended early, venting")
        self._state = _VENTED
        self._wait_until = now + pause_s
        self._wave = None
        self._set(frozenset(), 0.0)
        self._pump_off()

    def step(
        self,
        now: float,
        pressure: Mapping[Zone, float | None],
        wave: WavePlan | None,
        scale: float,
        skip: frozenset[Zone] = frozenset(),
    ) -> None:
        """Advance one tick: update the wave, the valves (``connected``) and the ``pump`` duty."""
        dt = 0.0 if self._last_now is None else max(0.0, now - self._last_now)
        self._last_now = now
        if self._state == _VENTED:
            if now < self._wait_until or wave is None:
                return
            zones = tuple(z for z in wave.zones if z not in skip)
            if not zones:
                return
            self._wave, self._zones = wave, zones
            self._targets = {z: self.target_mmhg(z, wave.fraction[z], scale) for z in zones}
            self._begin_inflate(now, 0, pressure)
        elif self._state == _INFLATE:
            if self._rise is None:
                self._setpoint = self._target
            else:
                self._setpoint = min(self._target, self._setpoint + self._rise * dt)
            zone = self._zones[self._index]
            p = pressure.get(zone)
            if p is not None and self._setpoint >= self._target and p >= self._target - REACHED_MMHG:
                self._begin_hold(now)
            elif now >= self._give_up_at:
                log.warning("airbags: %s did not reach %.0f mmHg in time (a leak?); ending the wave",
                            zone, self._target)
                assert self._wave is not None
                self.vent_all(now, self._wave.pause_s)
                return
        elif now >= self._hold_until:
            if self._index + 1 < len(self._zones):
                self._begin_inflate(now, self._index + 1, pressure)
            else:
                assert self._wave is not None
                self.vent_all(now, self._wave.pause_s)
                return
        self._run_pump(now, pressure)
        if self.connected:  # the setpoint belongs to the zone being pressed, not to a hand-off donor
            self.setpoints[self._zones[self._index]] = self._setpoint

    # -- wave stages ---------------------------------------------------------------------------

    def _begin_inflate(self, now: float, index: int, pressure: Mapping[Zone, float | None]) -> None:
        assert self._wave is not None
        zone = self._zones[index]
        target = self._targets[zone]
        connected: tuple[Zone, ...] = (zone,)
        if index > 0 and not self._wave.short:
            below = self._zones[index - 1]
            pair = (below, zone)
            if target <= self._targets[below] and settle_mmhg(pressure, pair) <= target - HANDOFF_MARGIN_MMHG:
                connected = pair  # hand the lower zone's air on up the leg
        self._state = _INFLATE
        self._index = index
        self._target = target
        self._rise = self._wave.rise_mmhg_s[zone]
        self._setpoint = min(target, settle_mmhg(pressure, connected))
        ramp_s = (target - self._setpoint) / self._rise if self._rise else 0.0
        self._give_up_at = now + ramp_s + INFLATE_GRACE_S
        self._set(frozenset(connected), self.pump)

    def _begin_hold(self, now: float) -> None:
        assert self._wave is not None
        zone = self._zones[self._index]
        self._state = _HOLD
        self._setpoint = self._target
        self._hold_until = now + self._wave.hold_s
        self._set(frozenset((zone,)), self.pump)

    # -- the pump --------------------------------------------------------------------------------

    def _run_pump(self, now: float, pressure: Mapping[Zone, float | None]) -> None:
        """Bang-bang with hysteresis on the ramped setpoint; any zone near its cap vents at once."""
        connected = self.connected
        unsafe: list[Zone] = []
        for zone in connected:
            p = pressure.get(zone)
            if p is None or p >= self.caps[zone] - CAP_GUARD_MMHG:
                unsafe.append(zone)
        if unsafe:
            # End the whole wave: venting only the unsafe zone would leave the wave waiting forever
            # for a target it can no longer reach (or a lower zone held pressed). The next wave
            # starts after the usual pause.
            log.warning("airbags: ending the wave, venting all (%s near its cap or no reading)",
                        ", ".join(sorted(unsafe)))
            self.vent_all(now, self._wave.pause_s if self._wave is not None else 0.0)
            return
        setpoint = self._setpoint
        # The pump follows the zone being pressed: in a hand-off the fuller donor zone must not stop
        # it (with a leak the pair would settle short of the target for ever); the cap guard above
        # protects the donor.
        highest = pressure.get(self._zones[self._index]) or 0.0
        if self.pump > 0.0:
            on_for = now - (self._pump_since if self._pump_since is not None else now)
            if highest >= setpoint - PUMP_LEAD_MMHG or on_for >= PUMP_BURST_MAX_S:
                if on_for >= PUMP_BURST_MAX_S:
                    self._rest_until = now + PUMP_REST_S
                self._pump_off()
        else:
            band = TRACK_BAND_MMHG if self._state == _INFLATE else HOLD_BAND_MMHG
            if highest < setpoint - band and now >= self._rest_until:
                self.pump = 1.0
                self._pump_since = now

    def _pump_off(self) -> None:
        self.pump = 0.0
        self._pump_since = None

    def _set(self, connected: frozenset[Zone], pump: float) -> None:
        self.connected = connected
        self.pump = pump if connected else 0.0
        if not connected:
            self._pump_since = None
        setpoints = self.setpoints
        pressed = self._zones[self._index] if connected and self._zones else None
        for zone in ZONES:
            setpoints[zone] = self._setpoint if zone == pressed else 0.0
