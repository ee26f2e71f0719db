"""Fuzzing the command path: random bytes and JSON never crash the device and never act when invalid."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.app import App
from device.commands import ACTIONS
from drivers.clock import VirtualClock
from tests.conftest import Broker
from tests.mqtt_support import BASE, mqtt_config, running_firmware, watching

SETTINGS = ("status", "program", "intensity", "heat", "timer_min", "skip_zones", "fault", "child_lock")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(
    st.none(), st.booleans(), st.integers(-100, 100), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from(["relax", "circulation", "nope", "foot", "calf"]),
    st.lists(st.sampled_from(["foot", "ankle", "calf", "knee"]), max_size=4),
)
command_like = st.fixed_dictionaries(
    {"action": st.sampled_from([*ACTIONS, "explode", "", "START"])},
    optional={
        "program": field_values, "intensity": field_values, "heat": field_values, "timer_min": field_values,
        "skip_zones": field_values, "id": field_values, "extra": field_values,
    },
)


def _settings(app: App) -> dict[str, Any]:
    state = app.device.state()
    return {k: state[k] for k in SETTINGS}


def _loads(app: App) -> dict[str, Any]:
    """What the mock pins drive, the heartbeat (toggled every pass) aside."""
    assert app.rig is not None
    return {k: v for k, v in app.rig.plant.outputs().items() if k != "heartbeat"}


class IdleDevice:
    """A simulated device on virtual time, stepped by hand (no broker, no event loop)."""

    def __init__(self, app: App, clock: VirtualClock) -> None:
        self.app = app
        self.clock = clock

    def step(self, passes: int = 1) -> None:
        """Control passes with the plant following."""
        assert self.app.rig is not None
        for _ in range(passes):
            self.app.controller.tick()
            self.app.rig.plant.step(0.05)
            self.clock.advance(0.05)

    def settle(self) -> None:
        """Back to idle after a command that acted."""
        self.app.device.handle_payload(b'{"action": "stop"}', source="fuzz")
        for _ in range(400):
            if self.app.device.state()["status"] == "idle":
                return
            self.step()
        raise AssertionError("the device did not return to idle")


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[IdleDevice]:
    """An idle simulated device after a few passes (sensors read, zones vented)."""
    clock = VirtualClock()
    app = App(mqtt_config(tmp_path, 1883), sim=True, clock=clock)
    device = IdleDevice(app, clock)
    try:
        device.step(10)
        yield device
    finally:
        app.hardware.safe_off()
        app.hardware.close()


def _check_refused(idle: IdleDevice, payload: bytes) -> None:
    """An invalid payload gets an error reply and changes nothing, before and after a control pass."""
    app = idle.app
    assert app.rig is not None
    before = _settings(app)
    outputs = _loads(app)
    reply = app.device.handle_payload(payload, source="fuzz")
    assert set(reply.as_dict()) == {"id", "ok", "error"}
    assert reply.ok is False, payload
    assert isinstance(reply.error, str) and reply.error
    assert _settings(app) == before, (payload, reply)
    idle.step()
    assert _settings(app) == before, (payload, reply)
    assert _loads(app) == outputs
    assert app.rig.plant.all_off()


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=256))
def test_mqtt_fuzz_random_bytes_never_crash_nor_act(idle: IdleDevice, payload: bytes) -> None:
    _check_refused(idle, payload)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=json_values)
def test_mqtt_fuzz_random_json_never_crash_nor_act(idle: IdleDevice, document: Any) -> None:
    _check_refused(idle, json.dumps(document).encode())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=command_like)
def test_mqtt_fuzz_command_shaped_json_acts_only_when_valid(idle: IdleDevice, document: dict[str, Any]) -> None:
    app = idle.app
    before = _settings(app)
    reply = app.device.handle_payload(json.dumps(document).encode(), source="fuzz")
    assert set(reply.as_dict()) == {"id", "ok", "error"}
    if not reply.ok:
        assert reply.error
        assert _settings(app) == before, (document, reply)
        return
    assert document["action"] in ACTIONS
    assert set(document) - {"action", "id"} <= {"program", "intensity", "heat", "timer_min", "skip_zones"}
    state = app.device.state()
    assert 1 <= state["intensity"] <= 5 and 5 <= state["timer_min"] <= 30
    if document["action"] == "start":
        assert state["status"] == "running"
    if state["status"] != "idle":
        idle.settle()


def _random_payload(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 1:
        return json.dumps(rng.choice([[], {}, 1, "x", None, [{"action": "start"}]])).encode()
    if kind == 2:
        bad = rng.choice([{"intensity": 9}, {"timer_min": 2}, {"heat": "on"}, {"program": "nope"},
                          {"bogus": 1}, {"skip_zones": ["knee"]}, {"intensity": True}])
        return json.dumps({"action": rng.choice(["start", "set"]), **bad}).encode()
    return json.dumps({"action": rng.choice(["jump", "START", "", 3])}).encode()


async def test_mqtt_fuzz_through_the_broker_every_message_gets_a_reply_nothing_acts(
    broker: Broker, tmp_path: Path
) -> None:
    rng = random.Random(6)
    payloads = [_random_payload(rng) for _ in range(300)]
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config, command_rate_per_s=1000.0, command_burst=1000) as fw, \
            watching(broker.port, f"{BASE}/cmd/reply") as w:
        rig = fw.app.rig
        assert rig is not None
        await asyncio.sleep(0.3)
        before = _settings(fw.app)
        for payload in payloads:
            await w.client.publish(f"{BASE}/cmd", payload, qos=1)
        async with asyncio.timeout(8):
            while len(w.on(f"{BASE}/cmd/reply")) < len(payloads):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        replies = [s.json() for s in w.on(f"{BASE}/cmd/reply")]
        assert len(replies) == len(payloads)
        assert not any(r["ok"] for r in replies), [r for r in replies if r["ok"]]
        assert all(r["error"] and "rate limited" not in r["error"] for r in replies)
        assert _settings(fw.app) == before
        assert rig.plant.all_off()
        assert fw.app.supervisor.latched is None
