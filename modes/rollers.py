"""Roller motion: speed ramps, and reversals that always pass through a stop."""

from __future__ import annotations

from modes.program import RollerPlan

RAMP_PER_S = 1.5  # speed change per second (0 to full in about 0.7 s: no jerks, no inrush trip)
REST_S = 0.4  # standstill before a reversal (longer than the driver's own 0.3 s dwell)


class RollerDrive:
    """One roller motor's signed speed: + rolls toward the heart, - rolls back."""

    def __init__(self) -> None:
        self.speed = 0.0
        self._direction = 1.0
        self._direction_since: float | None = None
        self._stopped_at: float | None = None
        self._last_now: float | None = None

    def reset(self, now: float) -> None:
        """Start afresh from rest (session start, resume): stand still REST_S first, then roll upward.

        The rest also covers the motor driver's own dwell after the idle session kept it stopped.
        """
        self._direction = 1.0
        self._direction_since = None
        if self.speed == 0.0:
            self._stopped_at = now

    def step(self, now: float, plan: RollerPlan | None, scale: float) -> float:
        """The signed speed for this tick, ramped toward what ``plan`` asks at ``scale``."""
        dt = 0.0 if self._last_now is None else max(0.0, now - self._last_now)
        self._last_now = now
        if plan is None:
            wanted = 0.0
            self._direction_since = None
        else:
            if self._direction_since is None:
                self._direction, self._direction_since = 1.0, now
            elif plan.down_s <= 0.0:
                self._direction = 1.0
            else:
                run_s = plan.up_s if self._direction > 0 else plan.down_s
                if now - self._direction_since >= run_s:
                    self._direction = -self._direction
                    self._direction_since = now
            wanted = self._direction * plan.speed * scale
        return self._ramp(now, dt, wanted)

    def halt(self, now: float) -> None:
        """The motor was cut (a fault): speed is zero now, and the rest before restarting begins."""
        if self.speed != 0.0:
            self._stopped_at = now
        self.speed = 0.0
        self._direction_since = None

    def stop(self, now: float) -> float:
        """Ramp down to a standstill (pause, finishing)."""
        return self.step(now, None, 0.0)

    def _ramp(self, now: float, dt: float, wanted: float) -> float:
        speed = self.speed
        limit = RAMP_PER_S * dt
        if speed != 0.0 and speed * wanted <= 0.0:  # stopping or reversing: down to zero first
            speed = max(0.0, speed - limit) if speed > 0 else min(0.0, speed + limit)
            if speed == 0.0:
                self._stopped_at = now
        elif speed == 0.0:
            if wanted != 0.0 and (self._stopped_at is None or now - self._stopped_at >= REST_S):
                speed = max(-limit, min(limit, wanted))
        else:
            speed = min(wanted, speed + limit) if wanted > speed else max(wanted, speed - limit)
        self.speed = speed
        return self.speed
