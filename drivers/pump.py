"""The diaphragm air pump on a MOSFET, speed by PWM."""

from __future__ import annotations

from typing import Any

from gpiozero import PWMOutputDevice

from drivers.output import OutputDriver, check_fraction, close_device


class AirPump(OutputDriver):
    """The pump that fills the airbag zones through their valves."""

    def __init__(
        self, name: str, pin: int, *, pin_factory: Any = None, pwm_frequency_hz: int = 200
    ) -> None:
        super().__init__(name)
        self._device = PWMOutputDevice(
            pin, initial_value=0, frequency=pwm_frequency_hz, pin_factory=pin_factory
        )
        self._pin = self._device.pin

    @property
    def duty(self) -> float:
        """Duty read back from the pin (0 when closed)."""
        return 0.0 if self._closed else float(self._pin.state)

    @property
    def is_running(self) -> bool:
        """True while the pump has any duty."""
        return self.duty > 0.0

    def run(self, duty: float = 1.0) -> None:
        """Run the pump at ``duty`` (0..1)."""
        self._check_open()
        self._device.value = check_fraction(f"{self.name} duty", duty)

    def _off(self) -> None:
        self._device.off()

    def _close(self) -> None:
        close_device(self._device)
