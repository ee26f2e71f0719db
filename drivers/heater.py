"""The heating pad on a MOSFET: slow PWM, capped duty, never on while the relay is off."""

from __future__ import annotations

from typing import Any

from gpiozero import PWMOutputDevice

from drivers.errors import InterlockError
from drivers.output import OutputDriver, check_fraction, close_device
from drivers.switches import PowerRelay

HEATER_PWM_HZ = 1  # a resistive pad needs no faster switching; slow PWM spares the MOSFET


class HeaterPad(OutputDriver):
    """The heating pad: ``set_duty`` 0..max_duty, refused while the power relay is open."""

    def __init__(
        self,
        name: str,
        pin: int,
        *,
        relay: PowerRelay,
        pin_factory: Any = None,
        max_duty: float = 1.0,
        pwm_frequency_hz: int = HEATER_PWM_HZ,
    ) -> None:
        super().__init__(name)
        self.max_duty = check_fraction(f"{name} max_duty", max_duty)
        self._relay = relay
        self._device = PWMOutputDevice(
            pin, initial_value=0, frequency=pwm_frequency_hz, pin_factory=pin_factory
        )
        self._pin = self._device.pin

    @property
    def duty(self) -> float:
        """Duty read back from the pin (0 when closed)."""
        return 0.0 if self._closed else float(self._pin.state)

    def set_duty(self, duty: float) -> None:
        """Heat at ``duty`` (0..max_duty); raises InterlockError for duty > 0 with the relay open."""
        self._check_open()
        duty = check_fraction(f"{self.name} duty", duty, high=self.max_duty)
        if duty > 0.0 and not self._relay.is_on:
            self._device.off()
            raise InterlockError(f"{self.name} cannot heat while the power relay is off")
        self._device.value = duty

    def _off(self) -> None:
        self._device.off()

    def _close(self) -> None:
        close_device(self._device)
