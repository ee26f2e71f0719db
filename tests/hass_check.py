"""A real Home Assistant core against ``massager run --sim`` through mosquitto (run by scripts/hass-check).

Runs with the Home Assistant venv's python (aiohttp comes with Home Assistant); the firmware runs from the
project's own venv. Onboards Home Assistant through its REST API, adds the MQTT integration through a
config flow, then checks what a user would see and do: every discovered entity with its class, unit,
category and icon, the device page, each control acting on the simulated plant (read from ``sim/plant``,
never from the firmware's own report), refusals and faults reaching Home Assistant, availability.
Prints one line per check and ends with "N passed, M failed"; exit status 1 when any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

DEVICE_ID = "hass1"
BASE = f"massager/{DEVICE_ID}"
DEVICE_NAME = "Check massager"
START_TIMEOUT_S = 240.0  # Home Assistant's first start on a busy machine
WAIT_S = 20.0


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    """Wait until ``port`` accepts connections, or fail when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f} s")


class Results:
    """Each check's outcome, printed as it comes."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        """Record one check."""
        if ok:
            self.passed += 1
            print(f"ok    {name}", flush=True)
        else:
            self.failed.append(name)
            print(f"FAIL  {name}: {detail}", flush=True)
        return ok


class Plant:
    """The plant's truth from ``sim/plant`` (mosquitto_sub in the background), latest message first."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latest: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe and keep reading."""
        self._proc = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-t", f"{BASE}/sim/plant",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        self._task = asyncio.create_task(self._read(), name="plant")

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self.latest = json.loads(line)
                self.history.append(self.latest)
                del self.history[:-600]

    async def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S) -> bool:
        """Whether the plant reaches ``match`` within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.latest and match(self.latest):
                return True
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        """Stop reading."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def moving(plant: dict[str, Any]) -> bool:
    """Rollers turning or the pump running (plant truth)."""
    out = plant.get("outputs", {})
    return bool(out.get("foot_rollers") or out.get("calf_rollers") or out.get("pump"))


def all_off(plant: dict[str, Any]) -> bool:
    """Every actuator off (plant truth)."""
    out = plant.get("outputs", {})
    return not any(out.get(k) for k in ("foot_rollers", "calf_rollers", "pump", "heater"))


class Hass:
    """Home Assistant's REST and websocket API with the onboarded owner's token."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.token = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._id = 0

    @property
    def headers(self) -> dict[str, str]:
        """The bearer token header."""
        return {"Authorization": f"Bearer {self.token}"}

    async def onboard(self) -> None:
        """Create the owner through onboarding and exchange its auth code for a token."""
        client_id = f"{self.url}/"
        async with self.session.post(f"{self.url}/api/onboarding/users", json={
            "client_id": client_id, "name": "Check", "username": "check", "password": "check-password-1",
            "language": "en"}) as r:
            r.raise_for_status()
            code = (await r.json())["auth_code"]
        async with self.session.post(f"{self.url}/auth/token", data={
                "grant_type": "authorization_code", "code": code, "client_id": client_id}) as r:
            r.raise_for_status()
            self.token = (await r.json())["access_token"]

    async def post(self, path: str, data: dict[str, Any]) -> Any:
        """POST JSON, return the JSON answer."""
        async with self.session.post(f"{self.url}{path}", json=data, headers=self.headers) as r:
            if r.status >= 400:
                raise RuntimeError(f"POST {path}: {r.status} {await r.text()}")
            return await r.json()

    async def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state by entity id."""
        async with self.session.get(f"{self.url}/api/states", headers=self.headers) as r:
            r.raise_for_status()
            return {s["entity_id"]: s for s in await r.json()}

    async def state(self, entity_id: str) -> dict[str, Any]:
        """One entity's state (``{"state": "missing"}`` when Home Assistant has none)."""
        async with self.session.get(f"{self.url}/api/states/{entity_id}", headers=self.headers) as r:
            if r.status == 404:
                return {"state": "missing", "attributes": {}}
            r.raise_for_status()
            result: dict[str, Any] = await r.json()
            return result

    async def wait_state(self, entity_id: str, match: Callable[[dict[str, Any]], bool],
                         timeout: float = WAIT_S) -> tuple[bool, dict[str, Any]]:
        """Whether the entity's state reaches ``match`` within ``timeout``; the last state seen."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = await self.state(entity_id)
            if match(state):
                return True, state
            await asyncio.sleep(0.2)
        return False, state

    async def call(self, domain: str, service: str, entity_id: str, **data: Any) -> None:
        """Call a service on one entity."""
        await self.post(f"/api/services/{domain}/{service}", {"entity_id": entity_id, **data})

    async def ws(self, message: dict[str, Any]) -> Any:
        """One websocket command and its result."""
        if self._ws is None:
            self._ws = await self.session.ws_connect(f"{self.url}/api/websocket")
            await self._ws.receive_json()  # auth_required
            await self._ws.send_json({"type": "auth", "access_token": self.token})
            answer = await self._ws.receive_json()
            if answer.get("type") != "auth_ok":
                raise RuntimeError(f"websocket auth failed: {answer}")
        self._id += 1
        await self._ws.send_json({"id": self._id, **message})
        while True:
            answer = await self._ws.receive_json()
            if answer.get("id") == self._id and answer.get("type") == "result":
                if not answer.get("success"):
                    raise RuntimeError(f"{message['type']}: {answer.get('error')}")
                return answer["result"]

    async def close(self) -> None:
        """Close the websocket."""
        if self._ws is not None:
            await self._ws.close()


def retained_configs(port: int) -> dict[str, dict[str, Any]]:
    """The device's retained discovery configs on the broker, by ``<component>.<object id>``."""
    proc = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", f"homeassistant/+/{DEVICE_ID}/+/config",
         "-v", "--retained-only", "-W", "3"], capture_output=True, text=True, check=False)
    configs = {}
    for line in proc.stdout.splitlines():
        topic, _, payload = line.partition(" ")
        _, component, _, object_id, _ = topic.split("/")
        configs[f"{component}.{object_id}"] = json.loads(payload)
    return configs


def is_iso(text: Any) -> bool:
    """Whether ``text`` is an ISO 8601 time with an offset."""
    try:
        return datetime.datetime.fromisoformat(str(text)).tzinfo is not None
    except ValueError:
        return False


async def check_entities(hass: Hass, port: int, r: Results) -> dict[str, dict[str, Any]]:
    """Every retained config became an entity with the class, unit, category and icon it asks for."""
    configs = retained_configs(port)
    r.check("the device published its discovery configs", len(configs) >= 30, len(configs))
    expected = {f"{key.split('.')[0]}.{c['object_id']}": c for key, c in configs.items()}
    registry: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entries = await hass.ws({"type": "config/entity_registry/list"})
        registry = {e["entity_id"]: e for e in entries if e.get("platform") == "mqtt"}
        if expected.keys() <= registry.keys():
            break
        await asyncio.sleep(1)
    missing = sorted(expected.keys() - registry.keys())
    r.check(f"all {len(expected)} entities are in Home Assistant's registry", not missing, missing)
    states = await hass.states()
    for entity_id, config in sorted(expected.items()):
        entry, state = registry.get(entity_id), states.get(entity_id)
        if entry is None or state is None:
            continue
        attrs = state["attributes"]
        problems = []
        if entry["unique_id"] != config["unique_id"]:
            problems.append(f"unique_id {entry['unique_id']}")
        if entry.get("entity_category") != config.get("entity_category"):
            problems.append(f"category {entry.get('entity_category')} != {config.get('entity_category')}")
        for key in ("device_class", "unit_of_measurement", "icon", "state_class"):
            if config.get(key) is not None and attrs.get(key) != config[key]:
                problems.append(f"{key} {attrs.get(key)!r} != {config[key]!r}")
        if attrs.get("friendly_name") != f"{DEVICE_NAME} {config['name']}":
            problems.append(f"friendly_name {attrs.get('friendly_name')!r}")
        select = entity_id.startswith("select.")
        if select and attrs.get("options") != config["options"]:
            problems.append(f"options {attrs.get('options')}")
        r.check(f"{entity_id}: class, unit, category, icon and name", not problems, "; ".join(problems))
    devices = await hass.ws({"type": "config/device_registry/list"})
    device = next((d for d in devices if ["mqtt", f"massager_{DEVICE_ID}"] in d["identifiers"]), None)
    want = {"name": DEVICE_NAME, "manufacturer": "Massager firmware project", "hw_version": "rev C",
            "model": "Shiatsu foot-and-calf massager", "configuration_url": "http://massager-check.local/",
            "serial_number": "CHECK-0001"}
    got = {k: (device or {}).get(k) for k in want}
    r.check("the device page: name, manufacturer, model, versions, serial, link", got == want, got)
    r.check("the device page: suggested area became its area", bool(device and device.get("area_id")),
            device and device.get("area_id"))
    r.check("the device page: firmware version", bool(device and device.get("sw_version")), device)
    return expected


async def check_controls(hass: Hass, plant: Plant, r: Results) -> None:
    """Each control acts on the device, and the plant shows it."""
    e = f"massager_{DEVICE_ID}"
    await hass.call("select", "select_option", f"select.{e}_program", option="Circulation")
    ok, st = await hass.wait_state(f"select.{e}_program", lambda s: s["state"] == "Circulation")
    r.check("program select sets the program", ok, st.get("state"))
    for name, value in (("intensity", 4), ("timer", 10), ("heat_target", 41.5)):
        await hass.call("number", "set_value", f"number.{e}_{name}", value=value)
        ok, st = await hass.wait_state(f"number.{e}_{name}", lambda s, v=value: _float(s["state"]) == v)
        r.check(f"{name} number sets {value}", ok, st.get("state"))
    await hass.call("select", "select_option", f"select.{e}_skip_zones", option="Calf")
    ok, st = await hass.wait_state(f"select.{e}_skip_zones", lambda s: s["state"] == "Calf")
    r.check("skipped zones select sets the calf skipped", ok, st.get("state"))
    for turn, want in (("turn_on", "on"), ("turn_off", "off")):
        await hass.call("switch", turn, f"switch.{e}_child_lock")
        ok, st = await hass.wait_state(f"switch.{e}_child_lock", lambda s, w=want: s["state"] == w)
        r.check(f"child lock switch {want}", ok, st.get("state"))
    await hass.call("switch", "turn_on", f"switch.{e}_heat")
    ok, st = await hass.wait_state(f"switch.{e}_heat", lambda s: s["state"] == "on")
    r.check("heat switch on", ok, st.get("state"))
    mark = len(plant.history)
    await hass.call("switch", "turn_on", f"switch.{e}_massage")
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "Running")
    r.check("massage switch starts a session (status Running)", ok, st.get("state"))
    r.check("the plant's rollers or pump move", await plant.wait(moving), plant.latest.get("outputs"))
    heating = await plant.wait(lambda p: (p.get("outputs", {}).get("heater") or 0) > 0)
    r.check("the plant's heater is driven", heating, plant.latest.get("outputs"))
    ok, st = await hass.wait_state(f"binary_sensor.{e}_heating", lambda s: s["state"] == "on")
    r.check("Heating shows the heater's output", ok, st.get("state"))
    ok, st = await hass.wait_state(f"sensor.{e}_phase", lambda s: s["state"] in ("Warm-up", "Work"))
    r.check("phase shows the program's phase", ok, st.get("state"))
    ok, st = await hass.wait_state(f"sensor.{e}_ends_at", lambda s: is_iso(s["state"]))
    r.check("ends at is a timestamp while running", ok, st.get("state"))
    ends = datetime.datetime.fromisoformat(st["state"]).timestamp() if ok else 0.0
    remaining = _float((await hass.state(f"sensor.{e}_remaining"))["state"]) or 0.0
    r.check("ends at = now + remaining time", abs(ends - time.time() - remaining) < 5, (ends, remaining))
    ok, st = await hass.wait_state(f"sensor.{e}_remaining", lambda s: _float(s["state"]) is not None)
    r.check("remaining time counts down", ok, st.get("state"))
    ok, st = await hass.wait_state(f"switch.{e}_massage", lambda s: s["state"] == "on")
    r.check("massage switch is on while running", ok, st.get("state"))
    await asyncio.sleep(3)
    calf = [p["outputs"].get("valve_calf") for p in plant.history[mark:] if "outputs" in p]
    feet = [p["outputs"].get("valve_foot") for p in plant.history[mark:] if "outputs" in p]
    r.check("a skipped calf zone's valve never opens (plant)", calf and not any(calf), calf[-5:])
    r.check("the plant saw the session's messages", len(feet) > 10, len(feet))
    await hass.call("button", "press", f"button.{e}_pause")
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "Paused")
    r.check("pause button pauses", ok, st.get("state"))
    r.check("paused: the plant's rollers and pump stop",
            await plant.wait(lambda p: not moving(p), timeout=5), plant.latest.get("outputs"))
    # The rollers coast after a pause: their current is "implausible at rest" for a moment, and a resume
    # meanwhile is refused (Home Assistant shows why). A user waits for Sensor implausible to clear.
    ok, st = await hass.wait_state(f"binary_sensor.{e}_sensor_doubt", lambda s: s["state"] == "off")
    r.check("paused: Sensor implausible clears once the rollers stand still", ok, st)
    await hass.call("button", "press", f"button.{e}_resume")
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "Running")
    r.check("resume button resumes", ok, st.get("state"))
    r.check("resumed: the plant moves again", await plant.wait(moving), plant.latest.get("outputs"))
    await hass.call("button", "press", f"button.{e}_stop")
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] in ("Finishing", "Idle"))
    r.check("stop button stops", ok, st.get("state"))
    r.check("stopped: everything off in the plant", await plant.wait(all_off), plant.latest.get("outputs"))
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "Idle", timeout=30)
    r.check("back to Idle after venting", ok, st.get("state"))
    ok, st = await hass.wait_state(f"sensor.{e}_ends_at", lambda s: s["state"] == "unavailable")
    r.check("ends at is unavailable outside a session", ok, st.get("state"))
    await hass.call("switch", "turn_off", f"switch.{e}_heat")
    await hass.call("button", "press", f"button.{e}_start")
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "Running")
    r.check("start button starts", ok, st.get("state"))
    await hass.call("switch", "turn_off", f"switch.{e}_massage")
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] in ("Finishing", "Idle"))
    r.check("massage switch off stops", ok, st.get("state"))
    r.check("massage off: everything off in the plant", await plant.wait(all_off), plant.latest.get("outputs"))
    await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "Idle", timeout=30)


async def check_problems(hass: Hass, port: int, plant: Plant, r: Results) -> None:
    """Refusals and faults reach Home Assistant: event entity, last problem, fault sensor, counters."""
    e = f"massager_{DEVICE_ID}"
    before = (await hass.state(f"event.{e}_problem"))["state"]
    await hass.call("button", "press", f"button.{e}_resume")  # idle: refused
    ok, st = await hass.wait_state(f"event.{e}_problem", lambda s: s["state"] != before
                                   and s["attributes"].get("event_type") == "refused")
    r.check("a refused command fires the Problem event (refused)", ok, st)
    ok, st = await hass.wait_state(f"sensor.{e}_last_problem", lambda s: s["state"] == "Resume refused")
    r.check("Last problem says Resume refused, with the reason", ok and "message" in st["attributes"], st)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", f"{BASE}/sim/fault",
                    "-m", '{"fault": "i2c_dead"}'], check=True)
    ok, st = await hass.wait_state(f"binary_sensor.{e}_fault", lambda s: s["state"] == "on")
    attrs = st.get("attributes", {})
    r.check("a fault turns the Fault problem sensor on", ok, st.get("state"))
    r.check("the fault's code and an ISO 8601 since are its attributes",
            attrs.get("code") == "SENSOR_BUS_FAULT" and is_iso(attrs.get("since")), attrs)
    ok, st = await hass.wait_state(f"event.{e}_problem", lambda s: s["attributes"].get("event_type") == "fault")
    fired = ok and st["attributes"].get("code") == "SENSOR_BUS_FAULT"
    r.check("the fault fires the Problem event (fault)", fired, st)
    ok, st = await hass.wait_state(f"sensor.{e}_last_fault", lambda s: s["state"] == "Sensor bus fault")
    r.check("Last fault reads as words", ok, st.get("state"))
    ok, st = await hass.wait_state(f"sensor.{e}_fault_count", lambda s: (_float(s["state"]) or 0) >= 1)
    r.check("the fault count went up", ok, st.get("state"))
    ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "Fault")
    r.check("status is Fault", ok, st.get("state"))
    r.check("faulted: everything off in the plant", await plant.wait(all_off), plant.latest.get("outputs"))
    await hass.call("switch", "turn_on", f"switch.{e}_massage")
    ok, st = await hass.wait_state(f"sensor.{e}_last_problem", lambda s: s["state"] == "Start refused")
    r.check("a start while the fault is latched is refused, and Home Assistant shows it",
            ok and "SENSOR_BUS_FAULT" in str(st["attributes"].get("message")), st)
    ok, st = await hass.wait_state(f"switch.{e}_massage", lambda s: s["state"] == "off")
    r.check("the massage switch falls back to off", ok, st.get("state"))
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", f"{BASE}/sim/fault",
                    "-m", '{"fault": "clear"}'], check=True)
    cleared = False
    deadline = time.monotonic() + 30
    while not cleared and time.monotonic() < deadline:
        await hass.call("button", "press", f"button.{e}_reset_fault")
        cleared, _ = await hass.wait_state(f"binary_sensor.{e}_fault", lambda s: s["state"] == "off", timeout=2)
    r.check("reset fault button clears it once the cause is gone", cleared, "still latched")


async def check_diagnostics(hass: Hass, r: Results) -> None:
    """The diagnostic entities carry values."""
    e = f"massager_{DEVICE_ID}"
    for entity_id, match in (
        (f"sensor.{e}_last_boot", is_iso),
        (f"sensor.{e}_sessions", lambda v: (_float(v) or 0) >= 2),
        (f"sensor.{e}_run_hours", lambda v: _float(v) is not None),
        (f"sensor.{e}_firmware", lambda v: v not in ("unknown", "unavailable", "missing")),
        (f"sensor.{e}_temperature_pad_1", lambda v: _float(v) is not None),
        (f"sensor.{e}_pressure_foot", lambda v: _float(v) is not None),
        (f"binary_sensor.{e}_connection", lambda v: v == "on"),
        (f"binary_sensor.{e}_heat_target_unreachable", lambda v: v == "off"),
        (f"binary_sensor.{e}_sensor_doubt", lambda v: v == "off"),
        (f"binary_sensor.{e}_storage", lambda v: v == "off"),
    ):
        ok, st = await hass.wait_state(entity_id, lambda s, m=match: m(s["state"]), timeout=10)
        r.check(f"{entity_id} = {st.get('state')}", ok, st.get("state"))


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def write_configs(work: Path, mqtt_port: int, http_port: int) -> tuple[Path, Path]:
    """The firmware's config and Home Assistant's config directory."""
    (work / "programs").mkdir()
    firmware = work / "massager.toml"
    firmware.write_text(f"""device_id = "{DEVICE_ID}"
state_dir = "{work / 'state'}"
programs_dir = "{work / 'programs'}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[device]
name = "{DEVICE_NAME}"
hw_version = "rev C"
serial_number = "CHECK-0001"
suggested_area = "Living room"
configuration_url = "http://massager-check.local/"
""")
    ha = work / "ha"
    ha.mkdir()
    (ha / "configuration.yaml").write_text(f"""homeassistant:
  name: Check
  latitude: 52.0
  longitude: 4.0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
http:
  server_host: 127.0.0.1
  server_port: {http_port}
api:
config:
onboarding:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
""")
    return firmware, ha


async def run(args: argparse.Namespace) -> int:
    """Start everything, check, stop everything."""
    r = Results()
    work = Path(tempfile.mkdtemp(prefix="hass-check-"))
    mqtt_port, http_port = free_port(), free_port()
    firmware_conf, ha_dir = write_configs(work, mqtt_port, http_port)
    (work / "mosquitto.conf").write_text(
        ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=(work / log_name).open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    print(f"hass-check: work dir {work}", flush=True)
    plant = Plant(mqtt_port)
    started = time.monotonic()
    try:
        broker = spawn([args.mosquitto, "-c", str(work / "mosquitto.conf")], "mosquitto.log")
        wait_port(mqtt_port, broker, 10, "mosquitto")
        massager = spawn([args.massager, "run", "--sim", "--config", str(firmware_conf)], "massager.log")
        hass_proc = spawn([args.hass, "-c", str(ha_dir), "--log-file", str(work / "home-assistant.log")],
                          "hass-stdout.log")
        wait_port(http_port, hass_proc, START_TIMEOUT_S, "Home Assistant")
        print(f"hass-check: Home Assistant up after {time.monotonic() - started:.0f} s", flush=True)
        await plant.start()
        async with aiohttp.ClientSession() as session:
            hass = Hass(session, f"http://127.0.0.1:{http_port}")
            for _ in range(100):  # http listens before onboarding is ready
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{hass.url}/api/onboarding") as answer:
                        if answer.status == 200:
                            break
                await asyncio.sleep(0.5)
            await hass.onboard()
            r.check("onboarding through the REST API", bool(hass.token))
            flow = await hass.post("/api/config/config_entries/flow", {"handler": "mqtt"})
            if flow.get("step_id") == "broker":
                flow = await hass.post(f"/api/config/config_entries/flow/{flow['flow_id']}",
                                       {"broker": "127.0.0.1", "port": mqtt_port})
            created = flow.get("type") == "create_entry"
            r.check("the MQTT integration is set up through its config flow", created, flow)
            await check_entities(hass, mqtt_port, r)
            steps: list[Callable[[], Awaitable[None]]] = [
                lambda: check_controls(hass, plant, r),
                lambda: check_problems(hass, mqtt_port, plant, r),
                lambda: check_diagnostics(hass, r),
            ]
            for step in steps:
                await step()
            massager.send_signal(signal.SIGTERM)
            massager.wait(timeout=20)
            e = f"massager_{DEVICE_ID}"
            ok, st = await hass.wait_state(f"sensor.{e}_status", lambda s: s["state"] == "unavailable")
            r.check("the firmware stopped: its entities are unavailable", ok, st.get("state"))
            ok, st = await hass.wait_state(f"binary_sensor.{e}_connection", lambda s: s["state"] == "off")
            r.check("the firmware stopped: Connection is off (not unavailable)", ok, st.get("state"))
            await hass.close()
        log_text = (work / "home-assistant.log").read_text(errors="replace")
        complaints = [line for line in log_text.splitlines()
                      if (" ERROR " in line or " WARNING " in line)
                      and any(w in line.lower() for w in ("mqtt", "massager", "template", "sensor", "entity"))]
        r.check("Home Assistant's log has no error or warning about the device", not complaints,
                "\n      " + "\n      ".join(complaints[:20]))
    finally:
        await plant.stop()
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if not args.keep and not r.failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"hass-check: logs kept in {work}", flush=True)
    print(f"hass-check: {time.monotonic() - started:.0f} s", flush=True)
    print(f"{r.passed} passed, {len(r.failed)} failed", flush=True)
    return 1 if r.failed else 0


def main() -> int:
    """Parse the arguments and run the check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--massager", required=True, help="the firmware's massager command")
    parser.add_argument("--hass", required=True, help="Home Assistant's hass command")
    parser.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) even when all passed")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
