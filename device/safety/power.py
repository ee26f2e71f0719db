"""Power rail: the 12 V actuator rail must follow the relay (a welded relay, a dead supply).

| rule | threshold | latches | reset needs |
|---|---|---|---|
| rail present with the relay commanded off | above ``RAIL_PRESENT_V`` for ``RAIL_SETTLE_S`` | RELAY_WELDED | the rail absent with the relay off |
| rail absent (or low) with the relay commanded on | below ``RAIL_LOW_V`` for ``RAIL_SETTLE_S`` | POWER_FAULT | accepted; checked again at the next energise |
| rail too high | above ``RAIL_HIGH_V`` for ``RAIL_SETTLE_S`` | POWER_FAULT | as above |

The rail is read on every sample (the sense divider on ``sensors.rail``); a welded relay would leave
the heater and the pump with a single switch between them and the rail.
"""

from __future__ import annotations

from device.config import Safety
from device.safety.faults import EPS, Expectations, FaultCode, Trip
from modes.signals import Sample

RAIL_PRESENT_V = 6.0  # above this the rail counts as powered
RAIL_LOW_V = 9.0  # a powered rail must read at least this (12 V nominal)
RAIL_HIGH_V = 15.0  # and at most this
RAIL_SETTLE_S = 0.2  # a relay switches and the divider settles within this


class PowerChecks:
    """The rail-sense rules against the relay's commanded state."""

    codes = frozenset({FaultCode.RELAY_WELDED, FaultCode.POWER_FAULT})

    def __init__(self, safety: Safety) -> None:
        self.safety = safety
        self._relay_state: bool | None = None
        self._relay_since = 0.0
        self._wrong_since: float | None = None

    def check(self, sample: Sample, expect: Expectations) -> Trip | None:
        """The rail must be present exactly while the relay is commanded on."""
        t = sample.t
        relay = bool(sample.outputs.get("relay"))
        if relay != self._relay_state:
            self._relay_state = relay
            self._relay_since = t
            self._wrong_since = None
        rail = sample.rail_v
        if rail is None or t - self._relay_since < RAIL_SETTLE_S - EPS:
            return None
        problem = _problem(relay, rail)
        if problem is None:
            self._wrong_since = None
            return None
        if self._wrong_since is None:
            self._wrong_since = t
        if t - self._wrong_since < RAIL_SETTLE_S - EPS:
            return None
        return problem

    def persisting(self, code: FaultCode, sample: Sample) -> str | None:
        """A welded relay clears once the rail is absent with the relay off."""
        rail = sample.rail_v
        if code is FaultCode.RELAY_WELDED:
            if rail is None:
                return "the rail sense has no reading"
            if rail > RAIL_PRESENT_V:
                return f"the 12 V rail still reads {rail:.1f} V with the relay off: the relay is welded"
        return None

    def doubt(self, sample: Sample) -> str | None:
        """With the relay off the rail must be absent."""
        rail = sample.rail_v
        if rail is None:
            return "the rail sense has no reading"
        problem = _problem(bool(sample.outputs.get("relay")), rail)
        return problem[1] if problem is not None else None


def _problem(relay: bool, rail: float) -> Trip | None:
    if not relay and rail > RAIL_PRESENT_V:
        return FaultCode.RELAY_WELDED, (
            f"the 12 V rail reads {rail:.1f} V with the relay commanded off (above {RAIL_PRESENT_V} V): "
            "the relay is welded"
        )
    if relay and rail < RAIL_LOW_V:
        return FaultCode.POWER_FAULT, (
            f"the 12 V rail reads {rail:.1f} V with the relay on (at least {RAIL_LOW_V} V expected): "
            "no actuator power (supply, fuse or relay coil)"
        )
    if relay and rail > RAIL_HIGH_V:
        return FaultCode.POWER_FAULT, f"the 12 V rail reads {rail:.1f} V (at most {RAIL_HIGH_V} V)"
    return None
