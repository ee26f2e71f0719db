"""Plain on/off outputs: zone valves, the actuator power relay and the heartbeat pin."""

from __future__ import annotations

from typing import Any

from gpiozero import DigitalOutputDevice

from drivers.output import OutputDriver, close_device


class _Switch(OutputDriver):
    """One GPIO that drives a load on (energised) or off (de-energised, the safe state)."""

    def __init__(self, name: str, pin: int, *, pin_factory: Any = None) -> None:
        super().__init__(name)
        self._device = DigitalOutputDevice(
            pin, active_high=True, initial_value=False, pin_factory=pin_factory
        )
        self._pin = self._device.pin

    @property
    def is_on(self) -> bool:
        """The pin's state read back from the device."""
        # The pin itself (active high): the same truth as device.value, without its layers (20 Hz).
        return (not self._closed) and bool(self._pin.state)

    def _on(self) -> None:
        self._check_open()
        self._device.on()

    def _off(self) -> None:
        self._device.off()

    def _close(self) -> None:
        close_device(self._device)


class ZoneValve(_Switch):
    """A 3/2 solenoid valve: energised connects the zone to the pump, de-energised vents it."""

    def connect(self) -> None:
        """Connect the zone to the pump manifold (to inflate or hold)."""
        self._on()

    def vent(self) -> None:
        """Let the zone vent to air: the fail-safe state."""
        self.off()

    @property
    def is_connected(self) -> bool:
        """True while the valve is energised."""
        return self.is_on


class PowerRelay(_Switch):
    """The relay that feeds 12 V to every motor, the pump, the valves and the heater."""

    def energise(self) -> None:
        """Close the relay: actuators get power."""
        self._on()

    def drop(self) -> None:
        """Open the relay: every actuator loses power."""
        self.off()


class HeartbeatPin(_Switch):
    """The pin the safety loop toggles for the external hardware deadman."""

    def toggle(self) -> None:
        """Flip the pin; the deadman keeps the relay up only while it keeps flipping."""
        self._check_open()
        self._pin.state = not self._pin.state  # straight to the pin: this runs on every safety pass
