"""Heater pad control: PI toward the target on the hottest thermistor, full power while far below."""

from __future__ import annotations

from collections.abc import Mapping

KP_PER_C = 0.5  # duty per °C below the target
KI_PER_C_S = 0.004  # duty per °C·s of accumulated error (integral time about 2 min)
FULL_POWER_BELOW_C = 3.0  # further below the target than this: full power, no integral wind-up


class HeatControl:
    """Duty for the heating pad from the thermistors: full power far below the target, PI near it."""

    def __init__(self, *, max_duty: float = 1.0) -> None:
        if not 0.0 < max_duty <= 1.0:
            raise ValueError(f"heater_max_duty must be in (0, 1], got {max_duty}")
        self.max_duty = max_duty
        self.duty = 0.0
        self._integral = 0.0
        self._last_now: float | None = None

    def reset(self) -> None:
        """Heat off and the integral cleared (heat switched off, session ended)."""
        self.duty = 0.0
        self._integral = 0.0
        self._last_now = None

    def step(self, now: float, temperature_c: Mapping[str, float | None], target_c: float) -> float:
        """The duty for this tick; 0 when no thermistor gives a reading (the supervisor reports why)."""
        dt = 0.0 if self._last_now is None else max(0.0, now - self._last_now)
        self._last_now = now
        hottest: float | None = None
        for value in temperature_c.values():
            if value is not None and (hottest is None or value > hottest):
                hottest = value
        if hottest is None:
            self.duty = 0.0
            return 0.0
        error = target_c - hottest
        if error > FULL_POWER_BELOW_C:
            self.duty = self.max_duty
            return self.duty
        proportional = KP_PER_C * error
        integral = self._integral + KI_PER_C_S * error * dt
        integral = min(max(integral, 0.0), self.max_duty)
        duty = proportional + integral
        if 0.0 <= duty <= self.max_duty or (duty > self.max_duty and error < 0) or (duty < 0 and error > 0):
            self._integral = integral  # integrate only while that does not push further into a limit
        self.duty = min(max(duty, 0.0), self.max_duty)
        return self.duty
