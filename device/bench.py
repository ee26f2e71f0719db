"""``massager bench``: safety reaction, command and button latency, loop jitter, footprint, sim speed.

Everything runs on the real asyncio loop in real time, with the simulated plant and gpiozero's mock
pins standing in for the hardware: output times come from the mock pins' own change time stamps.
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
from pathlib import Path
from typing import Any

from device import __version__
from device.commands import CommandError, Start, Stop
from device.config import Config, load_config

log = logging.getLogger(__name__)

TRIP_TEMP_C = 36.05  # a tightened trip so that trials cycle fast: the code path is the same
BASE_TEMP_C = 35.95
CROSS_TEMP_C = 36.15  # one sample above the trip, slower than the sensor rate-of-change limit
PRESSURE_ZONE = "calf"
BLOCK_S = 0.65  # how long a deadman trial blocks the event loop


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
    flood_trials: int = 2  # stop after a flood of FLOOD_MESSAGES from another client


FLOOD_MESSAGES = 10_000
FULL = Plan(trials=200, deadman_trials=200, jitter_s=60.0, idle_s=20.0, running_s=60.0,
            sim_minutes=15.0, programs=None, flood_trials=20)
QUICK = Plan(trials=8, deadman_trials=3, jitter_s=1.0, idle_s=1.0, running_s=2.0,
             sim_minutes=1.0, programs=1, flood_trials=2)


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


async def _trip_trials(probe: AppProbe, kind: str, trials: int) -> tuple[list[float], dict[str, int]]:
    """Outputs-off latency after the plant crosses a trip, ``trials`` times."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    probe.set_temperature(BASE_TEMP_C)
    await asyncio.sleep(0.2)
    for _ in range(trials):
        await probe.reset()
        await probe.start_session()
        await asyncio.sleep(0.1 + random.uniform(0.0, 0.05))  # a random phase against the 20 Hz loop
        t0 = time.monotonic()
        if kind == "temperature":
            probe.set_temperature(CROSS_TEMP_C)
        else:
            trip = probe.app.config.safety.pressure_trip_mmhg[PRESSURE_ZONE]
            probe.plant.pressure[PRESSURE_ZONE] = trip + 5.0
        latency = await probe.wait_all_off(t0)
        if latency is not None:
            latencies.append(latency)
        fault = probe.app.supervisor.latched
        if fault is not None:
            codes[str(fault.code)] = codes.get(str(fault.code), 0) + 1
        probe.set_temperature(BASE_TEMP_C)
        probe.plant.pressure[PRESSURE_ZONE] = 0.0
        await asyncio.sleep(0.06)
    await probe.reset()
    return latencies, codes


def _block_loop(started: list[float]) -> None:
    """Block the event loop (as a hung call would), noting when the block began."""
    started.append(time.monotonic())
    time.sleep(BLOCK_S)


async def _deadman_trials(probe: AppProbe, trials: int) -> list[float]:
    """Outputs-off latency from the moment the event loop blocks."""
    latencies: list[float] = []
    for _ in range(trials):
        await probe.reset()
        await probe.start_session()
        await asyncio.sleep(0.1)
        started: list[float] = []
        asyncio.get_running_loop().call_soon(_block_loop, started)
        await asyncio.sleep(0)
        if started:
            latency = await probe.wait_all_off(started[0])
            if latency is not None:
                latencies.append(latency)
        await asyncio.sleep(0.1)
    await probe.reset()
    return latencies


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


async def _jitter(probe: AppProbe, seconds: float) -> list[float]:
    """Deviation of the control loop's period from 50 ms while a program runs."""
    controller = probe.app.controller
    await probe.reset()
    await probe.start_session()
    times: list[float] = []
    original = controller.on_pass

    def stamp(sample: Any) -> None:
        times.append(time.monotonic())
        original(sample)

    controller.on_pass = stamp
    await asyncio.sleep(seconds)
    controller.on_pass = original
    await probe.reset()
    period = controller.period_s
    return [abs((b - a) - period) for a, b in itertools.pairwise(times)]


async def _in_process(plan: Plan, competing: bool, workdir: Path) -> dict[str, Any]:
    """Trip, deadman, button latency and loop jitter on an in-process firmware."""
    from device.app import install_optional_tasks
    from device.sim import sim_app

    results: dict[str, Any] = {}
    app = sim_app(bench_config(workdir / ("state-c" if competing else "state")))
    install_optional_tasks(app, argparse.Namespace(dashboard=False))

    async def runner(app: Any) -> None:
        await app.ready.wait()
        probe = AppProbe(app)
        try:
            with cpu_competitor(competing):
                suffix = "_competing" if competing else ""
                lat, codes = await _trip_trials(probe, "temperature", plan.trials)
                results[f"trip_temperature{suffix}"] = {**summary(lat), "codes": codes}
                if not competing:
                    lat, codes = await _trip_trials(probe, "pressure", plan.trials)
                    results["trip_pressure"] = {**summary(lat), "codes": codes}
                    results["button"] = summary(await _button_trials(probe, plan.trials))
                    results["deadman"] = summary(await _deadman_trials(probe, plan.deadman_trials))
                results[f"loop_jitter{suffix}"] = summary(await _jitter(probe, plan.jitter_s))
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


async def _command_latency(plan: Plan, port: int, workdir: Path) -> list[float]:
    """From an MQTT publish of ``start`` by a separate client to the relay switching on."""
    from device.app import install_optional_tasks
    from device.sim import sim_app

    config = bench_config(workdir / "state-mqtt", enabled=True, port=port, host="127.0.0.1",
                          discovery=False)
    app = sim_app(config.model_copy(update={"device_id": "bench"}))
    install_optional_tasks(app, argparse.Namespace(dashboard=False))
    latencies: list[float] = []

    async def runner(app: Any) -> None:
        await app.ready.wait()
        probe = AppProbe(app)
        client = await asyncio.to_thread(_paho_client, port, "bench-phone")
        try:
            topic = f"{app.config.mqtt.topic_prefix}/bench/cmd"
            await asyncio.sleep(1.0)  # the bridge connects and subscribes
            start = json.dumps({"action": "start", "program": "relax", "intensity": 3}).encode()
            for _ in range(plan.trials):
                await probe.reset()
                await asyncio.sleep(0.05 + random.uniform(0.0, 0.05))
                t0 = time.monotonic()
                client.publish(topic, start, qos=0)
                on_at = await probe.relay_on_at(t0)
                if on_at is not None:
                    latencies.append(on_at - t0)
        finally:
            client.loop_stop()
            client.disconnect()
            app.stop_event.set()

    app.extra_tasks["bench"] = runner
    await app.run()
    return latencies


async def _flood_latency(plan: Plan, port: int, workdir: Path) -> dict[str, list[float]]:
    """After FLOOD_MESSAGES junk commands from another client (mosquitto_pub, its own process): the phone's
    ``start`` and ``stop``.

    ``stop_under_flood``: publish -> stop executed; ``stop_reply_under_flood``: -> its reply at the phone;
    ``broker_under_flood``: the same stop reaching a plain subscriber (mosquitto_sub, which gets the flood
    too): the broker's own latency in the same flood. ``command_under_flood``: start publish -> its reply
    (other commands may be rate-limited or dropped in a flood: ``answered`` / ``executed`` count them).
    """
    import threading

    from device.app import install_optional_tasks
    from device.sim import sim_app

    config = bench_config(workdir / "state-flood", enabled=True, port=port, host="127.0.0.1",
                          discovery=False)
    app = sim_app(config.model_copy(update={"device_id": "benchflood"}))
    install_optional_tasks(app, argparse.Namespace(dashboard=False))
    found: dict[str, list[float]] = {"stop_under_flood": [], "stop_reply_under_flood": [],
                                     "command_under_flood": [], "broker_under_flood": [],
                                     "command_under_flood_executed": []}
    topic = f"{app.config.mqtt.topic_prefix}/benchflood/cmd"
    junk = b"\n".join([b'{"action": "set", "intensity": 3}', b"junk", b'{"action": "start"}', b"[]"] *
                      (FLOOD_MESSAGES // 4)) + b"\n"
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
            phone.loop_stop()
            phone.disconnect()
            plain.terminate()
            plain.wait()
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


def footprint(plan: Plan, port: int | None, workdir: Path) -> dict[str, Any]:
    """Start-up time to ready (MQTT online), RSS and CPU idle and while running, of a real process."""
    import threading

    state = workdir / "state-footprint"
    args = [sys.executable, "-m", "device", "run", "--sim", "--state-dir", str(state),
            "--device-id", "benchfp", "--log-level", "WARNING"]
    online = threading.Event()
    watcher = None
    if port is not None:
        args += ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)]
        watcher = _paho_client(port, "bench-watch")
        watcher.on_message = lambda _c, _u, m: online.set() if m.payload == b"online" else None
        watcher.subscribe("massager/benchfp/availability")
        time.sleep(0.3)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    result: dict[str, Any] = {}
    try:
        if watcher is not None:
            online.wait(20)
            result["ready_s"] = round(time.monotonic() - t0, 3) if online.is_set() else None
        else:
            time.sleep(2)
        time.sleep(1.0)
        c0, w0 = _proc_times(proc.pid), time.monotonic()
        time.sleep(plan.idle_s)
        result["idle_cpu_pct"] = round(100 * (_proc_times(proc.pid) - c0) / (time.monotonic() - w0), 2)
        result["idle_rss_mb"] = round(_rss_mb(proc.pid), 1)
        if watcher is not None:
            watcher.publish("massager/benchfp/cmd", json.dumps({"action": "start", "program": "relax"}))
            time.sleep(0.5)
            c0, w0 = _proc_times(proc.pid), time.monotonic()
            time.sleep(plan.running_s)
            result["running_cpu_pct"] = round(
                100 * (_proc_times(proc.pid) - c0) / (time.monotonic() - w0), 2
            )
            result["running_rss_mb"] = round(_rss_mb(proc.pid), 1)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if watcher is not None:
            watcher.loop_stop()
            watcher.disconnect()
    result["exit_code"] = proc.returncode
    return result


def sim_speed(plan: Plan) -> dict[str, Any]:
    """Wall time of a session of each built-in program in virtual time, with every safety check."""
    from device.controller import Controller
    from device.safety import Supervisor
    from device.sim import build_sim
    from drivers.clock import VirtualClock
    from modes.library import load_library
    from modes.session import Session, SessionSettings

    config = load_config(None, {"programs_dir": None})
    library, _problems = load_library(None)
    names = list(library.names())[: plan.programs] if plan.programs else list(library.names())
    out: dict[str, Any] = {}
    for name in names:
        clock = VirtualClock()
        rig = build_sim(config, clock=clock.now)
        session = Session(library=library, settings=SessionSettings(
            pressure_cap_mmhg=dict(config.safety.pressure_cap_mmhg)))
        supervisor = Supervisor(config.safety, thermistors=list(config.sensors.thermistors))
        controller = Controller(hardware=rig.hardware, session=session, supervisor=supervisor,
                                clock=clock)
        timer = max(5, round(plan.sim_minutes)) if plan.sim_minutes >= 5 else 5
        session.start(clock.now(), program=name, intensity=3, heat=True, timer_min=timer)
        ticks = round(plan.sim_minutes * 60 / controller.period_s)
        gc.collect()  # start each program from the same heap, not the garbage of earlier parts
        w0 = time.perf_counter()
        for tick in range(ticks):
            controller.tick()
            rig.plant.step(controller.period_s)
            clock.advance(controller.period_s)
            if tick % 1000 == 999:
                rig.trim_pin_history()  # as the app does: mock pin histories are not firmware
        wall = time.perf_counter() - w0
        rig.close()
        out[name] = {
            "sim_s": round(plan.sim_minutes * 60, 1),
            "wall_s": round(wall, 3),
            "speedup": round(plan.sim_minutes * 60 / wall, 1),
            "fault": None if supervisor.latched is None else str(supervisor.latched.code),
        }
    return out


TARGETS = {
    "trip_temperature.p99": 60.0,
    "trip_temperature_competing.p99": 60.0,
    "trip_pressure.p99": 60.0,
    "deadman.p99": 600.0,
    "button.p99": 20.0,
    "loop_jitter.p99": 5.0,
    "loop_jitter_competing.p99": 5.0,
    "footprint.ready_s": 2.0,
    "footprint.idle_rss_mb": 60.0,
    "footprint.running_rss_mb": 60.0,
    "footprint.idle_cpu_pct": 2.0,
    "footprint.running_cpu_pct": 5.0,
}


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its measured value and whether it is met."""
    verdicts: dict[str, dict[str, Any]] = {}
    for key, limit in TARGETS.items():
        section, field = key.split(".")
        value = results.get(section, {}).get(field)
        verdicts[key] = {"value": value, "target": limit, "met": value is not None and value <= limit}
    cmd = results.get("command", {})
    base = results.get("broker_baseline", {})
    if cmd.get("p99") is not None and base.get("p99") is not None:
        verdicts["command.p99_over_broker"] = {
            "value": round(cmd["p99"] - base["p99"], 3), "target": 10.0,
            "met": cmd["p99"] - base["p99"] <= 10.0,
        }
    stop = results.get("stop_under_flood", {})
    if stop.get("n"):
        verdicts["stop_under_flood.max"] = {"value": stop["max"], "target": 1000.0,
                                            "met": stop["max"] <= 1000.0}
    speeds = [v["speedup"] for v in results.get("sim_speed", {}).values()]
    if speeds:
        verdicts["sim_speed.min_speedup"] = {"value": min(speeds), "target": ">= 500",
                                             "met": min(speeds) >= 500}
    return verdicts


def run_bench(plan: Plan, progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Run every part of the benchmark; returns one JSON-ready dict."""
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "firmware_version": __version__,
        "plan": "quick" if plan is QUICK else "full",
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="massager-bench-") as tmp:
        workdir = Path(tmp)
        progress("safety trips, buttons, deadman, loop jitter")
        results.update(asyncio.run(_in_process(plan, False, workdir)))
        progress("the same under a CPU-bound competitor on the same core")
        results.update(asyncio.run(_in_process(plan, True, workdir)))
        broker = start_broker(workdir)
        try:
            if broker is not None:
                _proc, port = broker
                progress("MQTT command latency and the broker's own latency")
                results["broker_baseline"] = summary(broker_baseline(port, plan.trials))
                results["command"] = summary(asyncio.run(_command_latency(plan, port, workdir)))
                if shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub"):
                    progress(f"start and stop after a flood of {FLOOD_MESSAGES} messages from another client")
                    flooded = asyncio.run(_flood_latency(plan, port, workdir))
                    executed = flooded.pop("command_under_flood_executed")
                    results.update({key: summary(values) for key, values in flooded.items()})
                    results["command_under_flood"].update(
                        trials=plan.flood_trials, answered=len(executed), executed=int(sum(executed)))
                else:
                    results["stop_under_flood"] = {"n": 0, "note": "mosquitto_pub / _sub not installed"}
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
    results["targets"] = check_targets(results)
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results


def render(results: dict[str, Any]) -> str:
    """A readable table of the figures against their targets."""
    lines = [f"massager bench ({results['plan']}) on {results['machine']['platform']}, "
             f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}"]
    for key in ("trip_temperature", "trip_temperature_competing", "trip_pressure", "deadman", "button",
                "broker_baseline", "command", "broker_under_flood", "command_under_flood",
                "stop_under_flood", "stop_reply_under_flood", "loop_jitter", "loop_jitter_competing"):
        s = results.get(key)
        if s and s.get("n"):
            lines.append(f"  {key:<28} n={s['n']:<4} p50 {s['p50']:8.2f} ms  p99 {s['p99']:8.2f} ms"
                         f"  max {s['max']:8.2f} ms")
    lines.append(f"  footprint                    {json.dumps(results.get('footprint', {}))}")
    for name, s in results.get("sim_speed", {}).items():
        lines.append(f"  sim {name:<24} {s['sim_s']:.0f} s in {s['wall_s']:.2f} s = {s['speedup']:.0f}x")
    lines.append("targets:")
    for key, v in results["targets"].items():
        lines.append(f"  {'met ' if v['met'] else 'MISS'} {key:<34} {v['value']} (target {v['target']})")
    lines.append(f"took {results['duration_s']} s")
    return "\n".join(lines)


def bench_main(args: argparse.Namespace, config: Config) -> int:
    """``massager bench [--json] [--quick]``."""
    del config  # the benchmark builds its own simulated configs
    logging.disable(logging.CRITICAL)  # the trials latch hundreds of faults on purpose
    plan = QUICK if args.quick else FULL
    results = run_bench(plan, progress=lambda m: print(f"bench: {m}", file=sys.stderr))
    print(json.dumps(results, indent=1) if args.json else render(results))
    return 0
