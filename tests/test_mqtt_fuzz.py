"""Fuzzing the command path against a contract oracle: every payload is executed exactly as docs/mqtt.md says
or refused with a reason, and a refused one changes no setting and no output; through a real mosquitto too,
with retained and oversize messages, MQTT 5 response topics, and a flood followed by stop."""

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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.app import App
from device.commands import ACTIONS
from device.harness import SimUnit
from modes.limits import SAMPLE_PERIOD_S
from tests.conftest import Broker
from tests.mqtt_support import BASE, mqtt_config, publish_elsewhere, running_firmware, watching
from tests.profiles import examples

ZONES = ("foot", "ankle", "calf")
FIELDS = {"start": {"program", "intensity", "heat", "heat_target_c", "timer_min"},
          "set": {"program", "intensity", "heat", "heat_target_c", "timer_min", "skip_zones", "child_lock"},
          "update": {"url"}}
SESSION_ACTIONS = tuple(a for a in ACTIONS if a != "update")
CHANGING = ("program", "intensity", "heat", "timer_min", "skip_zones", "child_lock")


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


Outcome = tuple[dict[str, Any] | None, set[str]]


def contract(before: dict[str, Any], document: Any, programs: set[str]) -> Outcome:
    """What docs/mqtt.md says ``document`` does from state ``before``, written independently of the firmware:
    (the expected settings and status, set()) when executed; (None, the fields a refusal may name) when not."""
    if not isinstance(document, dict):
        return None, set()
    action = document.get("action")
    if action not in ACTIONS:
        return None, {"action"}
    bad = {k for k in document if k not in FIELDS.get(action, set()) | {"action", "id"}}
    value = document.get("id")
    if value is not None and not (isinstance(value, str) and len(value) <= 128):
        bad.add("id")
    checks = {
        "program": lambda v: isinstance(v, str) and 1 <= len(v) <= 40,
        "intensity": lambda v: _int_in(v, 1, 5),
        "heat": lambda v: isinstance(v, bool),
        "child_lock": lambda v: isinstance(v, bool),
        "timer_min": lambda v: _int_in(v, 5, 30),
        "heat_target_c": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 35 <= v <= 42,
        "skip_zones": lambda v: isinstance(v, list) and len(v) <= 3 and all(z in ZONES for z in v),
        "url": lambda v: isinstance(v, str) and 8 <= len(v) <= 2048,
    }
    for name, ok in checks.items():
        if name in document and document[name] is not None and not ok(document[name]):
            bad.add(name)
    if bad:
        return None, bad
    status, latched = before["status"], before["fault"] is not None
    if latched and action not in ("stop", "reset_fault"):
        return None, {"action"}
    if action == "update":  # the simulation has no installer: refused, nothing changes
        return None, {"action"}
    allowed = {"start": ("idle",), "pause": ("running",), "resume": ("paused",),
               "set": ("idle", "running", "paused"), "reset_fault": ()}
    if action in allowed and status not in allowed[action]:
        return None, {"action"}
    if document.get("program") is not None and document["program"] not in programs:
        return None, {"program"}
    after = {k: before[k] for k in ("status", *CHANGING)}
    for name in CHANGING:
        if document.get(name) is not None:
            after[name] = sorted(set(document[name])) if name == "skip_zones" else document[name]
    after["skip_zones"] = sorted(after["skip_zones"])
    after["status"] = {"start": "running", "pause": "paused", "resume": "running"}.get(action, status)
    if action == "stop" and status in ("running", "paused"):
        after["status"] = "finishing|idle"
    return after, set()


def starved_loop(app: App, before: dict[str, Any]) -> None:
    """Skip, saying so, when this machine starved the real-time loop into a fault no command caused.

    The firmware runs in real time here: a loop held for longer than the deadman's timeout latches a
    fault (the software deadman, or the plant's external one dropping the pump's power). That is the
    device being safe on a starved machine, not a contract question; any other fault still fails.
    """
    latched = app.supervisor.latched
    gap = app.controller.stats.longest_gap_s
    if latched is not None and before["fault"] is None and gap > app.config.safety.loop_stale_s * 0.8:
        pytest.skip(f"this machine starved the loop ({gap:.2f} s between passes): {latched.code} latched")


def check_against_contract(before: dict[str, Any], after_state: dict[str, Any], document: Any,
                           reply: dict[str, Any], programs: set[str]) -> None:
    """The reply and the state after one command are what the contract says."""
    expected, fields = contract(before, document, programs)
    assert set(reply) == {"id", "ok", "error"}, reply
    action = document.get("action") if isinstance(document, dict) else None
    if (action in ("start", "resume") and not reply["ok"] and before.get("sensor_doubt")
            and "a sensor is implausible" in str(reply["error"])):
        expected, fields = None, {"action"}  # documented: refused while the state shows a sensor_doubt
    if expected is None:
        assert reply["ok"] is False, (document, reply)
        assert isinstance(reply["error"], str) and reply["error"] and reply["error"].isprintable()
        if fields:
            named = {f for f in fields if f in reply["error"] or json.dumps(f) in reply["error"]}
            assert named, (document, reply, fields)  # field names from outside appear quoted and escaped
        for key in CHANGING:
            assert after_state[key] == before[key], (key, document, reply)
        assert after_state["status"] in _on_its_own(before["status"]), (document, reply)
        return
    assert reply == {"id": document.get("id"), "ok": True, "error": None}, (document, reply)
    got = {k: after_state[k] for k in ("status", *CHANGING)}
    got["skip_zones"] = sorted(got["skip_zones"])
    if expected["status"] == "finishing|idle":
        expected["status"] = "finishing"
    assert got.pop("status") in _on_its_own(expected.pop("status")), document
    assert got == expected, (document, before)


def _on_its_own(status: str) -> tuple[str, ...]:
    """``status`` and where it may have gone by itself meanwhile (a real-time device: venting ends)."""
    return (status, "idle") if status == "finishing" else (status,)

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
        "skip_zones": field_values, "child_lock": field_values, "id": field_values, "extra": field_values,
    },
)


def _settings(app: App) -> dict[str, Any]:
    state = app.device.state()
    return {k: state[k] for k in SETTINGS}


def _loads(app: App) -> dict[str, Any]:
    """What the mock pins drive, the heartbeat (toggled every pass) aside."""
    assert app.rig is not None
    return {k: v for k, v in app.rig.plant.outputs().items() if k != "heartbeat"}


def _settle(unit: SimUnit) -> None:
    """Back to idle after a command that acted."""
    unit.command(action="stop")
    unit.run(20.0, until=lambda: unit.app.device.state()["status"] == "idle")
    assert unit.app.device.state()["status"] == "idle", "the device did not return to idle"


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[SimUnit]:
    """An idle simulated device after a few passes of the production loop (sensors read, zones vented)."""
    unit = SimUnit(mqtt_config(tmp_path, 1883))
    try:
        unit.run(10 * SAMPLE_PERIOD_S)
        yield unit
    finally:
        unit.close()


def _check_refused(idle: SimUnit, payload: bytes) -> None:
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
    idle.tick()
    assert _settings(app) == before, (payload, reply)
    assert _loads(app) == outputs
    assert app.rig.plant.all_off()


@pytest.mark.virtual_time
@settings(max_examples=examples(1000, 10_000), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=256))
def test_mqtt_fuzz_random_bytes_never_crash_nor_act(idle: SimUnit, payload: bytes) -> None:
    _check_refused(idle, payload)


@pytest.mark.virtual_time
@settings(max_examples=examples(750, 7_500), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=json_values)
def test_mqtt_fuzz_random_json_never_crash_nor_act(idle: SimUnit, document: Any) -> None:
    _check_refused(idle, json.dumps(document).encode())


good_values = {
    "program": st.sampled_from(["relax", "circulation", "percussion"]), "intensity": st.integers(1, 5),
    "heat": st.booleans(), "timer_min": st.integers(5, 30),
    "skip_zones": st.lists(st.sampled_from(ZONES), max_size=3), "child_lock": st.booleans(),
    "id": st.none() | st.text(max_size=8),
}
valid_leaning = st.fixed_dictionaries(
    {"action": st.sampled_from(ACTIONS)},
    optional={name: st.one_of(good, good, field_values) for name, good in good_values.items()},
)


@pytest.mark.virtual_time
@settings(max_examples=examples(300, 3_000), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=st.lists(st.one_of(valid_leaning, valid_leaning, command_like), min_size=1, max_size=4))
def test_mqtt_fuzz_command_sequences_follow_the_contract(
    idle: SimUnit, documents: list[dict[str, Any]]
) -> None:
    app = idle.app
    assert app.rig is not None
    programs = set(app.library.names())
    for document in documents:
        before = app.device.state()
        outputs = _loads(app)
        reply = app.device.handle_payload(json.dumps(document).encode(), source="fuzz").as_dict()
        after = app.device.state()
        check_against_contract(before, after, document, reply, programs)
        if not reply["ok"]:
            assert _loads(app) == outputs  # a refused command never changes an output
        idle.tick()
    if app.device.state()["status"] != "idle":
        _settle(idle)


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


def _random_document(rng: random.Random) -> Any:
    """A command-shaped document, valid or not, with a unique usable id most of the time."""
    # The session's actions as before update existed (the same seeded draws; update has its own tests).
    document: dict[str, Any] = {"action": rng.choice([*SESSION_ACTIONS, "explode", "START"])}
    choices = {
        "program": ["relax", "circulation", "nope", "", 3, None],
        "intensity": [1, 3, 5, 0, 6, 2.0, True, "3", None],
        "heat": [True, False, "yes", 1, None],
        "timer_min": [5, 15, 30, 4, 31, "10", None],
        "skip_zones": [[], ["calf"], ["foot", "foot"], ["knee"], "calf", None],
        "bogus": [1],
        "a\nCRITICAL forged": [1],
    }
    for name in rng.sample(sorted(choices), rng.randrange(3)):
        document[name] = rng.choice(choices[name])
    return document


async def test_mqtt_fuzz_through_the_broker_follows_the_contract(broker: Broker, tmp_path: Path) -> None:
    """Random commands (some retained, some with MQTT 5 response topics), oversize messages, and finally a
    flood from another client followed by stop, through a real mosquitto."""
    rng = random.Random(13)
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config, command_rate_per_s=1000.0, command_burst=1000) as fw, \
            watching(broker.port, f"{BASE}/cmd/reply/#") as w:
        rig = fw.app.rig
        assert rig is not None
        programs = set(fw.app.library.names())
        await asyncio.sleep(0.3)
        for n in range(150):
            kind = rng.random()
            before = fw.app.device.state()
            outputs = _loads(fw.app)
            if kind < 0.08:  # oversize: the broker never delivers it (MQTT 5 maximum packet size)
                await w.client.publish(f"{BASE}/cmd", b'{"action":"start","p":"' + b"x" * 20000 + b'"}', qos=1)
                continue
            document = _random_document(rng)
            document["id"] = f"f{n}"
            props, response_topic = None, None
            if rng.random() < 0.3:
                response_topic = rng.choice([f"{BASE}/cmd/reply/p{n}", f"{BASE}/state", f"other/{n}",
                                             f"{BASE}/cmd/reply/#", f"{BASE}/cmd/reply"])
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = response_topic
                props.CorrelationData = f"c{n}".encode()
            mark = len(w.seen)
            await w.client.publish(f"{BASE}/cmd", json.dumps(document).encode(), qos=1, properties=props,
                                   retain=rng.random() < 0.1)  # live: acts as sent, never replayed
            seen = await w.wait_for(f"{BASE}/cmd/reply", lambda s, i=f"f{n}": s.json()["id"] == i, after=mark)
            reply = seen.json()
            starved_loop(fw.app, before)
            check_against_contract(before, fw.app.device.state(), document, reply, programs)
            if not reply["ok"] and before["status"] in ("idle", "fault"):  # (a session moves its outputs)
                assert _loads(fw.app) == outputs
            await asyncio.sleep(0.05)
            extra = [s for s in w.seen[mark:] if s.topic != f"{BASE}/cmd/reply" and b'"f%d"' % n in s.payload]
            if response_topic is not None and response_topic.startswith(f"{BASE}/cmd/reply/p"):
                assert [s.topic for s in extra] == [response_topic], extra
                assert extra[0].properties is not None and extra[0].properties.CorrelationData == b"c%d" % n
            else:
                assert extra == [], (response_topic, extra)
            if response_topic == f"{BASE}/cmd/reply":
                assert len([s for s in w.seen[mark:] if b'"f%d"' % n in s.payload]) == 1
        assert fw.bridge.incoming is not None and fw.bridge.incoming.largest <= 8192
        if fw.app.device.state()["status"] not in ("running", "paused") and fw.app.supervisor.latched is None:
            assert (await w.command({"action": "start", "program": "relax"}))["ok"]
        junk = [_random_payload(rng).replace(b"\n", b" ") for _ in range(2000)]
        await publish_elsewhere(broker.port, f"{BASE}/cmd", [j for j in junk if j] or [b"junk"], qos=0)
        mark = len(w.seen)
        await w.client.publish(f"{BASE}/cmd", b'{"action": "stop", "id": "last"}', qos=1)
        stop = await w.wait_for(f"{BASE}/cmd/reply", lambda s: s.json()["id"] == "last", after=mark,
                                timeout=60)
        assert stop.json()["ok"]
        assert fw.app.device.state()["status"] in ("finishing", "idle", "fault")
