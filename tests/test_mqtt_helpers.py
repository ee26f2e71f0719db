"""The MQTT bridge's pure parts: token bucket, backoff, message expiry, auth refusals, topics."""

from __future__ import annotations

import itertools

import pytest
from aiomqtt import Message
from aiomqtt.exceptions import MqttCodeError, MqttConnectError, MqttError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device import sim
from device.discovery import DeviceTopics
from device.mqtt import (
    URGENT_QUEUE_MAX,
    TokenBucket,
    TriageQueue,
    _broker_trouble,
    backoff_s,
    expiry_problem,
    is_auth_refusal,
    response_topic_allowed,
    urgent_action,
)


class _Time:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    now = _Time()
    bucket = TokenBucket(rate=20.0, burst=40, clock=now)
    assert sum(bucket.take() for _ in range(100)) == 40
    now.t += 0.5  # 10 tokens back
    assert sum(bucket.take() for _ in range(100)) == 10
    now.t += 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(100)) == 40


def test_token_bucket_rejects_nonsense_parameters() -> None:
    for rate, burst in ((0.0, 5), (5.0, 0)):
        try:
            TokenBucket(rate=rate, burst=burst)
        except ValueError as exc:
            assert "rate" in str(exc)
        else:
            raise AssertionError("accepted a bucket that never fills")


def test_backoff_grows_by_1_8_and_caps_at_30_s() -> None:
    delays = [backoff_s(n) for n in range(1, 12)]
    assert delays[0] == 1.8
    assert abs(delays[1] - 3.24) < 1e-9
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == 30.0 and delays[-1] == 30.0


def _props(**values: object) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def test_expiry_runs_messages_without_expiry_or_within_it() -> None:
    assert expiry_problem(None, 0.0, 100.0) is None
    assert expiry_problem(_props(), 0.0, 100.0) is None
    assert expiry_problem(_props(MessageExpiryInterval=5), 10.0, 12.0) is None


def test_expiry_refuses_zero_interval_and_messages_queued_past_it() -> None:
    zero = expiry_problem(_props(MessageExpiryInterval=0), 10.0, 10.0)
    late = expiry_problem(_props(MessageExpiryInterval=2), 10.0, 12.5)
    assert zero is not None and "expired" in zero
    assert late is not None and "not executed" in late


def test_auth_refusal_is_told_apart_from_other_connect_errors() -> None:
    assert is_auth_refusal(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=135)))
    assert is_auth_refusal(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=134)))
    assert is_auth_refusal(MqttConnectError(5))
    assert not is_auth_refusal(MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=136)))
    assert not is_auth_refusal(MqttError("[Errno 111] Connection refused"))


def test_broker_trouble_unwraps_task_group_errors_and_keeps_real_bugs() -> None:
    lost = MqttCodeError(7, "Could not publish message")
    assert _broker_trouble(lost) is lost
    assert _broker_trouble(ExceptionGroup("tg", [lost])) is lost
    bug = ExceptionGroup("tg", [KeyError("oops")])
    try:
        _broker_trouble(bug)
    except ExceptionGroup as exc:
        assert exc is bug
    else:
        raise AssertionError("a bug was taken for broker trouble")


def test_device_topics_follow_the_contract() -> None:
    t = DeviceTopics.of("massager", "abc")
    assert (t.availability, t.state, t.cmd, t.cmd_reply) == (
        "massager/abc/availability", "massager/abc/state", "massager/abc/cmd", "massager/abc/cmd/reply")
    # the simulator's topics, under the same base (device/sim.py, served through the bridge's extension point)
    assert (sim.FAULT_TOPIC, sim.FAULT_REPLY_TOPIC, sim.PLANT_TOPIC) == (
        "sim/fault", "sim/fault/reply", "sim/plant")


def _message(payload: bytes, *, topic: str = "massager/t1/cmd", retain: bool = False) -> Message:
    return Message(topic, payload, qos=1, retain=retain, mid=1, properties=None)


def test_urgent_action_is_a_cheap_look_at_fresh_cmd_messages() -> None:
    cmd = "massager/t1/cmd"
    assert urgent_action(cmd, b'{"action": "stop"}', False, cmd) == "stop"
    assert urgent_action(cmd, b'{"action":"pause","id":"x"}', False, cmd) == "pause"
    assert urgent_action(cmd, b'{"action": "stop"}', True, cmd) is None  # retained: never executed
    assert urgent_action("massager/t1/sim/fault", b'{"action": "stop"}', False, cmd) is None
    assert urgent_action(cmd, b'{"action": "start", "note": "stop"}', False, cmd) is None
    assert urgent_action(cmd, b'{"action": "stop"' + b" " * 5000 + b"}", False, cmd) is None  # oversize
    assert urgent_action(cmd, b"stop", False, cmd) is None


async def test_triage_queue_puts_stop_and_pause_first_and_never_drops_them_behind_a_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Queue(TriageQueue):
        command_topic = "massager/t1/cmd"

    queue = Queue(maxsize=10)
    for n in range(100):  # a flood: ten wait, ninety are dropped and counted, with one warning
        queue.put_nowait(_message(b'{"action": "set", "intensity": %d}' % (n % 5 + 1)))
    queue.put_nowait(_message(b'{"action": "pause", "id": "p"}'))
    queue.put_nowait(_message(b'{"action": "stop", "id": "s"}'))
    assert queue.dropped == 90 and queue.qsize() == 12
    assert len([r for r in caplog.records if "flood" in r.getMessage()]) == 1
    assert (await queue.get()).payload == b'{"action": "pause", "id": "p"}'
    assert (await queue.get()).payload == b'{"action": "stop", "id": "s"}'
    assert b"set" in (await queue.get()).payload


def test_triage_queue_a_stop_pushes_out_a_waiting_pause_never_a_stop() -> None:
    class Queue(TriageQueue):
        command_topic = "massager/t1/cmd"

    queue = Queue(maxsize=10)
    for _ in range(URGENT_QUEUE_MAX - 1):
        queue.put_nowait(_message(b'{"action": "stop"}'))
    queue.put_nowait(_message(b'{"action": "pause"}'))
    queue.put_nowait(_message(b'{"action": "stop", "id": "last"}'))  # full: the pause makes room
    waiting = [queue.get_nowait().payload for _ in range(queue.qsize())]
    assert b'{"action": "pause"}' not in waiting and waiting[-1] == b'{"action": "stop", "id": "last"}'
    assert queue.dropped == 1


def test_response_topics_only_under_the_reply_topic() -> None:
    reply = "massager/t1/cmd/reply"
    assert response_topic_allowed(f"{reply}/phone1", reply)
    assert response_topic_allowed(f"{reply}/a/b", reply)
    for topic in (reply, f"{reply}/", f"{reply}x", f"{reply}/+", f"{reply}/#", "phone/42/reply",
                  "massager/t1/state", "massager/other/cmd", f"{reply}/\0"):
        assert not response_topic_allowed(topic, reply), topic
