"""The on-device broker: image/mosquitto/ with the users and ACL scripts/provision writes, on a real mosquitto.

The shipped config is rewritten only where this machine differs from the Pi: a free loopback port instead of
1883 / 8883 and temporary paths instead of /etc/mosquitto.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.conftest import Broker, free_port
from tests.image_fixtures import REPO, built_image, card_copy, fat_read, run_script

WAIT_S = 5.0


@dataclass(frozen=True)
class Provisioned:
    """A running broker configured like a provisioned massager."""

    port: int
    tls_port: int
    ca_file: Path
    device_id: str
    device_user: str
    device_password: str
    phone_user: str
    phone_password: str

    @property
    def topic(self) -> str:
        """The device's topic root."""
        return f"massager/{self.device_id}"


class Client:
    """A paho MQTT 5 client on its own network thread, collecting what it receives."""

    def __init__(
        self, port: int, user: str | None, password: str | None, *, ca_file: Path | None = None,
        client_id: str = "",
    ) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.retained: list[tuple[str, bytes]] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.disconnected = threading.Event()
        self.connect_rc: ReasonCode | None = None
        self.granted: list[ReasonCode] = []
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.mqtt.on_disconnect = lambda *_args: self.disconnected.set()
        if user is not None:
            self.mqtt.username_pw_set(user, password)
        if ca_file is not None:
            self.mqtt.tls_set(ca_certs=str(ca_file))
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_message = self._on_message
        self.mqtt.connect("127.0.0.1", port)
        self.mqtt.loop_start()
        assert self._connected.wait(WAIT_S), "no CONNACK"

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connect_rc = rc
        self._connected.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            self.retained.append((msg.topic, bytes(msg.payload)))
        self.messages.put((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, _c: object, _u: object, _mid: int, rcs: list[ReasonCode], _p: object) -> None:
        self.granted = rcs
        self._subscribed.set()

    @property
    def accepted(self) -> bool:
        """Whether the broker accepted the connection."""
        return self.connect_rc is not None and not self.connect_rc.is_failure

    def subscribe(self, topic: str) -> bool:
        """Subscribe; whether the broker granted it."""
        self._subscribed.clear()
        self.mqtt.subscribe(topic, qos=1)
        assert self._subscribed.wait(WAIT_S), "no SUBACK"
        return not self.granted[0].is_failure

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait until the broker has taken it."""
        self.mqtt.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def receive(self) -> tuple[str, bytes]:
        """The next message (fails the test after a few seconds)."""
        return self.messages.get(timeout=WAIT_S)

    def close(self) -> None:
        """Disconnect."""
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=massager-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def module_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A massager image, built once for the module (the build is test_build_image's)."""
    return built_image(tmp_path_factory.mktemp("image"))


@pytest.fixture
def provisioned(module_image: Path, tmp_path: Path) -> Iterator[Provisioned]:
    """A mosquitto with the image's config and the files scripts/provision wrote to a card of the test's own."""
    image = card_copy(module_image, tmp_path)
    cert, key = self_signed(tmp_path)
    proc = run_script("provision", image, "--json", "--tls-cert", cert, "--tls-key", key)
    assert proc.returncode == 0, proc.stderr
    sheet = json.loads(proc.stdout)

    def bundle(dest: str) -> bytes:
        data = fat_read(image, f"massager-provision/files{dest}")
        assert data is not None, dest
        return data

    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("massager.passwd", "massager.acl"):
        (etc / name).write_bytes(bundle(f"/etc/mosquitto/{name}"))
        (etc / name).chmod(0o600)
    (etc / "massager.crt").write_bytes(bundle("/etc/mosquitto/certs/massager.crt"))
    (etc / "massager.key").write_bytes(bundle("/etc/mosquitto/certs/massager.key"))
    tls_port = free_port()
    conf = (REPO / "image/mosquitto/massager.conf").read_text()
    tls_conf = bundle("/etc/mosquitto/conf.d/massager-tls.conf").decode()
    assert "listener 1883 127.0.0.1\n" in conf and "listener 8883\n" in tls_conf
    conf = conf.replace("listener 1883 127.0.0.1\n", "") + tls_conf.replace(
        "listener 8883", f"listener {tls_port} 127.0.0.1"
    )
    conf = conf.replace("/etc/mosquitto/certs/", f"{etc}/").replace("/etc/mosquitto/", f"{etc}/")
    if os.geteuid() == 0:  # mosquitto started as root drops to user mosquitto, who cannot read pytest's tmp
        conf += "user root\n"
    broker = Broker(tmp_path, extra_conf=conf).start()
    try:
        yield Provisioned(
            port=broker.port,
            tls_port=tls_port,
            ca_file=cert,
            device_id=sheet["device_id"],
            device_user=sheet["device_id"],
            device_password=bundle("/etc/massager/mqtt.secret").decode().strip(),
            phone_user=sheet["phone_user"],
            phone_password=sheet["phone_password"],
        )
    finally:
        broker.stop()


@pytest.fixture
def device(provisioned: Provisioned) -> Iterator[Client]:
    """The firmware's connection."""
    client = Client(provisioned.port, provisioned.device_user, provisioned.device_password)
    assert client.accepted, client.connect_rc
    yield client
    client.close()


@pytest.fixture
def phone(provisioned: Provisioned) -> Iterator[Client]:
    """The phone app's connection."""
    client = Client(provisioned.port, provisioned.phone_user, provisioned.phone_password)
    assert client.accepted, client.connect_rc
    yield client
    client.close()


def test_broker_refuses_anonymous_and_wrong_passwords(provisioned: Provisioned) -> None:
    for user, password in (
        (None, None),
        (provisioned.phone_user, "guess"),
        ("admin", "admin"),
        (provisioned.device_user, provisioned.phone_password),
    ):
        client = Client(provisioned.port, user, password)
        assert not client.accepted, (user, client.connect_rc)
        client.close()


def test_device_publishes_its_topics_and_reads_its_commands(
    provisioned: Provisioned, device: Client, phone: Client
) -> None:
    t = provisioned.topic
    assert phone.subscribe(f"{t}/state")
    assert phone.subscribe(f"{t}/availability")
    assert phone.subscribe(f"{t}/cmd/reply/#")
    device.publish(f"{t}/availability", "online", retain=True)
    device.publish(f"{t}/state", '{"status": "idle"}', retain=True)
    assert phone.receive() == (f"{t}/availability", b"online")
    assert phone.receive() == (f"{t}/state", b'{"status": "idle"}')

    assert device.subscribe(f"{t}/cmd")
    phone.publish(f"{t}/cmd", '{"action": "stop", "id": "1"}')
    assert device.receive() == (f"{t}/cmd", b'{"action": "stop", "id": "1"}')
    device.publish(f"{t}/cmd/reply", '{"id": "1", "ok": true, "error": null}')
    assert phone.receive() == (f"{t}/cmd/reply", b'{"id": "1", "ok": true, "error": null}')

    assert device.subscribe("homeassistant/status")
    device.publish(f"homeassistant/sensor/{provisioned.device_id}/calf_pressure/config", "{}", retain=True)

    assert phone.subscribe(f"{t}/event")
    device.publish(f"{t}/event", '{"event_type": "refused"}')
    assert phone.receive() == (f"{t}/event", b'{"event_type": "refused"}')


def test_phone_cannot_publish_state_or_read_commands(
    provisioned: Provisioned, device: Client, phone: Client
) -> None:
    t = provisioned.topic
    assert phone.subscribe(f"{t}/state")
    assert device.subscribe(f"{t}/cmd")
    phone.publish(f"{t}/state", '{"status": "forged"}')  # the broker takes it ... and drops it
    phone.publish(f"{t}/availability", "offline")
    phone.publish(f"homeassistant/switch/{provisioned.device_id}/heat/config", "{}")
    phone.publish("massager/other-device/cmd", '{"action": "start"}')
    device.publish(f"{t}/state", '{"status": "idle"}')  # sent after the forgeries: arrives after them if any
    assert phone.receive() == (f"{t}/state", b'{"status": "idle"}')
    assert phone.messages.empty()

    phone.subscribe(f"{t}/cmd")  # mosquitto may grant it, but no command may reach the phone
    phone.subscribe("#")
    phone.publish(f"{t}/cmd", '{"action": "pause"}')
    assert device.receive() == (f"{t}/cmd", b'{"action": "pause"}')
    device.publish(f"{t}/state", '{"status": "paused"}')
    received = [phone.receive()]
    while received[-1][1] != b'{"status": "paused"}':
        received.append(phone.receive())
    assert all(topic == f"{t}/state" for topic, _ in received), received


def test_device_cannot_publish_commands_or_other_devices_topics(
    provisioned: Provisioned, device: Client, phone: Client
) -> None:
    t = provisioned.topic
    assert device.subscribe(f"{t}/cmd")
    assert phone.subscribe("#")
    device.publish(f"{t}/cmd", '{"action": "start"}')  # not even to itself
    device.publish("massager/other-device/state", '{"status": "forged"}')
    device.publish(f"{t}/state", '{"status": "idle"}')
    assert phone.receive() == (f"{t}/state", b'{"status": "idle"}')
    assert device.subscribe("homeassistant/status")  # its SUBACK comes after anything queued for the device
    assert phone.messages.empty() and device.messages.empty()


def test_tls_listener_takes_the_same_users(provisioned: Provisioned) -> None:
    phone = Client(
        provisioned.tls_port, provisioned.phone_user, provisioned.phone_password, ca_file=provisioned.ca_file
    )
    assert phone.accepted, phone.connect_rc
    phone.close()
    anonymous = Client(provisioned.tls_port, None, None, ca_file=provisioned.ca_file)
    assert not anonymous.accepted
    anonymous.close()


def test_broker_plain_mqtt_listens_on_loopback_only_and_the_network_gets_tls() -> None:
    """docs/technician.md: plain MQTT for the firmware on the device, TLS for anything on the network."""
    conf = (REPO / "image/mosquitto/massager.conf").read_text()
    tls_conf = (REPO / "image/mosquitto/massager-tls.conf").read_text()
    listeners = [line.split() for line in conf.splitlines() if line.startswith("listener")]
    assert listeners == [["listener", "1883", "127.0.0.1"]]
    assert [line for line in tls_conf.splitlines() if line.startswith("listener")] == ["listener 8883"]
    assert "certfile" in tls_conf and "keyfile" in tls_conf
    for text in (conf, tls_conf):  # a per-listener setting: after each listener line
        assert text.index("use_username_as_clientid true") > text.index("listener")


def test_broker_client_id_cannot_be_taken_over_with_the_phone_password(provisioned: Provisioned) -> None:
    firmware = Client(provisioned.port, provisioned.device_user, provisioned.device_password,
                      client_id=f"massager-{provisioned.device_id}")
    assert firmware.accepted
    assert firmware.subscribe(f"{provisioned.topic}/cmd")
    for client_id in (f"massager-{provisioned.device_id}", provisioned.device_user, ""):
        intruder = Client(provisioned.port, provisioned.phone_user, provisioned.phone_password,
                          client_id=client_id)
        assert intruder.accepted
        intruder.close()
    assert not firmware.disconnected.wait(1.0)  # never knocked off
    phone = Client(provisioned.port, provisioned.phone_user, provisioned.phone_password)
    phone.publish(f"{provisioned.topic}/cmd", '{"action": "stop"}')
    assert firmware.receive() == (f"{provisioned.topic}/cmd", b'{"action": "stop"}')
    phone.close()
    firmware.close()


def test_broker_disconnects_a_client_sending_a_large_packet_and_never_forwards_it(
    provisioned: Provisioned, device: Client, phone: Client
) -> None:
    t = provisioned.topic
    assert device.subscribe(f"{t}/cmd")
    phone.mqtt.publish(f"{t}/cmd", b'{"action": "start", "pad": "' + b"x" * 200_000 + b'"}', qos=1)
    assert phone.disconnected.wait(WAIT_S)
    again = Client(provisioned.port, provisioned.phone_user, provisioned.phone_password)
    again.publish(f"{t}/cmd", '{"action": "stop"}')
    assert device.receive() == (f"{t}/cmd", b'{"action": "stop"}')  # the large one never came
    again.close()


def test_broker_retained_command_reaches_a_new_subscriber_flagged_retained(
    provisioned: Provisioned, phone: Client
) -> None:
    """mosquitto cannot refuse retain on one topic: the flag arrives, and the firmware ignores such commands."""
    t = provisioned.topic
    phone.publish(f"{t}/cmd", '{"action": "start"}', retain=True)
    late = Client(provisioned.port, provisioned.device_user, provisioned.device_password)
    assert late.subscribe(f"{t}/cmd")
    assert late.receive() == (f"{t}/cmd", b'{"action": "start"}')
    assert late.retained == [(f"{t}/cmd", b'{"action": "start"}')]
    phone.publish(f"{t}/cmd", "", retain=True)
    late.close()


async def test_broker_firmware_answers_on_the_response_topic_the_acl_grants(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    """MQTT 5 request/response with the shipped ACL: cmd/reply/phone1 works end to end; nothing else is used."""
    import asyncio

    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from device.config import load_config
    from tests.mqtt_support import running_firmware

    config = load_config(None, {
        "state_dir": str(tmp_path / "state"), "programs_dir": None, "device_id": provisioned.device_id,
        "mqtt.host": "127.0.0.1", "mqtt.port": provisioned.port, "mqtt.username": provisioned.device_user,
        "mqtt.password": provisioned.device_password,
    })
    t = provisioned.topic
    async with running_firmware(config), aiomqtt.Client(
        "127.0.0.1", provisioned.port, username=provisioned.phone_user, password=provisioned.phone_password,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as phone:
        await phone.subscribe(f"{t}/cmd/reply/#", qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{t}/cmd/reply/phone1"
        props.CorrelationData = b"c1"
        await phone.publish(f"{t}/cmd", b'{"action": "stop", "id": "x"}', qos=1, properties=props)
        got: dict[str, Any] = {}
        async with asyncio.timeout(WAIT_S):
            async for message in phone.messages:
                got[str(message.topic)] = message
                if len(got) == 2:
                    break
        assert set(got) == {f"{t}/cmd/reply", f"{t}/cmd/reply/phone1"}
        response = got[f"{t}/cmd/reply/phone1"]
        assert json.loads(response.payload)["id"] == "x"
        assert response.properties is not None and response.properties.CorrelationData == b"c1"
