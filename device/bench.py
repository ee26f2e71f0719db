"""``massager bench``: safety reactions, command, reply and button latency, loop jitter, footprint, the page.

Everything runs on the real asyncio loop in real time, with the simulated plant and gpiozero's mock
pins standing in for the hardware: output times come from the mock pins' own change time stamps. The
in-process firmware is built as ``massager run --sim`` builds it (``bench_app``: ``App``, its optional
tasks, the settled start-up heap), and its log goes to a file at INFO, as the journal would take it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from device import __version__
from device.commands import CommandError, Start, Stop
from device.config import Config, load_config
from device.remote import stop_process
from drivers.sim.plant import PlantParams

log = logging.getLogger(__name__)

TRIP_TEMP_C = 36.05  # a tightened trip so that trials cycle fast: the code path is the same
BASE_TEMP_C = 35.98
CROSS_TEMP_C = 36.10  # one sample above the trip: 0.12 °C in a 40-50 ms sample is far below the jump limit
# The trip trials' plant has quieter thermistors (1-sigma 0.005 °C, nominal 0.02): with the nominal noise a
# one-sample step across the trip sometimes also read as a jump (TEMP_SENSOR_FAULT, 17 of 200 trials). Its
# surroundings are at the base temperature, so the pad rests there: forcing it up from 28.5 °C read as
# heating with the heater off (HEATER_RUNAWAY in the first trial of a run).
TRIP_PLANT = PlantParams(temp_noise_c=0.005, air_c=BASE_TEMP_C, skin_c=BASE_TEMP_C)
PRESSURE_ZONE = "foot"  # the zone every built-in program connects first (relax: alone for its first 6 s)
BLOCK_S = 0.65  # how long a deadman trial blocks the event loop
EXPECTED_CODES = {  # what each fault trial must latch; any other code fails its figure
    "trip_temperature": "OVER_TEMPERATURE",
    "trip_temperature_competing": "OVER_TEMPERATURE",
    "trip_pressure": "OVER_PRESSURE",
    "deadman": "CONTROL_LOOP_STALL",
}
REPLY_TOPIC_NAME = "bench"  # the phone's MQTT 5 response topic: cmd/reply/bench


@dataclass(frozen=True)
class Plan:
    """How long each part runs: the full benchmark or the quick smoke version."""

    trials: int
    deadman_trials: int
    jitter_s: float
    idle_s: float
    running_s: float
    sim_minutes: float
    programs: int | None  # None: every built-in program
    flood_trials: int = 2  # stop after a flood of flood_messages from another client
    flood_messages: int = 10_000
    web_trials: int = 5  # taps on the phone page (device/bench_web.py)
    name: str = "quick"


FULL = Plan(trials=200, deadman_trials=200, jitter_s=60.0, idle_s=20.0, running_s=60.0,
            sim_minutes=15.0, programs=None, flood_trials=20, web_trials=50, name="full")
QUICK = Plan(trials=4, deadman_trials=2, jitter_s=1.0, idle_s=1.0, running_s=2.0,
             sim_minutes=1.0, programs=1, flood_trials=1, flood_messages=2_000, web_trials=5, name="quick")
NO_WEB = "not asked for (--no-web)"


def summary(values: list[float], unit_scale: float = 1000.0) -> dict[str, float | int]:
    """p50 / p99 / max (in ms by default) and the count."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered) * unit_scale, 3),
        "p99": round(p99 * unit_scale, 3),
        "max": round(ordered[-1] * unit_scale, 3),
    }


@contextlib.contextmanager
def cpu_competitor(enabled: bool) -> Iterator[None]:
    """A CPU-bound process pinned with this one to the same core, while the block runs."""
    if not enabled:
        yield
        return
    saved = os.sched_getaffinity(0)
    core = min(saved)
    os.sched_setaffinity(0, {core})
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(proc.pid, {core})
        yield
    finally:
        proc.kill()
        proc.wait()
        os.sched_setaffinity(0, saved)


def bench_config(state_dir: Path, **mqtt: Any) -> Config:
    """The default config with a tightened over-temperature trip (trials cycle in a fraction of a second)."""
    overrides: dict[str, Any] = {
        "state_dir": str(state_dir),
        "programs_dir": None,
        "safety.trip_temp_c": TRIP_TEMP_C,
        "safety.heat_target_max_c": 36.0,
        "heater.default_target_c": 35.0,
        "panel.buzzer_muted": True,
    }
    overrides.update({f"mqtt.{k}": v for k, v in mqtt.items()})
    if "mqtt.enabled" not in overrides:
        overrides["mqtt.enabled"] = False
    return load_config(None, overrides)


def bench_app(config: Config, *, plant_params: PlantParams | None = None) -> Any:
    """The firmware as ``massager run --sim`` builds it: ``App``, its optional tasks, the heap settled."""
    from device.app import install_optional_tasks, settle_heap
    from device.sim import sim_app

    app = sim_app(config, plant_params=plant_params)
    install_optional_tasks(app, argparse.Namespace(dashboard=False))
    settle_heap()
    return app


class AppProbe:
    """An in-process firmware on simulated hardware, with helpers to time what its pins do."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.plant = app.rig.plant
        pins = app.config.pins
        self.load_pins = [app.rig.factory.pin(getattr(pins, n)) for n in pins.LOADS if n != "heartbeat"]
        self.relay_pin = app.rig.factory.pin(pins.relay)

    def all_off_since(self, t0: float) -> float | None:
        """When the last load pin went off after ``t0`` (None while any is still on)."""
        if not self.plant.all_off():
            return None
        changed = [p._last_change for p in self.load_pins if p._last_change >= t0]
        return max(changed) if changed else t0

    async def relay_on_at(self, t0: float, timeout_s: float = 2.0) -> float | None:
        """The monotonic time the relay pin went on, waiting up to ``timeout_s`` from ``t0`` (None: not)."""
        while not self.relay_pin.state and time.monotonic() - t0 < timeout_s:
            await asyncio.sleep(0.0005)
        return self.relay_pin._last_change if self.relay_pin.state else None

    async def wait_all_off(self, t0: float, timeout_s: float = 2.0) -> float | None:
        """Real seconds from ``t0`` until every load pin is off (None on time-out)."""
        while time.monotonic() - t0 < timeout_s:
            off = self.all_off_since(t0)
            if off is not None:
                return off - t0
            await asyncio.sleep(0.001)
        return None

    async def reset(self) -> None:
        """Back to idle with no fault latched (retrying while the condition clears)."""
        device = self.app.device
        for _ in range(100):
            if self.app.supervisor.latched is None:
                break
            try:
                device.reset_fault()
            except CommandError:
                await asyncio.sleep(0.02)
        if self.app.supervisor.latched is not None:
            raise RuntimeError(f"bench: cannot reset {self.app.supervisor.latched}")
        if str(self.app.session.status) in ("running", "paused"):
            device.execute(Stop(action="stop"), source="bench")
        for _ in range(200):
            if str(self.app.session.status) == "idle":
                return
            await asyncio.sleep(0.01)

    async def start_session(self) -> None:
        """Start a program and wait until the relay is on."""
        self.app.device.execute(Start(action="start", program="relax", intensity=3, heat=False),
                                source="bench")
        for _ in range(100):
            if self.relay_pin.state:
                return
            await asyncio.sleep(0.005)

    def set_temperature(self, celsius: float) -> None:
        """Force the pad and both thermistors to ``celsius`` (a plant-side disturbance)."""
        self.plant.pad_c = celsius
        for name in self.plant.sensor_c:
            self.plant.sensor_c[name] = celsius

    async def wait_connected(self, zone: str, timeout_s: float = 2.0) -> bool:
        """Wait until ``zone``'s valve connects it to the pump (it is being filled or held)."""
        t0 = time.monotonic()
        while not self.plant.valve_connected(zone):
            if time.monotonic() - t0 > timeout_s:
                return False
            await asyncio.sleep(0.001)
        return True


@dataclass
class TrialLog:
    """A fault trial series: latencies, the codes its trials latched (a wrong one with its message)."""

    latencies: list[float]
    codes: dict[str, int]
    wrong: dict[str, str]  # an unexpected code -> the message of its first occurrence
    trials: int = 0

    def note(self, probe: AppProbe, expected: str) -> None:
        """Count the code latched now (and keep the message of an unexpected one)."""
        fault = probe.app.supervisor.latched
        code = "none" if fault is None else str(fault.code)
        self.codes[code] = self.codes.get(code, 0) + 1
        if code != expected and code not in self.wrong:
            self.wrong[code] = "no fault latched" if fault is None else fault.message

    def figure(self) -> dict[str, Any]:
        """The summary with the codes: what the figure reports."""
        out: dict[str, Any] = {**summary(self.latencies), "trials": self.trials, "codes": self.codes}
        if self.wrong:
            out["wrong_codes"] = self.wrong
        return out


async def _trip_trials(probe: AppProbe, kind: str, trials: int) -> TrialLog:
    """Outputs-off latency after the plant crosses a trip, ``trials`` times, with the codes latched."""
    expected = "OVER_TEMPERATURE" if kind == "temperature" else "OVER_PRESSURE"
    found = TrialLog([], {}, {})
    probe.set_temperature(BASE_TEMP_C)
    await asyncio.sleep(0.2)
    for _ in range(trials):
        await probe.reset()
        await probe.start_session()
        if kind == "temperature":
            await asyncio.sleep(0.1 + random.uniform(0.0, 0.05))  # a random phase against the 20 Hz loop
            t0 = time.monotonic()
            probe.set_temperature(CROSS_TEMP_C)
        else:
            # Into a zone being filled or held: a venting zone empties below the trip before the next
            # sample reads it, and then its valve looks stuck (VALVE_STUCK), which is another rule.
            if not await probe.wait_connected(PRESSURE_ZONE):
                continue
            await asyncio.sleep(random.uniform(0.0, 0.05))
            trip = probe.app.config.safety.pressure_trip_mmhg[PRESSURE_ZONE]
            t0 = time.monotonic()
            probe.plant.pressure[PRESSURE_ZONE] = trip + 5.0
        found.trials += 1
        latency = await probe.wait_all_off(t0)
        if latency is not None:
            found.latencies.append(latency)
        found.note(probe, expected)
        probe.set_temperature(BASE_TEMP_C)
        probe.plant.pressure[PRESSURE_ZONE] = 0.0
        await asyncio.sleep(0.06)
    await probe.reset()
    return found


def _block_loop(started: list[float]) -> None:
    """Block the event loop (as a hung call would), noting when the block began."""
    started.append(time.monotonic())
    time.sleep(BLOCK_S)


async def _deadman_trials(probe: AppProbe, trials: int) -> TrialLog:
    """Outputs-off latency from the moment the event loop blocks, with the codes latched."""
    found = TrialLog([], {}, {})
    for _ in range(trials):
        await probe.reset()
        await probe.start_session()
        await asyncio.sleep(0.1)
        started: list[float] = []
        asyncio.get_running_loop().call_soon(_block_loop, started)
        await asyncio.sleep(0)
        if started:
            found.trials += 1
            latency = await probe.wait_all_off(started[0])
            if latency is not None:
                found.latencies.append(latency)
            found.note(probe, "CONTROL_LOOP_STALL")
        await asyncio.sleep(0.1)
    await probe.reset()
    return found


async def _button_trials(probe: AppProbe, trials: int) -> list[float]:
    """From a mock click of ``power`` (idle; a start acts on release) to the relay switching on."""
    app = probe.app
    button = app.rig.factory.pin(app.config.pins.button_power)
    latencies: list[float] = []
    for _ in range(trials):
        await probe.reset()
        button.drive_low()
        await asyncio.sleep(0.1 + random.uniform(0.0, 0.05))
        t0 = time.monotonic()
        button.drive_high()
        on_at = await probe.relay_on_at(t0, 1.0)
        if on_at is not None:
            latencies.append(on_at - t0)
        await asyncio.sleep(0.05)
    await probe.reset()
    return latencies


def steal_ms() -> float:
    """CPU time the hypervisor gave to other guests while this machine's CPUs wanted it (``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Jitter:
    """The loop's period deviations, the passes' own CPU time, and the steal time over the window."""

    deviations: list[float]
    pass_cpu: list[float]
    steal_ms: float

    def figure(self) -> dict[str, Any]:
        """The deviations' summary with the median pass CPU time and the steal time."""
        cpu = statistics.median(self.pass_cpu) if self.pass_cpu else 0.0
        return {**summary(self.deviations), "pass_cpu_ms": round(cpu * 1000, 3),
                "steal_ms": round(self.steal_ms)}


async def _jitter(probe: AppProbe, seconds: float) -> Jitter:
    """Deviation of the control loop's period from 50 ms while a program runs."""
    controller = probe.app.controller
    await probe.reset()
    await probe.start_session()
    times: list[float] = []
    cpu: list[float] = []
    original, tick = controller.on_pass, controller.tick

    def stamp(sample: Any) -> None:
        times.append(time.monotonic())
        original(sample)

    def timed_tick() -> None:
        c0 = time.thread_time()
        tick()
        cpu.append(time.thread_time() - c0)

    controller.on_pass, controller.tick = stamp, timed_tick
    stolen = steal_ms()
    await asyncio.sleep(seconds)
    stolen = steal_ms() - stolen
    controller.on_pass, controller.tick = original, tick
    await probe.reset()
    period = controller.period_s
    return Jitter([abs((b - a) - period) for a, b in itertools.pairwise(times)], cpu, stolen)


async def jitter_floor(seconds: float, busy_s: float, period_s: float = 0.05) -> Jitter:
    """The machine's floor: a bare asyncio loop that burns ``busy_s`` of CPU every ``period_s`` (a pass's
    median cost) and sleeps as the control loop does; no firmware, same process, right after it."""
    times: list[float] = []
    stolen = steal_ms()
    next_at = time.monotonic()
    end = next_at + seconds
    while next_at < end:
        c0 = time.thread_time()
        while time.thread_time() - c0 < busy_s:
            pass
        times.append(time.monotonic())
        next_at += period_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return Jitter([abs((b - a) - period_s) for a, b in itertools.pairwise(times)], [busy_s],
                  steal_ms() - stolen)


async def _in_process(plan: Plan, competing: bool, workdir: Path) -> dict[str, Any]:
    """Trip, deadman, button latency and loop jitter on an in-process firmware."""
    results: dict[str, Any] = {}
    app = bench_app(bench_config(workdir / ("state-c" if competing else "state")), plant_params=TRIP_PLANT)

    async def runner(app: Any) -> None:
        await app.ready.wait()
        probe = AppProbe(app)
        try:
            with cpu_competitor(competing):
                suffix = "_competing" if competing else ""
                found = await _trip_trials(probe, "temperature", plan.trials)
                results[f"trip_temperature{suffix}"] = found.figure()
                if not competing:
                    results["trip_pressure"] = (await _trip_trials(probe, "pressure", plan.trials)).figure()
                results[f"button{suffix}"] = summary(await _button_trials(probe, plan.trials))
                if not competing:
                    results["deadman"] = (await _deadman_trials(probe, plan.deadman_trials)).figure()
                results[f"loop_jitter{suffix}"] = (await _jitter(probe, plan.jitter_s)).figure()
        finally:
            app.stop_event.set()

    app.extra_tasks["bench"] = runner
    await app.run()
    return results


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    """A private mosquitto on a free loopback port (None when mosquitto is not installed)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


def _paho_client(port: int, name: str) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def broker_baseline(port: int, trials: int) -> list[float]:
    """Publish -> receive latency between two plain clients through the broker."""
    import threading

    received = threading.Event()
    sub = _paho_client(port, "bench-sub")
    pub = _paho_client(port, "bench-pub")
    sub.on_message = lambda _c, _u, _m: received.set()
    sub.subscribe("bench/ping", qos=0)
    time.sleep(0.3)
    latencies = []
    for _ in range(trials):
        received.clear()
        t0 = time.monotonic()
        pub.publish("bench/ping", b"x", qos=0)
        if received.wait(2.0):
            latencies.append(time.monotonic() - t0)
        time.sleep(0.01)
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
    return latencies


class Phone:
    """A separate MQTT 5 client in its own process (``device/bench_phone.py``) that sends commands with a
    response topic; it stamps each send and each reply's arrival itself, on the system's monotonic clock."""

    def __init__(self, port: int, name: str, response_topic: str) -> None:
        import threading

        self.sent: dict[bytes, float] = {}  # correlation -> when the phone published it
        self.replies: dict[bytes, tuple[float, bool]] = {}  # correlation -> (arrival, ok)
        command = [sys.executable, "-m", "device.bench_phone", str(port), name, response_topic]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            self.close()
            raise RuntimeError("bench: the phone could not subscribe to its response topic")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if "sent" in event:
                self.sent[event["sent"].encode()] = event["t"]
            elif "reply" in event:
                self.replies[event["reply"].encode()] = (event["t"], event["ok"])

    def send(self, topic: str, command: dict[str, Any], correlation: bytes) -> float:
        """Ask the phone to publish ``command`` with ``correlation``; returns when it was asked."""
        assert self.proc.stdin is not None
        asked = time.monotonic()
        self.proc.stdin.write(json.dumps({"topic": topic, "command": command,
                                          "correlation": correlation.decode()}) + "\n")
        self.proc.stdin.flush()
        return asked

    async def sent_at(self, correlation: bytes, asked: float, timeout_s: float = 2.0) -> float | None:
        """When the phone published ``correlation`` (its own stamp; None: not within ``timeout_s``)."""
        while correlation not in self.sent and time.monotonic() - asked < timeout_s:
            await asyncio.sleep(0.0005)
        return self.sent.get(correlation)

    async def reply_at(self, correlation: bytes, asked: float,
                       timeout_s: float = 2.0) -> tuple[float, bool] | None:
        """When the reply to ``correlation`` arrived and whether it was ok (None: not within ``timeout_s``)."""
        while correlation not in self.replies and time.monotonic() - asked < timeout_s:
            await asyncio.sleep(0.0005)
        return self.replies.get(correlation)

    def close(self) -> None:
        """End the phone's process (it disconnects at the end of its input)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def storage_baseline(directory: Path, trials: int) -> list[float]:
    """The state store's own write time: both copies of a state written as a ``set`` saves them (write,
    fsync, rename, directory fsync, twice), on the same file system as the firmware's state."""
    from device.persist import StateStore, StoredState

    store = StateStore(directory)
    state = StoredState()
    latencies = []
    try:
        for n in range(trials):
            state.preferences.intensity = 2 + n % 2
            t0 = time.monotonic()
            store.save(state)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.01)
    finally:
        store.close()
    return latencies


async def _command_latency(plan: Plan, port: int, workdir: Path, competing: bool) -> dict[str, list[float]]:
    """MQTT 5 commands from a separate client: ``start`` -> relay on (``command``) and -> its reply on the
    response topic (``command_reply``); ``set`` -> its reply, which comes once the settings are written
    (``set_reply``). With ``competing``, a CPU-bound process shares the firmware's core."""
    suffix = "_competing" if competing else ""
    device_id = f"bench{'c' if competing else ''}"
    config = bench_config(workdir / f"state-mqtt{suffix}", enabled=True, port=port, host="127.0.0.1",
                          discovery=False)
    app = bench_app(config.model_copy(update={"device_id": device_id}))
    found: dict[str, list[float]] = {"command": [], "command_reply": [], "set_reply": []}
    prefix = f"{app.config.mqtt.topic_prefix}/{device_id}"

    async def runner(app: Any) -> None:
        await app.ready.wait()
        probe = AppProbe(app)
        phone = await asyncio.to_thread(Phone, port, f"bench-phone{suffix}",
                                        f"{prefix}/cmd/reply/{REPLY_TOPIC_NAME}")
        topic = f"{prefix}/cmd"
        try:
            await asyncio.sleep(1.0)  # the bridge connects and subscribes
            with cpu_competitor(competing):
                for n in range(plan.trials):
                    await probe.reset()
                    await asyncio.sleep(0.05 + random.uniform(0.0, 0.05))
                    correlation = f"start-{n}".encode()
                    asked = phone.send(topic, {"action": "start", "program": "relax", "intensity": 3},
                                       correlation)
                    on_at = await probe.relay_on_at(asked)
                    reply = await phone.reply_at(correlation, asked)
                    t0 = await phone.sent_at(correlation, asked)
                    if on_at is not None and t0 is not None:
                        found["command"].append(on_at - t0)
                    if reply is not None and reply[1] and t0 is not None:
                        found["command_reply"].append(reply[0] - t0)
                await probe.reset()
                for n in range(plan.trials):
                    await asyncio.sleep(0.05 + random.uniform(0.0, 0.05))
                    correlation = f"set-{n}".encode()
                    asked = phone.send(topic, {"action": "set", "intensity": 2 + n % 2}, correlation)
                    reply = await phone.reply_at(correlation, asked)
                    t0 = await phone.sent_at(correlation, asked)
                    if reply is not None and reply[1] and t0 is not None:
                        found["set_reply"].append(reply[0] - t0)
        finally:
            await asyncio.to_thread(phone.close)  # not on the loop: the deadman would see a stall
            app.stop_event.set()

    app.extra_tasks["bench"] = runner
    await app.run()
    return {f"{key}{suffix}": values for key, values in found.items()}


async def _flood_latency(plan: Plan, port: int, workdir: Path) -> dict[str, list[float]]:
    """After ``plan.flood_messages`` junk commands from another client (mosquitto_pub, its own process):
    the phone's ``start`` and ``stop``.

    ``stop_under_flood``: publish -> stop executed; ``stop_reply_under_flood``: -> its reply at the phone;
    ``broker_under_flood``: the same stop reaching a plain subscriber (mosquitto_sub, which gets the flood
    too): the broker's own latency in the same flood. ``command_under_flood``: start publish -> its reply
    (other commands may be rate-limited or dropped in a flood: ``answered`` / ``executed`` count them).
    """
    import threading

    config = bench_config(workdir / "state-flood", enabled=True, port=port, host="127.0.0.1",
                          discovery=False)
    app = bench_app(config.model_copy(update={"device_id": "benchflood"}))
    found: dict[str, list[float]] = {"stop_under_flood": [], "stop_reply_under_flood": [],
                                     "command_under_flood": [], "broker_under_flood": [],
                                     "command_under_flood_executed": []}
    topic = f"{app.config.mqtt.topic_prefix}/benchflood/cmd"
    # Built at run time, not as bytes literals: hypothesis draws byte strings from the code base's constants,
    # and a valid command among them would act in the fuzz test that feeds the device random bytes.
    mixed = [json.dumps({"action": "set", "intensity": 3}), "junk", json.dumps({"action": "start"}), "[]"]
    junk = "\n".join(mixed * (plan.flood_messages // 4)).encode() + b"\n"
    stopped_at: list[float] = []
    app.device.subscribe(lambda reason: stopped_at.append(time.monotonic()) if reason == "stop" else None)
    seen_by_plain = threading.Event()

    def flood() -> None:
        """Publish the flood from another process; returns once the broker has taken all of it (QoS 1)."""
        subprocess.run([shutil.which("mosquitto_pub") or "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port),
                        "-q", "1", "-t", topic, "-l"], input=junk, check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def watch(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"stop-bench" in line:
                seen_by_plain.set()

    async def runner(app: Any) -> None:
        await app.ready.wait()
        probe = AppProbe(app)
        phone = await asyncio.to_thread(_paho_client, port, "bench-phone-flood")
        plain = subprocess.Popen([shutil.which("mosquitto_sub") or "mosquitto_sub", "-h", "127.0.0.1",
                                  "-p", str(port), "-t", topic], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
        reader = threading.Thread(target=watch, args=(plain,), daemon=True)
        reader.start()
        replied, answered = threading.Event(), threading.Event()
        executed: list[bool] = []

        def on_reply(_c: Any, _u: Any, m: Any) -> None:
            if b'"stop-bench"' in m.payload:
                replied.set()
            elif b'"start-bench"' in m.payload:
                executed.append(json.loads(m.payload)["ok"])
                answered.set()

        phone.on_message = on_reply
        phone.subscribe(f"{topic}/reply", qos=0)
        stop = json.dumps({"action": "stop", "id": "stop-bench"}).encode()
        start = json.dumps({"action": "start", "program": "relax", "intensity": 3,
                            "id": "start-bench"}).encode()
        try:
            await asyncio.sleep(1.0)  # the bridge and the plain subscriber connect and subscribe
            for _ in range(plan.flood_trials):
                await probe.reset()
                await asyncio.to_thread(flood)
                answered.clear()
                t0 = time.monotonic()
                phone.publish(topic, start, qos=0)
                while not answered.is_set() and time.monotonic() - t0 < 10.0:
                    await asyncio.sleep(0.0005)
                if answered.is_set():
                    found["command_under_flood"].append(time.monotonic() - t0)
                if not probe.relay_pin.state:
                    await probe.start_session()  # not run in the flood: the stop trial needs a session
                await asyncio.sleep(2.0)  # the first flood drains
                await asyncio.to_thread(flood)
                replied.clear()
                seen_by_plain.clear()
                stopped_at.clear()
                t0 = time.monotonic()
                phone.publish(topic, stop, qos=0)
                times: dict[str, float] = {}
                while len(times) < 2 and time.monotonic() - t0 < 30.0:
                    if replied.is_set():
                        times.setdefault("stop_reply_under_flood", time.monotonic() - t0)
                    if seen_by_plain.is_set():
                        times.setdefault("broker_under_flood", time.monotonic() - t0)
                    await asyncio.sleep(0.0005)
                for key, value in times.items():
                    found[key].append(value)
                if stopped_at:
                    found["stop_under_flood"].append(stopped_at[0] - t0)
                await asyncio.sleep(2.0)  # the flood drains, the rate limiter refills
        finally:
            await asyncio.to_thread(phone.loop_stop)  # joins paho's thread: not on the loop (the deadman)
            phone.disconnect()
            plain.terminate()
            await asyncio.to_thread(plain.wait)
            app.stop_event.set()
        found["command_under_flood_executed"] = [1.0 if ok else 0.0 for ok in executed]

    app.extra_tasks["bench"] = runner
    await app.run()
    return found


def _proc_times(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _cpu_pct(pid: int, seconds: float) -> float:
    """The process's CPU time (user + system) over the next ``seconds``, in % of one core."""
    c0, w0 = _proc_times(pid), time.monotonic()
    time.sleep(seconds)
    return round(100 * (_proc_times(pid) - c0) / (time.monotonic() - w0), 2)


def footprint(plan: Plan, port: int | None, workdir: Path) -> dict[str, Any]:
    """Start-up time to ready (MQTT online), RSS and CPU idle and while running, of a real process; and the
    idle CPU again without the simulator's 10 Hz ``sim/plant`` topic, which a unit does not have."""
    import threading

    online = threading.Event()
    watcher = None
    if port is not None:
        watcher = _paho_client(port, "bench-watch")
        watcher.on_message = lambda _c, _u, m: online.set() if m.payload == b"online" else None
        watcher.subscribe("massager/+/availability")
        time.sleep(0.3)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPYCACHEPREFIX=str(workdir / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # An installed unit runs from bytecode (pip compiles it at install); a checkout under
    # PYTHONDONTWRITEBYTECODE compiles some 50 of the firmware's modules at every start (0.25-0.3 s here).
    subprocess.run([sys.executable, "-c", "import device.cli, device.app, device.mqtt, device.panel"],
                   env=env, check=True, timeout=120)
    log_file = (workdir / "footprint.log").open("wb")  # a file, not an unread pipe that could fill and block

    def start(device_id: str, *extra: str) -> tuple[subprocess.Popen[bytes], float | None]:
        args = [sys.executable, "-m", "device", "run", "--sim", "--state-dir",
                str(workdir / f"state-{device_id}"), "--device-id", device_id, "--log-level", "WARNING", *extra]
        if port is not None:
            args += ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)]
        online.clear()
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log_file, env=env)
        if watcher is None:
            time.sleep(2)
            return proc, None
        online.wait(20)
        return proc, round(time.monotonic() - t0, 3) if online.is_set() else None

    result: dict[str, Any] = {}
    try:
        proc, result["ready_s"] = start("benchfp")
        try:
            time.sleep(1.0)
            result["idle_cpu_pct_with_plant_feed"] = _cpu_pct(proc.pid, plan.idle_s)
            result["idle_rss_mb"] = round(_rss_mb(proc.pid), 1)
            if watcher is not None:
                watcher.publish("massager/benchfp/cmd", json.dumps({"action": "start", "program": "relax"}))
                time.sleep(0.5)
                result["running_cpu_pct"] = _cpu_pct(proc.pid, plan.running_s)
                result["running_rss_mb"] = round(_rss_mb(proc.pid), 1)
        finally:
            stop_process(proc, 15.0)
        result["exit_code"] = proc.returncode
        proc, _ready = start("benchfq", "--no-plant-feed")
        try:
            time.sleep(1.0)
            result["idle_cpu_pct"] = _cpu_pct(proc.pid, plan.idle_s)
        finally:
            stop_process(proc, 15.0)
        result["exit_code"] = result["exit_code"] or proc.returncode
    finally:
        if watcher is not None:
            watcher.loop_stop()
            watcher.disconnect()
        log_file.close()
    return result


def sim_speed(plan: Plan) -> dict[str, Any]:
    """Wall time of a session of each built-in program in virtual time: the production loop (``SimUnit``:
    the app's wiring, every safety check, the deadman on the virtual time line), nothing else."""
    import tempfile

    from device.harness import SimUnit
    from modes.library import load_library

    library, _problems = load_library(None)
    names = list(library.names())[: plan.programs] if plan.programs else list(library.names())
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        for name in names:
            unit = SimUnit(load_config(None, {"programs_dir": None, "state_dir": f"{tmp}/{name}"}))
            try:
                unit.start_up()
                timer = max(5, round(plan.sim_minutes))
                reply = unit.command(action="start", program=name, intensity=3, heat=True, timer_min=timer)
                if not reply.ok:
                    raise RuntimeError(f"bench: {name} did not start: {reply.error}")
                gc.collect()  # start each program from the same heap, not the garbage of earlier parts
                w0 = time.perf_counter()
                unit.run(plan.sim_minutes * 60)
                wall = time.perf_counter() - w0
                latched = unit.supervisor.latched
                out[name] = {
                    "sim_s": round(plan.sim_minutes * 60, 1),
                    "wall_s": round(wall, 3),
                    "speedup": round(plan.sim_minutes * 60 / wall, 1),
                    "fault": None if latched is None else str(latched.code),
                }
            finally:
                unit.close()
    return out


TARGETS = {
    "trip_temperature.p99": 60.0,
    "trip_temperature_competing.p99": 60.0,
    "trip_pressure.p99": 60.0,
    "deadman.p99": 600.0,
    "button.p99": 20.0,
    "button_competing.p99": 20.0,
    "loop_jitter.p99": 5.0,
    "loop_jitter_competing.p99": 5.0,
    "stop_under_flood.max": 1000.0,
    "stop_reply_under_flood.max": 1000.0,
    "footprint.ready_s": 1.0,
    "footprint.idle_rss_mb": 60.0,
    "footprint.running_rss_mb": 60.0,
    "footprint.idle_cpu_pct": 2.0,
    "footprint.running_cpu_pct": 5.0,
}
OVER_BROKER_MS = 10.0  # MQTT figures: p99 within the broker's own p99 + this
OVER_BROKER = ("command", "command_reply", "set_reply", "command_competing", "command_reply_competing",
               "set_reply_competing")
SIM_SPEED_MIN = 500.0
LATENCIES = ("trip_temperature", "trip_temperature_competing", "trip_pressure", "deadman", "button",
             "button_competing", "broker_baseline", "storage_baseline", "command", "command_reply", "set_reply",
             "command_competing", "command_reply_competing", "set_reply_competing", "broker_under_flood",
             "command_under_flood", "stop_under_flood", "stop_reply_under_flood", "loop_jitter",
             "loop_jitter_competing", "loop_jitter_floor")
LOWER_IS_WORSE = frozenset({"speedup"})  # across runs the worst of these is the lowest


def _codes_problem(figure: dict[str, Any], expected: str) -> str | None:
    """Why a fault trial series did not measure what it names (a wrong or missing code), else None."""
    codes = figure.get("codes", {})
    wrong = {code: n for code, n in codes.items() if code != expected}
    if wrong:
        return f"expected {expected} in every trial, got {json.dumps(wrong)}"
    if codes.get(expected, 0) < figure.get("trials", 0) or not figure.get("trials"):
        return f"{expected} latched in {codes.get(expected, 0)} of {figure.get('trials', 0)} trials"
    return None


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its measured value and whether it is met (fault trials: only with the right codes)."""
    verdicts: dict[str, dict[str, Any]] = {}
    for key, limit in TARGETS.items():
        section, field = key.split(".")
        if section.endswith("under_flood") and section not in results:
            continue  # mosquitto_pub / _sub not installed: reported as a note
        value = results.get(section, {}).get(field)
        verdicts[key] = {"value": value, "target": limit, "met": value is not None and value <= limit}
        expected = EXPECTED_CODES.get(section)
        if expected is not None:
            problem = _codes_problem(results.get(section, {}), expected)
            verdicts[key]["codes"] = results.get(section, {}).get("codes", {})
            if problem is not None:
                verdicts[key].update(met=False, why=problem)
    base = results.get("broker_baseline", {}).get("p99")
    storage = results.get("storage_baseline", {}).get("p99")
    for section in OVER_BROKER:
        p99 = results.get(section, {}).get("p99")
        if section not in results:
            continue
        # A set is answered once its settings are written: its reply includes the disk's own write time.
        disk = (storage or 0.0) if section.startswith("set_reply") else 0.0
        over = None if p99 is None or base is None else round(p99 - base - disk, 3)
        name = "p99_over_broker_and_storage" if section.startswith("set_reply") else "p99_over_broker"
        verdicts[f"{section}.{name}"] = {"value": over, "target": OVER_BROKER_MS,
                                                  "met": over is not None and over <= OVER_BROKER_MS}
    speeds = [v["speedup"] for v in results.get("sim_speed", {}).values()]
    if speeds:
        verdicts["sim_speed.min_speedup"] = {"value": min(speeds), "target": f">= {SIM_SPEED_MIN:g}",
                                             "met": min(speeds) >= SIM_SPEED_MIN}
    web = results.get("web")
    if web is not None:
        verdicts.update(_web_verdicts(web))
    return verdicts


def _web_verdicts(web: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The phone page's targets (device/bench_web.py), or the reason they were not measured."""
    from device.bench_web import TARGET_PAGE_BYTES, TARGET_TAP_OVER_BROKER_MS

    keys = {"web.tap.p99_over_broker": TARGET_TAP_OVER_BROKER_MS,
            "web.page.transferred_bytes": TARGET_PAGE_BYTES, "web.page.first_state_ms": "reported"}
    skipped = web.get("skipped")
    if skipped is not None:
        return {key: {"value": None, "target": target, "met": False, "skipped": skipped}
                for key, target in keys.items()}
    tap, base = web.get("tap", {}).get("p99"), web.get("broker_plain", {}).get("p99")
    over = None if tap is None or base is None else round(tap - base, 3)
    weight = web.get("page", {}).get("transferred_bytes")
    verdicts = {
        "web.tap.p99_over_broker": {"value": over, "target": TARGET_TAP_OVER_BROKER_MS,
                                    "met": over is not None and over <= TARGET_TAP_OVER_BROKER_MS},
        "web.page.transferred_bytes": {"value": weight, "target": TARGET_PAGE_BYTES,
                                       "met": weight is not None and weight < TARGET_PAGE_BYTES},
    }
    first = web.get("page", {}).get("first_state_ms")
    verdicts["web.page.first_state_ms"] = {"value": first, "target": "reported", "met": first is not None}
    return verdicts


def web_unavailable() -> str | None:
    """Why the phone page cannot be measured here (a missing tool), or None."""
    missing = [tool for tool in ("chromium", "chromedriver", "lighttpd", "mosquitto")
               if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (Python package)")
    if missing:
        return f"not installed: {', '.join(missing)} (scripts/bootstrap installs them)"
    return None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_bench(plan: Plan, progress: Callable[[str], None] = lambda _m: None, *,
              web: bool = True) -> dict[str, Any]:
    """Run every part of the benchmark once; returns one JSON-ready dict."""
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_avg_start": _load(),  # 1, 5, 15 minutes: other work on the machine
        },
        "firmware_version": __version__,
        "plan": plan.name,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="massager-bench-") as tmp:
        workdir = Path(tmp)
        progress("safety trips, buttons, deadman, loop jitter")
        results.update(asyncio.run(_in_process(plan, False, workdir)))
        progress("trips, buttons and loop jitter under a CPU-bound competitor on the same core")
        results.update(asyncio.run(_in_process(plan, True, workdir)))
        progress("the machine's own loop jitter: a bare asyncio loop with the passes' CPU time")
        busy_s = results["loop_jitter"].get("pass_cpu_ms", 0.0) / 1000
        results["loop_jitter_floor"] = asyncio.run(jitter_floor(plan.jitter_s, busy_s)).figure()
        broker = start_broker(workdir)
        try:
            if broker is not None:
                _proc, port = broker
                progress("MQTT command and reply latency and the broker's own latency")
                results["broker_baseline"] = summary(broker_baseline(port, plan.trials))
                results["storage_baseline"] = summary(storage_baseline(workdir / "state-storage", plan.trials))
                for competing in (False, True):
                    found = asyncio.run(_command_latency(plan, port, workdir, competing))
                    results.update({key: summary(values) for key, values in found.items()})
                if shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub"):
                    progress(f"start and stop after a flood of {plan.flood_messages} messages from another "
                             "client")
                    flooded = asyncio.run(_flood_latency(plan, port, workdir))
                    executed = flooded.pop("command_under_flood_executed")
                    results.update({key: summary(values) for key, values in flooded.items()})
                    results["command_under_flood"].update(
                        trials=plan.flood_trials, messages=plan.flood_messages, answered=len(executed),
                        executed=int(sum(executed)))
                else:
                    results["stop_under_flood_note"] = "mosquitto_pub / _sub not installed"
            else:
                results["command"] = {"n": 0, "note": "mosquitto not installed"}
            progress("footprint of a real firmware process")
            results["footprint"] = footprint(plan, broker[1] if broker else None, workdir)
        finally:
            if broker is not None:
                broker[0].terminate()
                broker[0].wait()
    progress("simulation speed")
    results["sim_speed"] = sim_speed(plan)
    if not web:
        results["web"] = {"skipped": NO_WEB}
    else:
        reason = web_unavailable()
        if reason is None:
            from device.bench_web import run_web_bench

            progress(f"the phone page: {plan.web_trials} taps, page weight, time to live state")
            results["web"] = run_web_bench(plan.web_trials)
        else:
            progress(f"the phone page: skipped, {reason}")
            results["web"] = {"skipped": reason}
    results["machine"]["load_avg_end"] = _load()
    results["targets"] = check_targets(results)
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results


def _across(values: list[Any], field: str) -> tuple[Any, Any]:
    """The median and the worst of one field over runs (None when no run has it)."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None, None
    worst = min(numbers) if field in LOWER_IS_WORSE else max(numbers)
    return round(statistics.median(numbers), 3), worst


def combine_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """N runs as one result: each figure's median and worst across runs; targets judged on both."""
    median: dict[str, Any] = {}
    worst: dict[str, Any] = {}

    def walk(parts: list[Any], med: dict[str, Any], bad: dict[str, Any]) -> None:
        keys = [k for part in parts if isinstance(part, dict) for k in part]
        for key in dict.fromkeys(keys):
            values = [part.get(key) for part in parts if isinstance(part, dict)]
            if any(isinstance(v, dict) for v in values) and key != "codes":
                med[key], bad[key] = {}, {}
                walk(values, med[key], bad[key])
            elif key == "n":  # samples add up over runs
                med[key] = bad[key] = sum(v for v in values if isinstance(v, int))
            elif key == "codes":  # fault codes add up over runs
                total: dict[str, int] = {}
                for codes in values:
                    for code, n in (codes or {}).items():
                        total[code] = total.get(code, 0) + n
                med[key] = bad[key] = total
            elif any(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                med[key], bad[key] = _across(values, key)
            else:
                med[key] = bad[key] = next((v for v in values if v is not None), None)

    figures = [{k: v for k, v in run.items() if k not in ("targets", "machine")} for run in runs]
    walk(figures, median, worst)
    for section in EXPECTED_CODES:  # the codes are summed over runs, so are the trials
        for side in (median, worst):
            if isinstance(side.get(section), dict):
                side[section]["trials"] = sum(run.get(section, {}).get("trials", 0) for run in runs)
    targets = check_targets(median)
    # The worst run of each target is judged on that run's own figures (a p99 over the broker's p99 of
    # the same run, not the worst p99 less the worst broker), and "met" in the worst run means every run.
    per_run = [check_targets(run) for run in runs]
    for key, verdict in targets.items():
        values = [t[key]["value"] for t in per_run if isinstance(t.get(key, {}).get("value"), int | float)]
        lower_is_worse = key.endswith("min_speedup")
        verdict["worst"] = (min if lower_is_worse else max)(values) if values else None
        verdict["met_worst"] = all(t.get(key, {}).get("met", False) for t in per_run)
    machine = dict(runs[0]["machine"])
    machine["load_avg_end"] = runs[-1]["machine"].get("load_avg_end")
    machine["load_avg_per_run"] = [[r["machine"].get("load_avg_start"), r["machine"].get("load_avg_end")]
                                   for r in runs]
    return {"machine": machine, "firmware_version": runs[0]["firmware_version"], "plan": runs[0]["plan"],
            "repeat": len(runs), "median": median, "worst": worst, "targets": targets,
            "duration_s": round(sum(r.get("duration_s", 0.0) for r in runs), 1), "runs": runs}


def _latency_line(key: str, s: dict[str, Any], w: dict[str, Any] | None) -> str:
    line = f"  {key:<28} n={s['n']:<5} p50 {s['p50']:8.2f} ms  p99 {s['p99']:8.2f} ms  max {s['max']:8.2f} ms"
    if w is not None:
        line += f"   worst run: p99 {w['p99']:8.2f} max {w['max']:8.2f}"
    if s.get("codes"):
        line += f"  codes {json.dumps(s['codes'])}"
    if "steal_ms" in s:
        line += f"  (pass CPU {s.get('pass_cpu_ms')} ms, stolen by the host {s['steal_ms']} ms)"
    return line


def render(results: dict[str, Any]) -> str:
    """A readable table of the figures against their targets (median and worst run with ``--repeat``)."""
    repeat = results.get("repeat", 1)
    figures = results["median"] if repeat > 1 else results
    worst = results["worst"] if repeat > 1 else None
    machine = results["machine"]
    lines = [f"massager bench ({results['plan']}{f', {repeat} runs: medians' if repeat > 1 else ''}) on "
             f"{machine['platform']}, {machine['cpus']} CPUs, Python {machine['python']}, load average "
             f"{machine.get('load_avg_start')} -> {machine.get('load_avg_end')}"]
    for key in LATENCIES:
        s = figures.get(key)
        if s and s.get("n"):
            lines.append(_latency_line(key, s, None if worst is None else worst.get(key)))
    lines.append(f"  footprint                    {json.dumps(figures.get('footprint', {}))}")
    for name, s in figures.get("sim_speed", {}).items():
        lines.append(f"  sim {name:<24} {s['sim_s']:.0f} s in {s['wall_s']:.2f} s = {s['speedup']:.0f}x")
    web = figures.get("web", {})
    if web.get("skipped"):
        lines.append(f"  phone page: skipped ({web['skipped']})")
    elif web:
        for key in ("broker_plain", "broker_ws", "command_plain", "tap"):
            s = web.get(key, {})
            if s.get("n"):
                lines.append(_latency_line(f"web {key}", s, None if worst is None else worst["web"].get(key)))
        page = web.get("page", {})
        lines.append(f"  web page                     {page.get('transferred_bytes')} bytes, first live state "
                     f"{page.get('first_state_ms')} ms (slow network "
                     f"{web.get('page_slow_network', {}).get('first_state_ms')} ms)")
    lines.append("targets:" if worst is None else "targets (median of the runs; worst run after it):")
    for key, v in results["targets"].items():
        mark = "SKIP" if v.get("skipped") else ("met " if v["met"] else "MISS")
        extra = f", worst {v['worst']} {'met' if v['met_worst'] else 'MISS'}" if "worst" in v else ""
        why = f"  ({v['why']})" if v.get("why") else (f"  ({v['skipped']})" if v.get("skipped") else "")
        lines.append(f"  {mark} {key:<36} {v['value']} (target {v['target']}{extra}){why}")
    lines.append(f"took {results['duration_s']} s")
    return "\n".join(lines)


def _progress(prefix: str, message: str) -> None:
    print(f"bench: {prefix}{message}", file=sys.stderr)


def bench_main(args: argparse.Namespace, config: Config) -> int:
    """``massager bench [--json] [--quick] [--repeat N] [--no-web]``."""
    del config  # the benchmark builds its own simulated configs
    plan = QUICK if args.quick else FULL
    repeat = getattr(args, "repeat", 1)
    with tempfile.TemporaryDirectory(prefix="massager-bench-log-") as logdir:
        # The firmware logs as in the product (INFO), into a file as the journal would take it; the trials
        # latch hundreds of faults on purpose, which the terminal need not show.
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        handler = logging.FileHandler(Path(logdir) / "firmware.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.handlers, root.level = [handler], logging.INFO
        try:
            runs = []
            for n in range(repeat):
                prefix = f"run {n + 1}/{repeat}: " if repeat > 1 else ""
                runs.append(run_bench(plan, progress=partial(_progress, prefix),
                                      web=not getattr(args, "no_web", False)))
        finally:
            root.handlers, root.level = saved
            handler.close()
    results = runs[0] if repeat == 1 else combine_runs(runs)
    print(json.dumps(results, indent=1) if args.json else render(results))
    return 0
