"""Roller motor on an H-bridge: signed PWM speed, reversal only through a stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpiozero import Motor

from drivers.output import OutputDriver, check_fraction, close_device

REVERSE_DWELL_S = 0.3  # time the rollers stand still before they change direction


class RollerMotor(OutputDriver):
    """A roller motor: ``drive(speed)`` with -max..max; a reversal stops for a dwell first."""

    def __init__(
        self,
        name: str,
        forward_pin: int,
        backward_pin: int,
        *,
        clock: Callable[[], float],
        pin_factory: Any = None,
        max_speed: float = 1.0,
        reverse_dwell_s: float = REVERSE_DWELL_S,
        pwm_frequency_hz: int = 1000,
        current_reader: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name)
        self.max_speed = check_fraction(f"{name} max_speed", max_speed)
        self._clock = clock
        self._dwell_s = reverse_dwell_s
        self._motor = Motor(forward_pin, backward_pin, pwm=True, pin_factory=pin_factory)
        self._forward_pin = self._motor.forward_device.pin
        self._backward_pin = self._motor.backward_device.pin
        for child in (self._motor.forward_device, self._motor.backward_device):
            child.frequency = pwm_frequency_hz
        self._current_reader = current_reader
        self._target = 0.0
        self._stopped_at: float | None = None

    @property
    def speed(self) -> float:
        """Signed duty read back from the H-bridge pins: + forward, - backward."""
        if self._closed:
            return 0.0
        return float(self._forward_pin.state) - float(self._backward_pin.state)

    @property
    def target(self) -> float:
        """The speed last asked for (applied once any reversal dwell has passed)."""
        return self._target

    def drive(self, speed: float) -> None:
        """Run at signed ``speed``; call again each tick to complete a reversal after its dwell."""
        self._check_open()
        speed = check_fraction(f"{self.name} speed", speed, low=-self.max_speed, high=self.max_speed)
        self._target = speed
        current = self.speed
        now = self._clock()
        if speed == 0.0:
            self._stop(now)
            return
        if current * speed < 0:
            self._stop(now)  # reversing: stand still first
            return
        if current == 0.0 and self._stopped_at is not None and now - self._stopped_at < self._dwell_s:
            return  # still in the dwell after a stop
        if current == speed:
            self._stopped_at = None
            return  # already there: no pin writes at 20 Hz for nothing
        if speed > 0:
            self._motor.forward(speed)
        else:
            self._motor.backward(-speed)
        self._stopped_at = None

    def _stop(self, now: float) -> None:
        if self.speed != 0.0 or self._stopped_at is None:
            self._motor.stop()
            self._stopped_at = now

    def read_current(self) -> float:
        """Motor current in amperes from the current-sense channel (0.0 without one)."""
        return self._current_reader() if self._current_reader is not None else 0.0

    def _off(self) -> None:
        self._target = 0.0
        self._motor.stop()
        self._stopped_at = self._clock()

    def _close(self) -> None:
        close_device(self._motor)
