"""Simulated hardware for ``--sim`` and the tests: mock pins, the plant, and the fake I2C bus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.config import Config
from device.hardware import Hardware, sensor_models
from drivers.sim.plant import Plant, PlantParams, PlantWiring


def plant_wiring(config: Config) -> PlantWiring:
    """The plant's view of the config's pin map and analog inputs."""
    models = sensor_models(config)
    s = config.sensors
    return PlantWiring(
        pins={name: getattr(config.pins, name) for name in config.pins.LOADS},
        pressure={z: (i.address, i.channel, models["pressure"][z]) for z, i in s.pressure.items()},
        thermistors={
            n: (i.address, i.channel, models["thermistors"][n]) for n, i in s.thermistors.items()
        },
        motor_current={
            m: (i.address, i.channel, models["motor_current"][m]) for m, i in s.motor_current.items()
        },
        rail=(s.rail.address, s.rail.channel, s.rail.volts_per_volt),
        divider_supply=_divider_supply(config),
    )


def _divider_supply(config: Config) -> tuple[int, int, float] | None:
    """The thermistor divider supply input, when the config has one (for ratiometric reading)."""
    sensed = getattr(config.sensors, "divider_supply", None)
    if sensed is None:
        return None
    return (sensed.address, sensed.channel, sensed.volts_per_volt)


def mock_factory() -> MockFactory:
    """gpiozero's mock pin factory with PWM-capable pins everywhere."""
    return MockFactory(pin_class=MockPWMPin)


@dataclass
class SimRig:
    """The firmware's hardware layer wired to a simulated unit."""

    factory: MockFactory
    hardware: Hardware
    plant: Plant

    def trim_pin_history(self, keep: int = 1000) -> None:
        """Drop old entries of the mock pins' change histories (they grow forever in long runs)."""
        for pin in self.factory.pins.values():
            if len(pin.states) > 2 * keep:
                del pin.states[:-keep]

    def close(self) -> None:
        """Close the hardware (outputs off) and the mock factory."""
        self.hardware.close()
        self.factory.close()


def build_sim(
    config: Config,
    *,
    clock: Callable[[], float],
    params: PlantParams | None = None,
    seed: int = 1,
    factory: MockFactory | None = None,
) -> SimRig:
    """Build mock pins, the drivers over them, and the plant that reads those pins."""
    factory = factory or mock_factory()
    plant = Plant(factory, plant_wiring(config), params, seed=seed)
    hardware = Hardware(
        config, pin_factory=factory, bus=plant.bus, clock=clock, adc_sleep=lambda _s: None
    )
    return SimRig(factory=factory, hardware=hardware, plant=plant)
