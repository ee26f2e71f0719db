"""The firmware's side of updates: the health gate, the update command, and ``updates/latest``."""

from __future__ import annotations

import asyncio
import fcntl
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import __version__
from device.app import App
from device.mqtt import mqtt_task
from device.safety import FaultCode
from device.sim import sim_app
from device.update_agent import UpdateAgent, update_task
from device.update_bundle import announcement, build_manifest, this_architecture, this_python
from device.update_check import UpdatePaths, read_json, write_json
from drivers.clock import ScaledClock
from tests.mqtt_support import BASE, WAIT_S, mqtt_config, watching
from tests.update_support import make_wheel, trust

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def signed_announcement(tmp: Path, key: Ed25519PrivateKey, version: str, url: str | None) -> bytes:
    wheel = make_wheel(tmp / "ann", version)
    manifest = build_manifest([wheel], version=version, min_version="0.0.1",
                              architecture=this_architecture(), python=this_python())
    return json.dumps(announcement(manifest, key, url=url, bundle_size=12345)).encode()


def app_with_agent(tmp_path: Path, port: int = 1) -> tuple[App, UpdateAgent]:
    app = sim_app(mqtt_config(tmp_path, port), clock=ScaledClock(scale=4.0))
    agent = UpdateAgent(app, paths=UpdatePaths(tmp_path / "root"))
    app.device.updates = agent
    return app, agent


async def test_update_agent_marks_good_only_after_ready_pass_and_mqtt(tmp_path: Path) -> None:
    app, agent = app_with_agent(tmp_path)
    paths = agent.paths
    write_json(paths.pending, {"version": __version__, "previous": "0.0.9", "starts": 1})
    assert not agent.check_health()  # not ready yet
    await app.start_up()
    assert not agent.check_health()  # ready and passing, but MQTT is not online
    agent.on_mqtt_online()
    assert agent.check_health()
    assert read_json(paths.good)["version"] == __version__
    app.hardware.close()


async def test_update_agent_never_marks_another_version_good(tmp_path: Path) -> None:
    app, agent = app_with_agent(tmp_path)
    write_json(agent.paths.pending, {"version": "9.9.9", "previous": __version__, "starts": 1})
    await app.start_up()
    agent.on_mqtt_online()
    assert not agent.check_health()
    assert read_json(agent.paths.good) is None
    app.hardware.close()


async def test_update_command_refused_in_a_session_and_with_a_fault(tmp_path: Path) -> None:
    app, agent = app_with_agent(tmp_path)
    await app.start_up()
    device = app.device
    url = "https://updates.example/massager-9.9.9.bundle"
    reply = device.handle_payload(json.dumps({"action": "update"}).encode())
    assert not reply.ok and reply.error == "url: missing, and no update with a URL was announced"
    assert not device.handle_payload(json.dumps({"action": "update", "url": "ftp://x/y.bundle"}).encode()).ok
    assert device.handle_payload(b'{"action": "start"}').ok
    reply = device.handle_payload(json.dumps({"action": "update", "url": url}).encode())
    assert not reply.ok and "a session is running; stop it first" in str(reply.error)
    assert device.handle_payload(b'{"action": "stop"}').ok
    for _ in range(200):
        app.controller.tick()
        if str(app.session.status) == "idle":
            break
        await asyncio.sleep(0.01)
    app.supervisor.latch(app.supervisor.new_fault(FaultCode.OVER_TEMPERATURE, "pad_1 reads 46 °C", t=0.0))
    reply = device.handle_payload(json.dumps({"action": "update", "url": url}).encode())
    assert not reply.ok and "fault OVER_TEMPERATURE is latched" in str(reply.error)
    assert not agent.paths.request.exists()  # nothing was handed on
    app.hardware.close()


async def test_update_agent_ignores_unsigned_announcements(tmp_path: Path) -> None:
    app, agent = app_with_agent(tmp_path)
    key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trust(agent.paths, key)
    why = agent.on_announcement(signed_announcement(tmp_path, stranger, "9.9.9", "https://x/b"))
    assert why is not None and "not trusted" in why and agent.latest is None
    assert agent.on_announcement(b"{not json") is not None
    assert agent.on_announcement(signed_announcement(tmp_path, key, "9.9.9", "https://x/b")) is None
    assert agent.state()["latest"] == "9.9.9" and agent.newer_available()
    app.hardware.close()


@asynccontextmanager
async def firmware_with_updates(tmp_path: Path, port: int) -> AsyncIterator[tuple[App, UpdateAgent]]:
    app, agent = app_with_agent(tmp_path, port)
    app.extra_tasks["mqtt"] = mqtt_task
    app.extra_tasks["update"] = update_task
    task = asyncio.create_task(app.run(), name="app")
    try:
        yield app, agent
    finally:
        app.stop_event.set()
        async with asyncio.timeout(10):
            assert await task == 0


async def test_update_over_mqtt_announced_requested_and_gated(tmp_path: Path, broker: object) -> None:
    port = broker.port  # type: ignore[attr-defined]
    key = Ed25519PrivateKey.generate()
    paths = UpdatePaths(tmp_path / "root")
    trust(paths, key)
    write_json(paths.pending, {"version": __version__, "previous": "0.0.9", "starts": 1})
    url = "http://127.0.0.1:9/massager-9.9.9.bundle"
    # the announcement is retained: a unit that connects later still learns it
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "massager/updates/latest", "-r", "-s",
        stdin=asyncio.subprocess.PIPE)
    await proc.communicate(signed_announcement(tmp_path, key, "9.9.9", url))
    async with watching(port, f"{BASE}/state", f"{BASE}/cmd/reply") as w, \
            firmware_with_updates(tmp_path, port):
        state = await w.wait_state(lambda s: (s.get("firmware_update") or {}).get("latest") == "9.9.9",
                                   timeout=3 * WAIT_S)
        assert state["firmware_update"]["installed"] == __version__
        assert state["firmware_update"]["latest_url"] == url
        async with asyncio.timeout(WAIT_S):  # the health gate: READY, a safety pass, MQTT online
            while read_json(paths.good) is None:
                await asyncio.sleep(0.05)
        assert read_json(paths.good)["version"] == __version__
        reply = await w.command({"action": "update", "id": "u1"})
        assert reply == {"id": "u1", "ok": True, "error": None}
        assert read_json(paths.request)["url"] == url
        assert read_json(paths.request)["bundle_size"] == 12345
        await w.wait_state(lambda s: s["firmware_update"]["state"] == "requested")
        reply = await w.command({"action": "update"})
        assert reply["ok"] is False and "already in progress" in reply["error"]
        activity = read_json(paths.root / "run/massager/activity.json")
        assert activity == {"status": "idle", "fault": None}
        # the installer (holding its lock) reports progress; the state carries it
        with open(paths.state / "install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_json(paths.status, {"state": "pip", "version": "9.9.9", "progress": None, "message": None})
            paths.request.unlink()
            await w.wait_state(lambda s: s["firmware_update"]["state"] == "pip"
                               and s["firmware_update"]["in_progress"])
            reply = await w.command({"action": "update"})
            assert reply["ok"] is False and "already in progress" in reply["error"]
        # an installer killed mid-step leaves its last step behind: not progress, and no lock-out
        await w.wait_state(lambda s: s["firmware_update"]["state"] == "interrupted"
                           and not s["firmware_update"]["in_progress"])
        assert (await w.command({"action": "update"}))["ok"]
    assert not (paths.root / "run/massager/activity.json").exists()  # stopped: nothing is busy
