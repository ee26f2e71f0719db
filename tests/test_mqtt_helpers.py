"""The MQTT bridge's pure parts: token bucket, backoff, message expiry, auth refusals, topics."""

from __future__ import annotations

import itertools

from aiomqtt.exceptions import MqttCodeError, MqttConnectError, MqttError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.discovery import DeviceTopics
from device.mqtt import TokenBucket, _broker_trouble, backoff_s, expiry_problem, is_auth_refusal


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
    assert (t.sim_fault, t.sim_fault_reply, t.sim_plant) == (
        "massager/abc/sim/fault", "massager/abc/sim/fault/reply", "massager/abc/sim/plant")
