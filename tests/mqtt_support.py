"""Helpers for the MQTT tests: the firmware in-process on a real-time loop, and a watching MQTT client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.properties import Properties

from device.app import App
from device.config import Config, load_config
from device.mqtt import MqttBridge
from device.sim import sim_app
from drivers.clock import ScaledClock

DEVICE_ID = "t1"
BASE = f"massager/{DEVICE_ID}"
WAIT_S = 5.0  # every wait in these tests is bounded
SCALE = 4.0  # sim time runs this much faster than real time (the loop then ticks at 80 Hz real)


def mqtt_config(tmp_path: Path, port: int, **mqtt: Any) -> Config:
    """Defaults with state in tmp, no user programs, a fixed device id and the test broker."""
    overrides: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "programs_dir": None,
        "device_id": DEVICE_ID,
        "mqtt.host": "127.0.0.1",
        "mqtt.port": port,
    }
    overrides.update({f"mqtt.{k}": v for k, v in mqtt.items()})
    return load_config(None, overrides)


@dataclass
class Seen:
    """One message a watcher received."""

    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None
    at: float

    def json(self) -> Any:
        """The payload as JSON."""
        return json.loads(self.payload)


@dataclass
class Watcher:
    """An MQTT client that records every message on its subscriptions."""

    client: aiomqtt.Client
    seen: list[Seen] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def collect(self) -> None:
        """Record messages until cancelled."""
        loop = asyncio.get_running_loop()
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            self.seen.append(Seen(str(m.topic), payload, m.retain, m.properties, loop.time()))
            self._new.set()

    def on(self, topic: str) -> list[Seen]:
        """Messages seen on ``topic`` so far."""
        return [s for s in self.seen if s.topic == topic]

    async def wait_for(
        self, topic: str, match: Callable[[Seen], bool] = lambda _s: True, *, after: int = 0,
        timeout: float = WAIT_S,
    ) -> Seen:
        """The first message on ``topic`` (from index ``after`` of ``seen``) for which ``match`` is true."""
        async with asyncio.timeout(timeout):
            index = after
            while True:
                while index < len(self.seen):
                    s = self.seen[index]
                    index += 1
                    if s.topic == topic and match(s):
                        return s
                self._new.clear()
                await self._new.wait()

    async def wait_state(self, match: Callable[[dict[str, Any]], bool], *, after: int = 0,
                         timeout: float = WAIT_S) -> dict[str, Any]:
        """The first state payload for which ``match`` is true."""
        seen = await self.wait_for(f"{BASE}/state", lambda s: match(s.json()), after=after, timeout=timeout)
        result: dict[str, Any] = seen.json()
        return result

    async def command(self, payload: bytes | str | dict[str, Any], *, timeout: float = WAIT_S,
                      properties: Properties | None = None) -> dict[str, Any]:
        """Publish on ``cmd`` and return the reply (the next one on ``cmd/reply`` after publishing)."""
        mark = len(self.seen)
        raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        await self.client.publish(f"{BASE}/cmd", raw, qos=1, properties=properties)
        reply = await self.wait_for(f"{BASE}/cmd/reply", after=mark, timeout=timeout)
        result: dict[str, Any] = reply.json()
        return result


async def publish_elsewhere(port: int, topic: str, payloads: list[bytes], *, qos: int = 0,
                            one_message: bool = False) -> None:
    """Publish from another process (mosquitto_pub), as another client on another machine would: the
    test's own event loop (shared with the firmware) stays free. One line per message, or stdin as one."""
    for payload in payloads:
        assert one_message or b"\n" not in payload, "one message per line"
    binary = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    args = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", str(qos), "-V", "mqttv5"]
    proc = await asyncio.create_subprocess_exec(
        *args, "-s" if one_message else "-l", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    data = payloads[0] if one_message else b"".join(p + b"\n" for p in payloads)
    _out, err = await asyncio.wait_for(proc.communicate(data), 120)
    assert proc.returncode == 0 or one_message, err  # (a too-large message may end its connection)


@contextlib.asynccontextmanager
async def watching(port: int, *topics: str, **client_args: Any) -> AsyncIterator[Watcher]:
    """A connected watcher subscribed to ``topics`` (MQTT 5)."""
    client = aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, timeout=WAIT_S,
                            **client_args)
    async with client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        watcher = Watcher(client)
        task = asyncio.create_task(watcher.collect(), name="watcher")
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


@dataclass
class Running:
    """The firmware running in-process with its bridge."""

    app: App
    bridge: MqttBridge
    task: asyncio.Task[int]


@contextlib.asynccontextmanager
async def running_firmware(
    config: Config, *, scale: float = SCALE, panel: bool = False,
    bridge_type: type[MqttBridge] = MqttBridge, expect_connect: bool = True, **bridge_args: Any,
) -> AsyncIterator[Running]:
    """Run the App (sim) with the MQTT bridge; stop it gracefully afterwards and check it exits 0."""
    app = sim_app(config, clock=ScaledClock(scale=scale))
    holder: dict[str, MqttBridge] = {}

    async def mqtt(a: App) -> None:
        bridge = holder["bridge"] = bridge_type(a, **bridge_args)
        await bridge.run()

    if panel:
        from device.panel import panel_task

        app.extra_tasks["panel"] = panel_task
    app.extra_tasks["mqtt"] = mqtt
    task = asyncio.create_task(app.run(), name="app")
    try:
        # Ready means subscribed and announced: a command published earlier would find no subscriber.
        async with asyncio.timeout(3 * WAIT_S):
            while "bridge" not in holder or (expect_connect and holder["bridge"].announced == 0):
                if task.done():
                    raise RuntimeError(f"the app ended at start-up: {task.result()}")
                await asyncio.sleep(0.01)
        yield Running(app, holder["bridge"], task)
    finally:
        app.stop_event.set()
        try:
            async with asyncio.timeout(10):
                status = await task
        except TimeoutError:
            task.cancel()
            raise
        assert status == 0, "the firmware did not exit cleanly"
