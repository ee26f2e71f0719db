"""The whole firmware on the simulated plant in virtual time, one pass at a time (tests, bench, campaign).

Like gpiozero's mock pin factory this ships with the product so that tests drive the product: the
real ``App`` wiring (config -> drivers over mock pins -> supervisor -> session -> controller -> the
command path), never a copy of the loop. Verdicts belong to the plant (``plant``: true pressures,
the true pad temperature, the pins).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from device.app import App
from device.commands import Reply
from device.config import Config
from device.safety import Fault
from drivers.clock import VirtualClock
from drivers.sim.plant import Plant, PlantParams
from modes.limits import SAMPLE_PERIOD_S


class SimUnit:
    """A simulated unit running the production loop; ``tick()`` runs one 20 Hz pass."""

    def __init__(
        self, config: Config, *, plant_params: PlantParams | None = None, plant_seed: int | None = None
    ) -> None:
        self.clock = VirtualClock()
        self.app = App(config, sim=True, clock=self.clock, plant_params=plant_params, plant_seed=plant_seed)
        assert self.app.rig is not None
        self.plant: Plant = self.app.rig.plant
        self.faults: list[Fault] = []
        report = self.app.controller.on_fault

        def on_fault(fault: Fault) -> None:
            self.faults.append(fault)
            report(fault)

        self.app.controller.on_fault = on_fault

    @property
    def t(self) -> float:
        """Virtual seconds since the unit was built."""
        return self.clock.now()

    def start_up(self) -> None:
        """The app's start-up proof (outputs off, zones vented, every sensor judged) in virtual time."""
        asyncio.run(self.app.start_up())

    def tick(self) -> None:
        """One pass of the production loop, then one sample period passes (the plant follows)."""
        self.app.controller.tick()
        self.app.deadman.feed()
        self.clock.advance(SAMPLE_PERIOD_S)
        self.plant.catch_up()  # the physics runs whether or not the firmware can read it (a dead bus)

    def run(self, seconds: float, *, until: Any = None) -> None:
        """Run passes for ``seconds`` (or until ``until()`` holds)."""
        for _ in range(round(seconds / SAMPLE_PERIOD_S)):
            if until is not None and until():
                return
            self.tick()

    def command(self, **payload: Any) -> Reply:
        """Send one command through the device's command path (as MQTT and the panel do)."""
        return self.app.device.handle_payload(json.dumps(payload).encode(), source="harness")

    def close(self) -> None:
        """Outputs off and pins released."""
        self.app.hardware.close()
        assert self.app.rig is not None
        self.app.rig.factory.close()
