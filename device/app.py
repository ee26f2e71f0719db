"""``massager run``: wires config -> drivers -> safety -> session -> panel -> MQTT as named tasks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from device import sdnotify
from device.api import Device, wifi_signal_dbm
from device.config import Config
from device.controller import Controller
from device.deadman import Deadman
from device.faultlog import FAULT_LOG_NAME, FaultLog
from device.hardware import Hardware, Rig
from device.notice import SAFETY_NOTICE
from device.persist import Preferences, StateStore
from device.safety import Fault, FaultCode, Supervisor
from device.tasks import MqttExtension
from drivers.clock import Clock, ScaledClock
from modes.library import ProgramLibrary, load_library
from modes.session import Session, SessionSettings, Status

log = logging.getLogger(__name__)

WATCHDOG_EVERY_S = 0.5  # real seconds between WATCHDOG=1 (systemd WatchdogSec=2)
FINISH_TIMEOUT_S = 5.0  # shutdown stage 1: vent and stop, in real seconds
STOP_TASKS_MAX_S = 10.0  # after the stop event, a task still running this long is cancelled
STARTUP_VENT_TIMEOUT_S = 5.0  # zones must read vented within this at start-up

RigT = TypeVar("RigT", bound=Rig)


class StartupError(RuntimeError):
    """The device could not prove itself safe at start-up."""


def has_gpio() -> bool:
    """True on a machine with a GPIO character device (a Raspberry Pi)."""
    return any(Path("/dev").glob("gpiochip*")) and Path("/proc/device-tree/model").exists()


def default_sim_state_dir() -> Path:
    """A per-user state directory for ``--sim`` when the config names the device's system path."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    path = Path(base) / "massager-sim"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        return Path(tempfile.mkdtemp(prefix="massager-sim-"))


def session_settings(config: Config, preferences: Preferences, library: ProgramLibrary) -> SessionSettings:
    """The session's settings from the unit's config and the user's stored preferences.

    The one place they are built (the app, the test harness and the tests use it): caps and timers come
    from the config; the user's last choices within what this unit's config allows now; a remembered
    program that is no longer in ``library`` falls back to the config's default.
    """
    prefs = preferences
    program = prefs.program if prefs.program in library.names() else config.session.default_program
    return SessionSettings(
        pressure_cap_mmhg=dict(config.safety.pressure_cap_mmhg),
        # the user's last heat target, never above what this unit's config allows now
        heat_target_c=min(prefs.heat_target_c or config.heater.default_target_c,
                          config.safety.heat_target_max_c),
        heat_target_max_c=config.safety.heat_target_max_c,
        heater_max_duty=config.heater.max_duty,
        roller_max_speed=config.motors.max_speed,
        timer_default_min=min(prefs.timer_min, config.session.timer_max_min),
        timer_max_min=config.session.timer_max_min,
        default_program=program,
        default_intensity=prefs.intensity,
        skip_zones=frozenset(prefs.skip_zones or config.session.skip_zones),
    )


def first_start_preferences(config: Config) -> Preferences:
    """A new unit's preferences: its config's session defaults."""
    return Preferences(
        program=config.session.default_program,
        intensity=config.session.default_intensity,
        timer_min=config.session.timer_default_min,
        skip_zones=list(config.session.skip_zones),
    )


class App(Generic[RigT]):
    """The firmware: every part built from the config over an injected rig, run as tasks until stopped.

    The same wiring runs on the Pi (``PiRig``) and on a simulated unit (``device.sim.sim_app``).
    """

    def __init__(
        self,
        config: Config,
        *,
        rig: RigT,
        clock: Clock,
        library: ProgramLibrary | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rig``: what the app runs on, built over ``clock`` (the app's clock); ``library``: programs to
        use instead of loading ``config.programs_dir`` (tests, the bench); ``monotonic``: the deadman's
        time (real time; tests inject virtual time)."""
        self.config = config
        self.clock = clock
        self.rig = rig
        self.hardware: Hardware = rig.hardware
        self.pin_factory: Any = rig.pin_factory
        self.mqtt_extensions: list[MqttExtension] = []  # topics the MQTT bridge serves besides its own
        if library is None:
            library, problems = load_library(config.programs_dir)
            for problem in problems:
                log.error("user program skipped: %s", problem)
        self.library = library
        self.store = StateStore(config.state_dir)
        self.first_start = not self.store.exists()
        stored = self.store.load()
        if self.first_start:  # a new unit starts from its config's session defaults
            stored.preferences = first_start_preferences(config)
        prefs = stored.preferences
        settings = session_settings(config, prefs, library)
        self.session = Session(library=library, settings=settings)
        if prefs.heat:
            self.session.update(0.0, heat=True)  # the last heat choice, as the panel and state show it
        self.supervisor = Supervisor(config.safety, thermistors=list(config.sensors.thermistors))
        self._restore_latched_fault(stored.latched_fault)
        self.controller = Controller(
            hardware=self.hardware, session=self.session, supervisor=self.supervisor, clock=self.clock
        )
        self.fault_log = FaultLog(config.state_dir / FAULT_LOG_NAME)
        self.device = Device(
            config=config,
            session=self.session,
            supervisor=self.supervisor,
            controller=self.controller,
            store=self.store,
            stored=stored,
            fault_log=self.fault_log,
            wifi_signal=rig.wifi_signal,
        )
        self.deadman = Deadman(timeout_s=config.safety.loop_stale_s, on_trip=self._deadman_trip,
                               monotonic=monotonic)
        self.ready = asyncio.Event()
        self.stop_event = asyncio.Event()
        # named tasks run beside the control loop; each is handed this app as its TaskContext
        self.extra_tasks: dict[str, Callable[[App[RigT]], Coroutine[Any, Any, None]]] = {}
        self._last_watchdog = 0.0
        self._signals = 0
        self._stop_task: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        self._tasks: list[asyncio.Task[None]] = []  # the control loop and the extra tasks, once running

    # -- safety hooks ---------------------------------------------------------------------------

    def _restore_latched_fault(self, stored: Any) -> None:
        """A fault latched before a restart (crash, watchdog, power cut) stays latched until reset."""
        if stored is None:
            return
        code: FaultCode | str
        try:
            code = FaultCode(stored.code)
        except ValueError:
            code = stored.code  # unknown here (other firmware, STORAGE_FAULT): kept as it was, still latched
        self.supervisor.latch(
            Fault(code=code, message=f"{stored.message} (latched before the last restart)",
                  since=stored.since, t=0.0),
            report=False,
        )
        self.session.enter_fault(0.0)
        log.error("fault %s was latched before the restart; it needs a reset", json.dumps(str(code)))

    def _deadman_trip(self) -> None:
        """From the deadman thread: the loop is stale. Outputs latched off through the drivers, then latch."""
        self.hardware.trip()  # under the output lock: a pass resuming later cannot re-energise
        self.supervisor.latch(
            self.supervisor.new_fault(
                FaultCode.CONTROL_LOOP_STALL,
                f"control loop silent for more than {self.config.safety.loop_stale_s} s",
                t=self.controller.last_sample.t if self.controller.last_sample else 0.0,
            )
        )
        log.critical("deadman: control loop stalled; outputs forced off")

    # -- start-up -------------------------------------------------------------------------------

    async def start_up(self) -> None:
        """Outputs verified off, zones vented, sensors read and plausible, before any command."""
        self.hardware.safe_off()
        outputs = self.hardware.outputs()
        on = [name for name, value in outputs.items() if value]
        if on:
            raise StartupError(f"outputs still on after safe_off: {', '.join(on)}")
        deadline = self.clock.now() + STARTUP_VENT_TIMEOUT_S
        passes = 0
        while True:
            sample = self.controller.tick()
            self.deadman.feed()  # start-up passes are healthy passes too
            passes += 1
            judged = passes > self.config.safety.sensor_bad_samples  # every sensor rule has had its say
            if judged and sample.ok and all(
                (p is not None and p < self.config.safety.vented_mmhg) for p in sample.pressure_mmhg.values()
            ) and self.supervisor.latched is None and self.supervisor.doubt is None:
                break
            if self.supervisor.latched is not None or self.clock.now() > deadline:
                break  # a start-up fault stays latched and is reported; the device stays off
            await self.clock.sleep(self.controller.period_s)
        if self.supervisor.latched is not None:
            log.error("start-up found a fault: %s", self.supervisor.latched.message)
        elif self.supervisor.doubt is not None:
            log.error("start-up: a sensor is implausible, starts are refused: %s", self.supervisor.doubt)
        if self.first_start:
            log.warning("%s", SAFETY_NOTICE)
        if self.first_start or self.store.kept_aside:
            # the notice is shown once, on the first start; copies kept aside are replaced at once
            self.store.submit(self.device.stored, critical=self.device.stored.latched_fault is not None)
        self.ready.set()
        sdnotify.ready()
        log.info("ready (device id %s, %s)", self.device.device_id, self.rig.description)

    # -- tasks ----------------------------------------------------------------------------------

    async def control_task(self) -> None:
        """The 20 Hz safety loop; feeds the deadman and the systemd watchdog after each healthy pass."""
        def stopping() -> bool:
            return self.stop_event.is_set()

        original = self.controller.on_pass

        def on_pass(sample: Any) -> None:
            original(sample)
            self.after_pass()

        self.controller.on_pass = on_pass
        try:
            await self.controller.run(stopping)
        finally:
            self.controller.on_pass = original
            # The loop ends here on purpose: outputs off, and the deadman stops watching it (later
            # shutdown stages, such as saying offline to a slow broker, are not a stalled loop).
            self.hardware.safe_off()
            self.deadman.stop()

    def after_pass(self) -> None:
        """After every pass of the running loop: the deadman fed (rearmed after a reset), the watchdog."""
        if self.deadman.tripped and self.supervisor.latched is None:
            self.deadman.rearm()  # the stall fault was reset: watch for the next one
        self.deadman.feed()
        self.rig.after_pass(self.controller.stats.ticks)
        now = time.monotonic()
        if now - self._last_watchdog >= WATCHDOG_EVERY_S:
            self._last_watchdog = now
            sdnotify.watchdog()

    async def run(self) -> int:
        """Run until stopped; returns the exit status. Outputs end off whatever happens."""
        self.deadman.start()
        status = 0
        try:
            await self.start_up()
            async with asyncio.TaskGroup() as group:
                self._tasks.append(group.create_task(self.control_task(), name="control"))
                for name, factory in self.extra_tasks.items():
                    self._tasks.append(group.create_task(factory(self), name=name))
        except* Exception as group:
            for exc in group.exceptions:
                log.critical("task crashed: %r", exc, exc_info=exc)
            status = 1
        finally:
            self.hardware.safe_off()
            self.deadman.stop()
            self.rig.close()  # the hardware closed (outputs off) and whatever else the rig holds
            self.store.save(self.device.stored)
            self.store.close()
            sdnotify.stopping()
            stop_task = self._stop_task
            if stop_task is not None and not stop_task.done():  # it waits for late tasks: none are left
                stop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stop_task
        return status

    async def finish(self) -> None:
        """Shutdown stage 1: finish the session (vent, rollers stop, heat off), bounded in time."""
        if self.session.status in (Status.RUNNING, Status.PAUSED):
            self.session.stop(self.clock.now())
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while self.session.status is Status.FINISHING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def request_stop(self) -> None:
        """Signal handler: the first signal stops gracefully, the second at once (outputs off)."""
        self._signals += 1
        if self._signals >= 2:
            log.warning("second signal: outputs off, exiting now")
            self.hardware.safe_off()
            with contextlib.suppress(Exception):  # a fault record still with the writer reaches the card
                self.store.flush(timeout=1.0)
            os._exit(1)
        log.info("stopping")
        self._stop_task = asyncio.get_running_loop().create_task(self._graceful_stop(), name="graceful-stop")

    async def _graceful_stop(self) -> None:
        try:
            await asyncio.wait_for(self.finish(), FINISH_TIMEOUT_S + 1)
        except TimeoutError:
            log.warning("finishing took too long; forcing outputs off")
        self.hardware.safe_off()
        self.stop_event.set()
        # Every task ends on the stop event; one that has not after STOP_TASKS_MAX_S (stuck in a broker's
        # goodbye, say) is cancelled: stopping always ends the process, its outputs already off.
        await asyncio.sleep(STOP_TASKS_MAX_S)
        late = [task for task in self._tasks if not task.done()]
        if late:
            log.error("still running %.0f s after the stop: %s; cancelling", STOP_TASKS_MAX_S,
                      ", ".join(task.get_name() for task in late))
            for task in late:
                task.cancel()


class _NoBus:
    """Stands in for an I2C bus that cannot be opened when only outputs matter (``safe-off``)."""

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        """Fail like a dead bus."""
        raise OSError("I2C bus not available")

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Fail like a dead bus."""
        raise OSError("I2C bus not available")

    def close(self) -> None:
        """Nothing to close."""


def build_real_hardware(config: Config, clock: Clock, *, outputs_only: bool = False) -> Hardware:
    """Drivers on the Pi's GPIO (gpiozero picks lgpio or RPi.GPIO) and I2C bus.

    ``outputs_only``: a bus that cannot be opened is not an error (``safe-off`` must still switch
    every output off when the I2C bus is what failed).
    """
    from gpiozero import Device as GpioDevice
    from smbus2 import SMBus

    bus: Any
    try:
        bus = SMBus(config.adc.bus)
    except OSError as exc:
        if outputs_only:
            log.warning("I2C bus %d not available (%s); switching outputs off anyway", config.adc.bus, exc)
            bus = _NoBus()
        else:
            raise StartupError(
                f"cannot open I2C bus {config.adc.bus} (/dev/i2c-{config.adc.bus}): {exc.strerror or exc}; "
                "is I2C enabled (dtparam=i2c_arm=on in config.txt) and is the user in the i2c group?"
            ) from exc
    try:
        return Hardware(config, pin_factory=GpioDevice.pin_factory, bus=bus, clock=clock.now)
    except Exception as exc:
        bus.close()
        raise StartupError(
            f"cannot claim the GPIO pins: {exc}; is another massager running "
            "(sudo systemctl stop massager) and is the user in the gpio group?"
        ) from exc


@dataclass(frozen=True)
class PiRig:
    """The Raspberry Pi's own drivers (GPIO through gpiozero's default factory, the I2C bus), its Wi-Fi."""

    hardware: Hardware
    pin_factory: None = None  # gpiozero's default: the Pi's GPIO
    wifi_signal: Callable[[], int | None] | None = wifi_signal_dbm
    description: str = "hardware"

    def after_pass(self, passes: int) -> None:
        """Nothing to do after a pass on the Pi."""

    def close(self) -> None:
        """Close the hardware (outputs off, pins released)."""
        self.hardware.close()


def pi_app(config: Config) -> App[PiRig]:
    """The app on the Pi's own hardware (``massager run``)."""
    clock = ScaledClock()
    return App(config, rig=PiRig(build_real_hardware(config, clock)), clock=clock)


def run_main(args: argparse.Namespace, config: Config) -> int:
    """``massager run``."""
    if getattr(args, "plant_seed", None) is not None and not args.sim:
        print("massager: --plant-seed works only with --sim (it draws the simulated plant)", file=sys.stderr)
        return 2
    if getattr(args, "no_plant_feed", False) and not args.sim:
        print("massager: --no-plant-feed works only with --sim (sim/plant is the simulator's)", file=sys.stderr)
        return 2
    if not args.sim and not has_gpio():
        print(
            "massager: no GPIO on this machine (not a Raspberry Pi?).\n"
            "To run on simulated hardware, use: massager run --sim",
            file=sys.stderr,
        )
        return 2
    if args.sim and args.state_dir is None and config.state_dir == Path("/var/lib/massager"):
        config = config.model_copy(update={"state_dir": default_sim_state_dir()})
    if args.sim and config.programs_dir == Path("/etc/massager/programs") and not config.programs_dir.exists():
        config = config.model_copy(update={"programs_dir": None})
    return asyncio.run(_run(args, config))


def settle_heap() -> None:
    """Exempt everything built so far from the cyclic GC: later full collections scan only newer objects."""
    # Imports, config and the app's parts live as long as the process; a full collection over them (some
    # 40,000 objects) held the event loop 15-85 ms, often inside the command that allocated the last straw.
    gc.freeze()


def sim_app_from_args(args: argparse.Namespace, config: Config) -> App[Any]:
    """The app on the simulated unit that ``massager run --sim`` and its options ask for."""
    from device.sim import sim_app  # the simulator, only when asked for

    return sim_app(config, time_scale=args.time_scale, plant_seed=getattr(args, "plant_seed", None),
                   plant_feed=not getattr(args, "no_plant_feed", False))


async def _run(args: argparse.Namespace, config: Config) -> int:
    app: App[Any]
    try:
        app = sim_app_from_args(args, config) if args.sim else pi_app(config)
    except StartupError as exc:
        log.critical("%s", exc)
        return 1
    install_optional_tasks(app, args)
    settle_heap()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    return await app.run()


def install_optional_tasks(app: App[Any], args: argparse.Namespace) -> None:
    """Add the MQTT bridge, the panel and the dashboard (``--sim`` only) where they are available."""
    with contextlib.suppress(ImportError):
        from device.panel import panel_task

        app.extra_tasks["panel"] = panel_task
    if app.config.mqtt.enabled:
        with contextlib.suppress(ImportError):
            from device.mqtt import mqtt_task

            app.extra_tasks["mqtt"] = mqtt_task
    # Field updates (the health gate, the update command): part of every unit, so a broken import fails here.
    from device.update_agent import UpdateAgent, update_task

    app.device.updates = UpdateAgent(app)
    app.extra_tasks["update"] = update_task
    if getattr(args, "dashboard", False):
        with contextlib.suppress(ImportError):
            from device.dashboard import dashboard_task

            app.extra_tasks["dashboard"] = dashboard_task


def safe_off_main(args: argparse.Namespace, config: Config) -> int:
    """``massager safe-off``: drive every output pin off, even when the firmware died."""
    if not args.sim and not has_gpio():
        print("massager: no GPIO on this machine; nothing to switch off (use --sim to test)",
              file=sys.stderr)
        return 2
    clock = ScaledClock()
    try:
        if args.sim:
            from device.sim import build_sim

            hardware = build_sim(config, clock=clock.now).hardware
        else:
            hardware = build_real_hardware(config, clock, outputs_only=True)
        hardware.safe_off()
        off = not any(hardware.outputs().values())
        hardware.close()
    except Exception as exc:  # noqa: BLE001 - report and fail: systemd logs it
        print(f"massager safe-off: {exc}", file=sys.stderr)
        return 1
    print("every output is off" if off else "WARNING: an output still reads on")
    return 0 if off else 1


__all__ = ["App", "PiRig", "first_start_preferences", "pi_app", "run_main", "safe_off_main", "session_settings",
           "settle_heap"]
