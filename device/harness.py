"""The whole firmware on the simulated plant in virtual time, one pass at a time (tests, bench, campaign).

Like gpiozero's mock pin factory this ships with the product so that tests drive the product: the
real ``App`` wiring as ``massager run --sim`` builds it (``device.sim.sim_app``: config -> drivers over
mock pins -> supervisor -> session -> controller -> the command path), never a copy of the loop.
Verdicts belong to the plant (``plant``: true pressures, the true pad temperature, the pins).

Time is virtual throughout: the controller's clock, the plant (it follows that clock) and the
deadman's monotonic time are one ``VirtualClock``. A loop that runs no pass is a stalled loop:
``stall(seconds)`` moves time without passes, and the deadman judges that on the same time line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from device.app import App
from device.commands import Reply
from device.config import Config
from device.controller import Controller
from device.deadman import Deadman
from device.safety import Fault, Supervisor
from device.sim import SimRig, sim_app
from drivers.clock import VirtualClock
from drivers.sim.plant import Plant, PlantParams
from modes.library import ProgramLibrary
from modes.limits import SAMPLE_PERIOD_S
from modes.session import Session


class SimUnit:
    """A simulated unit running the production loop; ``tick()`` runs one 20 Hz pass.

    ``config`` is the unit's whole configuration (caps, timers, session defaults: give a test other
    ones with ``config.model_copy(update=...)``); its ``state_dir`` holds the unit's stored state, so
    give each unit its own. ``library`` replaces the programs loaded from ``config.programs_dir``.
    ``observers`` are called after every scheduled pass, before time moves on (traces of the truth).
    """

    def __init__(
        self,
        config: Config,
        *,
        plant_params: PlantParams | None = None,
        plant_seed: int | None = None,
        library: ProgramLibrary | None = None,
    ) -> None:
        self.clock = VirtualClock()
        self.app: App[SimRig] = sim_app(config, clock=self.clock, plant_params=plant_params,
                                        plant_seed=plant_seed, library=library, monotonic=self.clock.now)
        self.plant: Plant = self.app.rig.plant
        self.faults: list[Fault] = []
        self.observers: list[Callable[[], None]] = []
        report = self.app.controller.on_fault

        def on_fault(fault: Fault) -> None:
            self.faults.append(fault)
            report(fault)

        self.app.controller.on_fault = on_fault

    @property
    def t(self) -> float:
        """Virtual seconds since the unit was built."""
        return self.clock.now()

    @property
    def session(self) -> Session:
        """The unit's session (read it; change it through ``command``, as a user does)."""
        return self.app.session

    @property
    def supervisor(self) -> Supervisor:
        """The unit's safety supervisor."""
        return self.app.supervisor

    @property
    def controller(self) -> Controller:
        """The unit's control loop."""
        return self.app.controller

    @property
    def deadman(self) -> Deadman:
        """The unit's software deadman on the unit's virtual time (``poll()`` judges the silence now)."""
        return self.app.deadman

    def start_up(self) -> None:
        """The app's start-up proof (outputs off, zones vented, every sensor judged) in virtual time."""
        asyncio.run(self.app.start_up())

    def tick(self) -> None:
        """One pass of the production loop, then one sample period passes (the plant follows)."""
        self.app.controller.tick()
        self.app.after_pass()  # what App.control_task does after every pass (the deadman fed)
        for observe in self.observers:
            observe()
        self.clock.advance(SAMPLE_PERIOD_S)
        self.plant.catch_up()  # the physics runs whether or not the firmware can read it (a dead bus)

    def stall(self, seconds: float) -> None:
        """The loop runs no pass for ``seconds`` (blocked); the plant goes on under the last outputs."""
        self.clock.advance(seconds)
        self.plant.catch_up()

    def run(self, seconds: float, *, until: Callable[[], bool] | None = None) -> None:
        """Run passes for ``seconds`` (or until ``until()`` holds)."""
        for _ in range(round(seconds / SAMPLE_PERIOD_S)):
            if until is not None and until():
                return
            self.tick()

    def command(self, **payload: Any) -> Reply:
        """Send one command through the device's command path (as MQTT and the panel do)."""
        return self.app.device.handle_payload(json.dumps(payload).encode(), source="harness")

    def reset(self) -> str | None:
        """A ``reset_fault`` command: None when accepted, else why it was refused."""
        reply = self.command(action="reset_fault")
        return None if reply.ok else reply.error or "refused"

    def close(self) -> None:
        """Outputs off, pins released, and the stored state's writes finished."""
        self.app.rig.close()
        self.app.store.close()
