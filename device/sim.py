"""The simulated unit for ``--sim``, the tests and the bench: mock pins, the plant, the fake I2C bus,
and everything that exists only in the simulation (plant faults, the ``sim/*`` MQTT topics).

The product knows nothing of this module: ``sim_app`` builds the simulated rig and hands it to the
same ``App`` that runs on the Pi; the rig adds its MQTT topics through the bridge's extension point.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from device import commands as cmds
from device.app import App
from device.commands import CommandError
from device.config import Config
from device.hardware import Hardware, sensor_models
from device.tasks import MqttExtension, MqttFeed, MqttRequest
from drivers.clock import Clock, ScaledClock
from drivers.sim.plant import Plant, PlantFaultError, PlantParams, PlantWiring
from modes.library import ProgramLibrary

log = logging.getLogger(__name__)

DEADMAN_HW_S = 0.75  # the external deadman: a backup slower than the firmware's 0.5 s (self-test: < 1 s)
PIN_HISTORY_MAX = 2000  # mock pin state changes kept per pin in long simulations
TRIM_EVERY_PASSES = 1000  # passes between trims of the mock pins' histories
PLANT_EVERY_S = 0.1  # sim/plant at 10 Hz
LOOP_STALL_MAX_S = 30.0  # the longest event loop block ``loop_stall`` may ask for, in real seconds
FAULT_TOPIC = "sim/fault"  # under the device's base: plant fault injection
FAULT_REPLY_TOPIC = "sim/fault/reply"
PLANT_TOPIC = "sim/plant"  # under the device's base: the plant's truth at 10 Hz


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
    """The firmware's hardware layer wired to a simulated unit (a ``Rig`` for the app)."""

    factory: MockFactory
    hardware: Hardware
    plant: Plant
    on_inject: Callable[[str], None] | None = None  # told of every plant fault injected (the device)

    @property
    def pin_factory(self) -> MockFactory:
        """The panel's buttons and LEDs are mock pins too."""
        return self.factory

    @property
    def wifi_signal(self) -> None:
        """The simulated unit has no Wi-Fi of its own (the host's is not the unit's)."""
        return None

    @property
    def description(self) -> str:
        """For the log."""
        return "simulated"

    def after_pass(self, passes: int) -> None:
        """Every TRIM_EVERY_PASSES passes, trim the mock pins' histories (they are not firmware)."""
        if passes % TRIM_EVERY_PASSES == 0:
            self.trim_pin_history(PIN_HISTORY_MAX // 2)

    def trim_pin_history(self, keep: int = 1000) -> None:
        """Drop old entries of the mock pins' change histories (they grow forever in long runs)."""
        for pin in self.factory.pins.values():
            if len(pin.states) > 2 * keep:
                del pin.states[:-keep]

    def close(self) -> None:
        """Log the plant's final outputs (read from the mock pins), close the hardware and the factory."""
        log.info("sim: final plant outputs %s", json.dumps(self.plant.outputs()))
        self.hardware.close()
        self.factory.close()

    # -- plant faults ---------------------------------------------------------------------------

    def inject_fault(self, data: Any) -> str:
        """Inject a plant fault from ``{"fault": NAME, ...}``; returns what was done.

        ``loop_stall`` blocks the event loop for ``seconds`` of real time (default 2) to prove the
        deadman; ``clear`` removes every injected plant fault. Raises CommandError on bad input.
        """
        if not isinstance(data, dict):
            raise CommandError(None, f"expected a JSON object, got {type(data).__name__}")
        params = dict(data)
        name = params.pop("fault", None)
        params.pop("id", None)
        if not isinstance(name, str):
            raise CommandError("fault", "missing; expected a plant fault name, loop_stall or clear")
        if name == "clear":
            self.plant.clear_faults()
            return "plant faults cleared"
        if name == "loop_stall":
            seconds = params.pop("seconds", 2.0)
            if params:
                raise CommandError(next(iter(params)), "unknown field for loop_stall")
            if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                    or not 0 < seconds <= LOOP_STALL_MAX_S):
                raise CommandError(
                    "seconds", f"must be a number of seconds in (0, {LOOP_STALL_MAX_S:g}], got {seconds!r}")
            asyncio.get_running_loop().call_soon(block_event_loop, float(seconds))
            return f"event loop will block for {seconds} s"
        try:
            self.plant.inject(name, **params)
        except PlantFaultError as exc:
            raise CommandError(exc.field, str(exc)) from None
        except TypeError as exc:
            raise CommandError("fault", f"bad parameters: {exc}") from None
        log.warning("sim: plant fault %s injected %s", name, params or "")
        if self.on_inject is not None:
            self.on_inject("sim_fault")
        return f"plant fault {name} injected"

    def fault_answer(self, payload: bytes) -> dict[str, Any]:
        """The ``sim/fault/reply`` answer to one ``sim/fault`` message (its fault injected, or why not)."""
        data: Any = None
        try:
            data = cmds.decode_payload(payload)
            result = self.inject_fault(data)
        except CommandError as exc:
            return {"id": cmds.request_id(data), "ok": False, "error": str(exc)}
        return {"id": cmds.request_id(data), "ok": True, "error": None, "result": result}

    def mqtt_extension(self, *, plant_feed: bool = True) -> MqttExtension:
        """The simulator's MQTT topics: ``sim/fault`` (answered on ``sim/fault/reply``) and ``sim/plant``."""
        return MqttExtension(
            requests=(MqttRequest(FAULT_TOPIC, FAULT_REPLY_TOPIC, self.fault_answer),),
            feeds=(MqttFeed(PLANT_TOPIC, PLANT_EVERY_S, self.plant.truth),) if plant_feed else (),
        )


def block_event_loop(seconds: float) -> None:
    """The ``loop_stall`` sim fault: a blocking call on the event loop (what the deadman exists for)."""
    log.warning("sim: blocking the event loop for %.1f s", seconds)
    time.sleep(seconds)


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


def app_rig(
    config: Config,
    clock: Clock,
    *,
    plant_seed: int | None = None,
    plant_params: PlantParams | None = None,
) -> SimRig:
    """The simulated unit the app runs on: it fits the external hardware deadman, as the product does,
    and keeps up with the app's ``clock``; a seed draws its physics from the documented ranges
    (drivers/sim/plant.py PLANT_RANGES)."""
    params = plant_params or (PlantParams() if plant_seed is None else PlantParams.draw(plant_seed))
    rig = build_sim(
        config, clock=clock.now,
        params=dataclasses.replace(params, deadman_timeout_s=DEADMAN_HW_S),
        seed=1 if plant_seed is None else plant_seed,
    )
    rig.plant.follow(clock.now)
    if plant_seed is not None:
        log.info("sim: plant drawn with seed %d: %s", plant_seed, json.dumps(params.as_dict()))
    return rig


def sim_app(
    config: Config,
    *,
    clock: Clock | None = None,
    time_scale: float = 1.0,
    plant_seed: int | None = None,
    plant_params: PlantParams | None = None,
    library: ProgramLibrary | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    plant_feed: bool = True,
) -> App[SimRig]:
    """The app on a simulated unit (``massager run --sim``, the harness, the tests, the bench).

    ``clock``: the app's clock (default: real time scaled by ``time_scale``); ``monotonic``: the
    deadman's time (real time; tests inject virtual time); ``plant_feed``: publish ``sim/plant``.
    """
    clock = clock or ScaledClock(scale=time_scale)
    rig = app_rig(config, clock, plant_seed=plant_seed, plant_params=plant_params)
    try:
        app = App(config, rig=rig, clock=clock, library=library, monotonic=monotonic)
    except BaseException:
        rig.close()
        raise
    rig.on_inject = app.device.notify
    app.mqtt_extensions.append(rig.mqtt_extension(plant_feed=plant_feed))
    return app
