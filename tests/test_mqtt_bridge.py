"""The MQTT bridge against a real mosquitto: availability, state, commands and replies, discovery, sim."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.commands import MAX_PAYLOAD_BYTES
from device.mqtt import MqttBridge
from tests.conftest import Broker
from tests.mqtt_support import (
    BASE,
    DEVICE_ID,
    SCALE,
    Watcher,
    mqtt_config,
    publish_elsewhere,
    running_firmware,
    watching,
)

STATE_FIELDS = {"status", "program", "intensity", "heat", "timer_min", "remaining_s", "temperature_c",
                "pressure_mmhg", "outputs", "fault", "child_lock"}
ENTITIES = 38  # discovery entities (tests/test_discovery.py lists them)



async def every_config(w: Watcher, *, after: int = 0) -> None:
    """Wait until every discovery config has arrived (retained ones come in the broker's order)."""
    async with asyncio.timeout(10):
        while len({s.topic for s in w.seen[after:] if s.topic.endswith("/config")}) < ENTITIES:
            await asyncio.sleep(0.05)


async def test_mqtt_online_state_and_discovery_after_connect(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    topics = (f"{BASE}/#", f"homeassistant/+/{DEVICE_ID}/+/config")
    async with running_firmware(config), watching(broker.port, *topics) as w:
        online = await w.wait_for(f"{BASE}/availability")
        assert online.payload == b"online"
        state = (await w.wait_for(f"{BASE}/state")).json()
        assert state.keys() >= STATE_FIELDS
        assert state["status"] == "idle"
        assert set(state["pressure_mmhg"]) == {"foot", "ankle", "calf"}
        assert set(state["temperature_c"]) == {"pad_1", "pad_2"}
        await every_config(w)
        configs = [s for s in w.seen if s.topic.startswith("homeassistant/")]
        assert len({s.topic for s in configs}) == ENTITIES
        program = next(s.json() for s in configs if s.topic.endswith("/program/config"))
        assert "Relax" in program["options"]
        async with watching(broker.port, f"{BASE}/#", f"homeassistant/+/{DEVICE_ID}/+/config") as late:
            # a subscriber that comes later gets availability, state and every config from the broker
            await every_config(late)
            await late.wait_for(f"{BASE}/state")
            retained = [s for s in late.seen if s.retain]
            assert {f"{BASE}/availability", f"{BASE}/state"} <= {s.topic for s in retained}
            assert len({s.topic for s in retained if s.topic.startswith("homeassistant/")}) == ENTITIES


async def test_mqtt_every_command_gets_its_reply_and_shows_in_state(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online")
        reply = await w.command({"action": "start", "program": "relax", "intensity": 2, "heat": False,
                                 "timer_min": 10, "id": "a1"})
        assert reply == {"id": "a1", "ok": True, "error": None}
        mark = len(w.seen)
        state = await w.wait_state(lambda s: s["status"] == "running", after=mark - 1)
        assert (state["program"], state["intensity"], state["timer_min"]) == ("relax", 2, 10)
        reply = await w.command({"action": "set", "intensity": 4, "id": "b"})
        assert reply == {"id": "b", "ok": True, "error": None}
        await w.wait_state(lambda s: s["intensity"] == 4)
        assert (await w.command({"action": "pause"}))["ok"]
        await w.wait_state(lambda s: s["status"] == "paused")
        assert (await w.command({"action": "resume"}))["ok"]
        await w.wait_state(lambda s: s["status"] == "running")
        assert (await w.command({"action": "stop", "id": "s"})) == {"id": "s", "ok": True, "error": None}
        await w.wait_state(lambda s: s["status"] in ("finishing", "idle"))
        await w.wait_state(lambda s: s["status"] == "idle", timeout=8)
        reset = await w.command({"action": "reset_fault", "id": "r"})
        assert reset["id"] == "r" and not reset["ok"] and "no fault" in reset["error"]
        assert fw.app.rig is not None


BAD_PAYLOADS: list[tuple[bytes, str]] = [
    (b"start", "not valid JSON"),
    (b"\xff\xfe{", "not UTF-8"),
    (b'{"action":"stop","pad":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}', "limit is"),
    (b"[1, 2]", "expected a JSON object"),
    (b'"start"', "expected a JSON object"),
    (b"", "not valid JSON"),
    (b'{"program": "relax"}', "action"),
    (b'{"action": "explode"}', "unknown action"),
    (b'{"action": "stop", "force": true}', "force"),
    (b'{"action": "set", "heat": "yes"}', "heat"),
    (b'{"action": "set", "intensity": 9}', "intensity"),
    (b'{"action": "set", "intensity": 0}', "intensity"),
    (b'{"action": "set", "intensity": 2.5}', "intensity"),
    (b'{"action": "start", "timer_min": 31}', "timer_min"),
    (b'{"action": "start", "timer_min": "10"}', "timer_min"),
    (b'{"action": "start", "program": "no_such_program"}', "program"),
    (b'{"action": "set", "skip_zones": ["knee"]}', "skip_zones"),
    (b'{"action": "start", "id": 5}', "id"),
]


async def test_mqtt_each_kind_of_bad_input_is_refused_with_a_reason_and_changes_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        before = (await w.wait_for(f"{BASE}/state")).json()
        assert fw.app.rig is not None
        for payload, reason in BAD_PAYLOADS:
            reply = await w.command(payload)
            assert reply["ok"] is False, payload
            assert reason in reply["error"], (payload, reply)
        await asyncio.sleep(0.3)  # a few control passes: nothing may have started
        after = fw.app.device.state()
        for key in ("status", "program", "intensity", "heat", "timer_min", "fault"):
            assert after[key] == before[key], key
        assert fw.app.rig.plant.all_off()


async def test_mqtt_id_is_echoed_even_when_the_command_is_refused(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config), watching(broker.port, f"{BASE}/#") as w:
        reply = await w.command({"action": "set", "intensity": 7, "id": "phone-17"})
        assert reply["id"] == "phone-17" and not reply["ok"]


async def test_mqtt_sim_fault_shows_in_state_with_all_outputs_off_and_only_stop_and_reset_pass(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        rig = fw.app.rig
        assert rig is not None
        assert (await w.command({"action": "start", "program": "relax", "heat": True}))["ok"]
        await w.wait_state(lambda s: s["status"] == "running")
        mark = len(w.seen)
        await w.client.publish(f"{BASE}/sim/fault", b'{"fault": "i2c_dead", "id": "f1"}')
        injected = await w.wait_for(f"{BASE}/sim/fault/reply", after=mark)
        answer = injected.json()
        assert answer["ok"] and answer["id"] == "f1"
        state = await w.wait_state(lambda s: s["fault"] is not None, after=mark)
        assert state["status"] == "fault"
        assert state["fault"]["code"] == "SENSOR_BUS_FAULT", state
        assert rig.plant.all_off()  # from the mock pins, not from the firmware's report
        refused = await w.command({"action": "start"})
        assert not refused["ok"] and "SENSOR_BUS_FAULT" in refused["error"]
        assert not (await w.command({"action": "set", "intensity": 3}))["ok"]
        assert (await w.command({"action": "stop"}))["ok"]
        assert rig.plant.all_off()
        still = await w.command({"action": "reset_fault"})  # the bus is still dead
        assert not still["ok"] and "reset refused" in still["error"]
        await w.client.publish(f"{BASE}/sim/fault", b'{"fault": "clear"}')
        await w.wait_for(f"{BASE}/sim/fault/reply", lambda s: s.json()["ok"], after=w.seen.index(injected) + 1)
        async with asyncio.timeout(5):
            while not (await w.command({"action": "reset_fault"}))["ok"]:
                await asyncio.sleep(0.2)
        await w.wait_state(lambda s: s["fault"] is None and s["status"] == "idle")


async def test_mqtt_refusals_and_faults_are_events_and_the_last_problem(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        assert fw.app.rig is not None
        await w.wait_for(f"{BASE}/state")
        mark = len(w.seen)
        assert not (await w.command({"action": "set", "intensity": 9}))["ok"]
        event = (await w.wait_for(f"{BASE}/event", after=mark)).json()
        assert (event["event_type"], event["kind"], event["code"]) == ("refused", "refused", "set")
        assert "intensity" in event["message"] and event["summary"] == "Set refused"
        state = await w.wait_state(lambda s: s["last_problem"] is not None, after=mark)
        assert state["last_problem"] == {k: event[k] for k in ("kind", "code", "summary", "message", "at")}
        assert not (await w.wait_for(f"{BASE}/event", after=mark)).retain
        mark = len(w.seen)
        await w.client.publish(f"{BASE}/sim/fault", b'{"fault": "i2c_dead"}')
        event = (await w.wait_for(f"{BASE}/event", after=mark)).json()
        assert (event["event_type"], event["code"]) == ("fault", "SENSOR_BUS_FAULT")
        state = await w.wait_state(lambda s: s["usage"]["faults"] == 1, after=mark)
        assert state["usage"]["last_fault"] == "SENSOR_BUS_FAULT"
        mark = len(w.seen)
        assert not (await w.command({"action": "start"}))["ok"]
        event = (await w.wait_for(f"{BASE}/event", after=mark)).json()
        assert (event["event_type"], event["code"], event["summary"]) == ("refused", "start", "Start refused")
        assert "SENSOR_BUS_FAULT" in event["message"]
        assert len(w.on(f"{BASE}/event")) == 3  # each problem once


async def test_mqtt_child_lock_and_ends_at_through_set_and_start(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        assert (await w.command({"action": "set", "child_lock": True}))["ok"]
        await w.wait_state(lambda s: s["child_lock"] is True)
        assert fw.app.device.child_lock and fw.app.device.stored.preferences.child_lock
        assert (await w.command({"action": "start", "timer_min": 10}))["ok"]
        state = await w.wait_state(lambda s: s["status"] == "running" and s["ends_at"] is not None)
        ends = datetime.datetime.fromisoformat(state["ends_at"]).timestamp()
        assert abs(ends - (time.time() + state["remaining_s"])) < 3
        assert state["boot_at"].endswith("+00:00") and state["usage"]["sessions"] == 1
        assert (await w.command({"action": "set", "child_lock": False}))["ok"]
        await w.wait_state(lambda s: s["child_lock"] is False)
        assert (await w.command({"action": "stop"}))["ok"]


async def test_mqtt_sim_fault_bad_input_gets_an_error_reply(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config), watching(broker.port, f"{BASE}/#") as w:
        await w.wait_for(f"{BASE}/state")
        for payload, reason in ((b"nope", "JSON"), (b'{"fault": "gremlins"}', "fault"),
                                (b'{"fault": "loop_stall", "seconds": 99}', "seconds")):
            mark = len(w.seen)
            await w.client.publish(f"{BASE}/sim/fault", payload)
            answer = (await w.wait_for(f"{BASE}/sim/fault/reply", after=mark)).json()
            assert not answer["ok"] and reason in answer["error"]


async def test_mqtt_sim_plant_truth_at_10_hz_not_retained(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config), watching(broker.port, f"{BASE}/sim/plant") as w:
        first = await w.wait_for(f"{BASE}/sim/plant")
        await asyncio.sleep(2.0)
        plant = [s for s in w.on(f"{BASE}/sim/plant") if s.at >= first.at]
        rate = (len(plant) - 1) / (plant[-1].at - first.at)
        assert 7.0 <= rate <= 12.0, rate
        truth = plant[-1].json()
        assert {"t", "temperature_c", "pressure_mmhg", "outputs", "faults"} <= truth.keys()
        assert not any(s.retain for s in plant)


async def test_mqtt_state_is_periodic_while_running_and_coalesced(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        assert (await w.command({"action": "start", "program": "percussion"}))["ok"]
        start = time.monotonic()
        mark = len(w.seen)
        # a burst of changes from the device side (as buttons would make) is coalesced
        for n in range(30):
            fw.app.device.set_child_lock(n % 2 == 0)
            await asyncio.sleep(0.01)
        await asyncio.sleep(3.0)
        states = [s for s in w.seen[mark:] if s.topic == f"{BASE}/state"]
        elapsed = time.monotonic() - start
        assert len(states) >= 3  # at least every second while running
        assert len(states) <= 5.5 * elapsed + 2, (len(states), elapsed)
        gaps = [b.at - a.at for a, b in itertools.pairwise(states)]
        assert min(gaps) >= 0.15
        assert all(s.retain is False for s in states)  # a live subscriber sees them as new messages


async def test_mqtt_change_from_buttons_or_phone_shows_in_state_at_once(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config, panel=True) as fw, watching(broker.port, f"{BASE}/#") as w:
        rig = fw.app.rig
        assert rig is not None
        state = await w.wait_state(lambda _s: True)
        intensity = state["intensity"]
        await asyncio.sleep(0.5)
        mark = len(w.seen)
        pressed_at = asyncio.get_running_loop().time()
        pin = rig.factory.pin(config.pins.button_intensity)
        pin.drive_low()
        await asyncio.sleep(0.05)
        pin.drive_high()
        expected = intensity % 5 + 1
        seen = await w.wait_for(f"{BASE}/state", lambda s: s.json()["intensity"] == expected, after=mark)
        assert seen.at - pressed_at < 1.0  # not the 5 s periodic publish
        mark = len(w.seen)
        sent_at = asyncio.get_running_loop().time()
        assert (await w.command({"action": "set", "heat": not state["heat"]}))["ok"]
        seen = await w.wait_for(f"{BASE}/state", lambda s: s.json()["heat"] != state["heat"], after=mark)
        assert seen.at - sent_at < 1.0


async def test_mqtt5_reply_goes_to_the_response_topic_with_correlation_data(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config), watching(broker.port, f"{BASE}/#", "phone/42/#") as w:
        await w.wait_for(f"{BASE}/state")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{BASE}/cmd/reply/phone1"  # what docs/technician.md prescribes, the ACL grants
        props.CorrelationData = b"corr-1"
        await w.command({"action": "pause", "id": "p"}, properties=props)
        response = await w.wait_for(f"{BASE}/cmd/reply/phone1")
        assert json.loads(response.payload)["id"] == "p"
        assert response.properties is not None and response.properties.CorrelationData == b"corr-1"
        # a response topic outside cmd/reply/ (the device's own state, another client's topic) is not used
        for outside in (f"{BASE}/state", "phone/42/reply", f"{BASE}/cmd/reply/+", f"{BASE}/cmd/replyx"):
            props.ResponseTopic = outside
            mark = len(w.seen)
            assert (await w.command({"action": "stop", "id": "q"}, properties=props))["ok"]
            await asyncio.sleep(0.3)
            others = [s for s in w.seen[mark:] if s.topic != f"{BASE}/cmd/reply"]
            assert not any(b'"ok"' in s.payload for s in others), outside


async def test_mqtt5_response_topic_equal_to_cmd_reply_gets_one_reply(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config), watching(broker.port, f"{BASE}/cmd/reply/#") as w:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{BASE}/cmd/reply"
        props.CorrelationData = b"c-8"
        reply = await w.command({"action": "stop", "id": "one"}, properties=props)
        assert reply["id"] == "one"
        await asyncio.sleep(0.5)
        replies = [s for s in w.seen if b'"one"' in s.payload]
        assert len(replies) == 1, replies  # not one plain and one for the response topic
        assert replies[0].properties is not None and replies[0].properties.CorrelationData == b"c-8"


class _BusyBridge(MqttBridge):
    """A bridge that takes 1.5 s over one command, so the next one waits in its queue."""

    async def _command(self, client: Any, message: Any) -> None:
        if b"slow" in message.payload:
            await asyncio.sleep(1.5)
        await super()._command(client, message)


async def test_mqtt5_command_whose_expiry_passes_in_the_queue_is_not_executed(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config, bridge_type=_BusyBridge) as fw, watching(broker.port, f"{BASE}/#") as w:
        await w.wait_for(f"{BASE}/state")
        mark = len(w.seen)
        await w.client.publish(f"{BASE}/cmd", b'{"action": "stop", "id": "slow"}')
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 1
        await w.client.publish(f"{BASE}/cmd", b'{"action": "start", "id": "late"}', properties=props)
        props.MessageExpiryInterval = 60
        await w.client.publish(f"{BASE}/cmd", b'{"action": "set", "intensity": 5, "id": "fresh"}',
                               properties=props)
        replies = {}
        for _ in range(3):
            seen = await w.wait_for(f"{BASE}/cmd/reply", after=mark)
            mark = w.seen.index(seen) + 1
            replies[seen.json()["id"]] = seen.json()
        assert replies["slow"]["ok"]
        assert not replies["late"]["ok"] and "expired" in replies["late"]["error"]
        assert replies["fresh"]["ok"]  # within its expiry: executed
        assert fw.app.device.state()["status"] == "idle"  # the expired start never ran


async def test_mqtt_command_flood_is_rate_limited_without_starving_the_loop(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/cmd/reply") as w:
        await asyncio.sleep(0.3)
        stats = fw.app.controller.stats
        ticks0, t0 = stats.ticks, time.monotonic()
        for n in range(300):
            await w.client.publish(f"{BASE}/cmd", json.dumps({"action": "set", "intensity": n % 5 + 1,
                                                              "id": str(n)}).encode())
        async with asyncio.timeout(8):
            while len(w.on(f"{BASE}/cmd/reply")) < 300:
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        replies = [s.json() for s in w.on(f"{BASE}/cmd/reply")]
        assert sorted(int(r["id"]) for r in replies) == list(range(300))  # one reply each
        accepted = sum(r["ok"] for r in replies)
        limited = [r for r in replies if not r["ok"]]
        assert accepted <= 40 + 20 * elapsed + 1
        assert limited and all("rate limited" in r["error"] for r in limited)
        # the 20 Hz loop (of sim time) kept its pace through the flood
        expected_ticks = elapsed * SCALE * 20
        assert stats.ticks - ticks0 >= 0.8 * expected_ticks, (stats.ticks - ticks0, expected_ticks)


async def test_mqtt_home_assistant_online_republishes_discovery(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    topic = f"homeassistant/+/{DEVICE_ID}/+/config"
    async with running_firmware(config, discovery_min_gap_s=1.0), watching(broker.port, topic) as w:
        await every_config(w)
        await asyncio.sleep(0.3)
        mark = len(w.seen)
        await w.client.publish("homeassistant/status", b"online")
        again = await w.wait_for(f"homeassistant/select/{DEVICE_ID}/program/config", after=mark)
        assert again.json()["unique_id"] == f"massager_{DEVICE_ID}_program"
        await every_config(w, after=mark)
        assert len({s.topic for s in w.seen[mark:]}) == ENTITIES
        mark = len(w.seen)
        await w.client.publish("homeassistant/status", b"offline")
        await asyncio.sleep(0.5)
        assert len(w.seen) == mark  # only "online" triggers a re-publish


async def test_mqtt_discovery_off_publishes_none(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port, discovery=False)
    async with running_firmware(config), watching(broker.port, f"{BASE}/state", "homeassistant/#") as w:
        await w.wait_for(f"{BASE}/state")
        await w.client.publish("homeassistant/status", b"online")
        await asyncio.sleep(0.5)
        assert not [s for s in w.seen if s.topic.startswith("homeassistant/") and s.topic.endswith("/config")]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_mqtt_both_protocol_versions_work(broker: Broker, tmp_path: Path, protocol: str) -> None:
    config = mqtt_config(tmp_path, broker.port, protocol=protocol)
    async with running_firmware(config), watching(broker.port, f"{BASE}/#") as w:
        await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online")
        assert (await w.command({"action": "set", "intensity": 3, "id": "v"}))["ok"]


async def test_mqtt_clean_stop_publishes_offline_retained(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/availability") as w:
        await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online")
        fw.app.stop_event.set()
        async with asyncio.timeout(5):
            assert await fw.task == 0
        offline = await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"offline")
    async with watching(broker.port, f"{BASE}/availability") as late:  # retained for newcomers
        seen = await late.wait_for(f"{BASE}/availability")
        assert seen.payload == b"offline" and seen.retain
    assert offline is not None


async def test_mqtt_password_is_never_logged(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    config = mqtt_config(tmp_path, broker.port, username="u", password="s3cr3t-Pa55")
    async with running_firmware(config), watching(broker.port, f"{BASE}/availability") as w:
        await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online")
    assert "s3cr3t-Pa55" not in caplog.text
    assert "connected to 127.0.0.1" in caplog.text


async def test_mqtt_retained_command_is_ignored_with_a_reply_and_never_replays(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with watching(broker.port, f"{BASE}/cmd/reply") as w:
        await w.client.publish(f"{BASE}/cmd", b'{"action": "start", "id": "r1"}', qos=1, retain=True)
        for _restart in range(2):  # every connect (a restart, a reconnect) gets the retained message again
            mark = len(w.seen)
            async with running_firmware(config) as fw:
                reply = (await w.wait_for(f"{BASE}/cmd/reply", after=mark)).json()
                assert reply["id"] == "r1" and reply["ok"] is False
                assert "retained command ignored" in reply["error"]
                await asyncio.sleep(0.3)
                assert fw.app.device.state()["status"] == "idle"
                assert fw.app.rig is not None and fw.app.rig.plant.all_off()
        await w.client.publish(f"{BASE}/cmd", b"", qos=1, retain=True)  # clear it


async def test_mqtt_oversize_message_never_reaches_the_firmware(broker: Broker, tmp_path: Path) -> None:
    from device.mqtt import MAX_PACKET_BYTES

    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/cmd/reply") as w:
        assert (await w.command({"action": "start", "program": "relax"}))["ok"]
        ticks = fw.app.controller.stats.ticks
        mark = len(w.seen)
        huge = b'{"action":"stop","pad":"' + b"x" * 4_000_000 + b'"}'
        await publish_elsewhere(broker.port, f"{BASE}/cmd", [huge], qos=1, one_message=True)
        reply = await w.command({"action": "stop", "id": "after"}, timeout=20)
        assert reply == {"id": "after", "ok": True, "error": None}
        assert fw.bridge.incoming is not None and fw.bridge.incoming.largest <= MAX_PACKET_BYTES
        assert [s.json()["id"] for s in w.seen[mark:] if s.topic == f"{BASE}/cmd/reply"] == ["after"]
        assert fw.app.controller.stats.ticks > ticks and fw.app.supervisor.latched is None


@pytest.mark.parametrize("qos", [0, 1])
async def test_mqtt_stop_after_a_flood_of_10000_messages_is_executed_and_answered(
    broker: Broker, tmp_path: Path, qos: int
) -> None:
    """Another client floods ``cmd``; the phone's stop still runs (never rate-limited, never dropped)."""
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/cmd/reply") as phone:
        assert (await phone.command({"action": "start", "program": "relax"}))["ok"]
        junk = [b'{"action": "set", "intensity": 3}', b"junk", b'{"action": "start"}', b"[]"] * 2500
        await publish_elsewhere(broker.port, f"{BASE}/cmd", junk, qos=qos)  # 10,000 from another client
        stops: list[str] = []  # the session's status right after each stop ran
        session = fw.app.session
        fw.app.device.subscribe(lambda reason: stops.append(str(session.status)) if reason == "stop" else None)
        mark = len(phone.seen)
        await phone.client.publish(f"{BASE}/cmd", b'{"action": "stop", "id": "stop-1"}', qos=1)
        reply = await phone.wait_for(f"{BASE}/cmd/reply", lambda s: s.json()["id"] == "stop-1",
                                     after=mark, timeout=60)
        assert reply.json() == {"id": "stop-1", "ok": True, "error": None}
        # Stopped (the flood's own queued "start"s may begin a new session afterwards: the flooder may
        # send start). On a machine starved of CPU the deadman may have latched CONTROL_LOOP_STALL before
        # the stop arrived: then the session was already off, and no other fault is acceptable.
        latched = fw.app.supervisor.latched
        assert stops[:1] in (["finishing"], ["idle"]) or (
            latched is not None and latched.code == "CONTROL_LOOP_STALL"), (stops, latched)


async def test_mqtt_pause_and_stop_are_never_rate_limited(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config, command_rate_per_s=1.0, command_burst=1) as fw, \
            watching(broker.port, f"{BASE}/cmd/reply") as w:
        assert (await w.command({"action": "start", "program": "relax"}))["ok"]
        limited = await w.command({"action": "set", "intensity": 4})
        assert not limited["ok"] and "rate limited" in limited["error"]
        assert (await w.command({"action": "pause", "id": "p"}))["ok"]
        assert fw.app.device.state()["status"] == "paused"
        assert (await w.command({"action": "stop", "id": "s"}))["ok"]
        assert fw.app.device.state()["status"] in ("finishing", "idle")


async def test_mqtt_home_assistant_online_burst_republishes_discovery_at_most_once_per_gap(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    topic = f"homeassistant/+/{DEVICE_ID}/+/config"
    async with running_firmware(config, discovery_min_gap_s=2.0) as fw, \
            watching(broker.port, topic, f"{BASE}/cmd/reply") as w:
        await every_config(w)
        mark = len(w.seen)
        for _ in range(300):
            await w.client.publish("homeassistant/status", b"online")
        reply = await w.command({"action": "stop", "id": "s"})
        assert reply["ok"]
        await asyncio.sleep(3.0)
        configs = [s for s in w.seen[mark:] if s.topic.startswith("homeassistant/")]
        assert len(configs) <= 2 * ENTITIES, len(configs)  # 300 "online": at most one round now, one later
        assert fw.bridge.discovery_rounds <= 3


async def test_mqtt_field_name_with_a_newline_cannot_forge_a_log_line(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    config = mqtt_config(tmp_path, broker.port)
    forged = "x\nCRITICAL device.safety: fault latched: OVER_TEMPERATURE\r\x1b[2K\u2028"
    async with running_firmware(config), watching(broker.port, f"{BASE}/cmd/reply") as w:
        reply = await w.command(json.dumps({"action": "stop", forged: 1, "id": "inj"}).encode())
        value = await w.command(json.dumps({"action": "set", "program": forged}).encode())
    assert not reply["ok"] and "unknown field" in reply["error"]
    for error in (reply["error"], value["error"]):
        assert error.isprintable(), error
    for record in caplog.records:
        assert "\n" not in record.getMessage() and "\x1b" not in record.getMessage(), record.getMessage()


class _FullDisk:
    """A file layer whose disk is full: every state write fails with ENOSPC."""

    def __getattr__(self, name: str) -> Any:
        from device.persist import FileLayer

        return getattr(FileLayer(), name)

    def write_atomic(self, path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")


async def test_mqtt_set_that_cannot_be_saved_is_refused_changes_nothing_and_state_says_why(
    broker: Broker, tmp_path: Path
) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#") as w:
        before = fw.app.device.state()
        fw.app.store.files = _FullDisk()  # type: ignore[assignment]
        reply = await w.command({"action": "set", "intensity": 5 if before["intensity"] != 5 else 1, "id": "s"})
        assert reply["ok"] is False and "could not be saved" in reply["error"], reply
        state = await w.wait_state(lambda s: s["storage_error"] is not None)
        assert "No space left" in state["storage_error"]
        assert state["intensity"] == before["intensity"]
        assert fw.app.device.stored.preferences.intensity == before["intensity"]
        assert (await w.command({"action": "stop"}))["ok"]  # stopping never depends on storage


class _SlowCard:
    """A file layer that holds every state write until the test lets it go (a slow or stuck SD card)."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        from device.persist import FileLayer

        return getattr(FileLayer(), name)

    def write_atomic(self, path: Path, data: bytes) -> None:
        from device.persist import atomic_write

        assert self.release.wait(30)
        atomic_write(path, data)


async def test_mqtt_stop_runs_while_a_set_waits_for_a_slow_sd_card(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/cmd/reply") as w:
        assert (await w.command({"action": "start", "program": "relax"}))["ok"]
        card = _SlowCard()
        fw.app.store.files = card  # type: ignore[assignment]
        mark = len(w.seen)
        await w.client.publish(f"{BASE}/cmd", b'{"action": "set", "intensity": 4, "id": "set"}', qos=1)
        await asyncio.sleep(0.3)
        stop = await w.command({"action": "stop", "id": "stop"})  # while the set's write hangs
        assert stop == {"id": "stop", "ok": True, "error": None}
        assert fw.app.device.state()["status"] in ("finishing", "idle")
        assert not any(s.json()["id"] == "set" for s in w.seen[mark:])  # not answered before it is kept
        card.release.set()
        done = await w.wait_for(f"{BASE}/cmd/reply", lambda s: s.json()["id"] == "set", after=mark)
        assert done.json() == {"id": "set", "ok": True, "error": None}
