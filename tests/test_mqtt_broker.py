"""The bridge and broker trouble: outage mid-session, credentials and ACL, TLS, SIGTERM and SIGKILL."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiomqtt import TLSParameters

from tests.conftest import Broker
from tests.mqtt_support import BASE, DEVICE_ID, mqtt_config, running_firmware, watching

REPO = Path(__file__).resolve().parent.parent
# mosquitto started as root drops to the "mosquitto" user, who cannot read files under the
# tests' private temporary directory: keep the user (ignored when not started as root).
KEEP_USER = "user root\n" if os.geteuid() == 0 else ""


async def test_mqtt_broker_outage_mid_session_massage_and_safety_carry_on(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="device.mqtt")
    config = mqtt_config(tmp_path, broker.port)
    async with running_firmware(config, panel=True) as fw:
        rig = fw.app.rig
        assert rig is not None
        async with watching(broker.port, f"{BASE}/#") as w:
            assert (await w.command({"action": "start", "program": "circulation", "heat": False,
                                     "timer_min": 15}))["ok"]
            await w.wait_state(lambda s: s["status"] == "running")
        broker.stop()
        # During the outage: the plant's pressures keep cycling, nothing trips, the buttons work.
        pressures: list[float] = []
        valves: set[tuple[bool, bool, bool]] = set()
        pin = rig.factory.pin(config.pins.button_intensity)
        intensity = fw.app.device.state()["intensity"]
        for n in range(50):  # 2.5 s real = 10 s of sim time
            await asyncio.sleep(0.05)
            pressures.append(max(rig.plant.pressure.values()))
            out = rig.plant.outputs()
            valves.add((bool(out["valve_foot"]), bool(out["valve_ankle"]), bool(out["valve_calf"])))
            if n == 10:
                pin.drive_low()
            if n == 12:
                pin.drive_high()
        assert fw.app.supervisor.latched is None
        assert fw.app.device.state()["status"] == "running"
        assert max(pressures) > 20.0 and max(pressures) - min(pressures) > 10.0, pressures
        assert len(valves) > 1  # zones switching: the waves go on
        assert fw.app.device.state()["intensity"] == intensity % 5 + 1  # the button press was taken
        assert fw.task.done() is False
        # The broker returns on the same port: the bridge reconnects and republishes everything.
        broker.start()
        async with watching(broker.port, f"{BASE}/#", f"homeassistant/+/{DEVICE_ID}/+/config") as w:
            online = await w.wait_for(f"{BASE}/availability", timeout=10)
            assert online.payload == b"online"
            state = (await w.wait_for(f"{BASE}/state")).json()
            assert state["status"] == "running" and state["intensity"] == intensity % 5 + 1
            await w.wait_for(f"homeassistant/select/{DEVICE_ID}/program/config")
            assert fw.bridge.connects == 2
    warnings = [r for r in caplog.records if r.name == "device.mqtt" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # the first failure; repeats at DEBUG


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto with a password file and an ACL that gives the device its own topics."""
    passwd = tmp_path / "passwd"
    _run("mosquitto_passwd", "-b", "-c", str(passwd), "massager", "right-pass")
    _run("mosquitto_passwd", "-b", str(passwd), "watcher", "watch-pass")
    acl = tmp_path / "acl"
    acl.write_text(
        "user massager\n"
        f"topic readwrite {BASE}/#\n"
        "topic write homeassistant/#\n"
        "topic read homeassistant/status\n"
        "user watcher\n"
        "topic readwrite #\n"
    )
    conf = f"{KEEP_USER}allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    b = Broker(tmp_path, extra_conf=conf).start()
    try:
        yield b
    finally:
        b.stop()


async def test_mqtt_right_credentials_connect_through_password_file_and_acl(
    auth_broker: Broker, tmp_path: Path
) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("right-pass\n")
    config = mqtt_config(tmp_path, auth_broker.port, username="massager", password_file=str(secret))
    async with running_firmware(config), watching(auth_broker.port, f"{BASE}/#",
                                                  username="watcher", password="watch-pass") as w:
        online = await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online")
        assert online is not None
        assert (await w.command({"action": "set", "intensity": 2, "id": "acl"}))["ok"]


async def test_mqtt_wrong_credentials_one_clear_error_and_no_hammering(
    auth_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = mqtt_config(tmp_path, auth_broker.port, username="massager", password="wrong-pass")
    async with running_firmware(config, expect_connect=False) as fw:
        await asyncio.sleep(3.0)
        assert fw.bridge.connects == 0
        assert fw.app.supervisor.latched is None  # the firmware itself is unaffected
    errors = [r.getMessage() for r in caplog.records if r.name == "device.mqtt" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "refused the credentials" in errors[0] and "massager" in errors[0]
    assert "wrong-pass" not in caplog.text
    attempts = auth_broker.log.read_text().count("not authorised")
    assert attempts == 1, auth_broker.log.read_text()  # the next try comes only after 30 s


def _signed(d: Path, ca_crt: Path, ca_key: Path, name: str, subject: str, ext: str) -> tuple[Path, Path]:
    """A key and a certificate for ``subject`` signed by the test CA."""
    key, csr, crt, extfile = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
         "-keyout", str(key), "-out", str(csr))
    extfile.write_text(ext)
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(extfile), "-out", str(crt))
    return key, crt


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all made here."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test CA")
    d = tmp_path / "pki"
    d.mkdir()
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
         "-keyout", str(ca_key), "-out", str(ca_crt))
    server_key, server_crt = _signed(d, ca_crt, ca_key, "server", "/CN=127.0.0.1",
                                     "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client_key, client_crt = _signed(d, ca_crt, ca_key, "client", "/CN=massager-t1",
                                     "extendedKeyUsage=clientAuth\n")
    return {"ca": ca_crt, "server_key": server_key, "server_crt": server_crt,
            "client_key": client_key, "client_crt": client_crt}


def _tls_broker(tmp_path: Path, pki: dict[str, Path], extra: str = "") -> Broker:
    conf = f"{KEEP_USER}cafile {pki['ca']}\ncertfile {pki['server_crt']}\nkeyfile {pki['server_key']}\n{extra}"
    return Broker(tmp_path, extra_conf=conf).start()


async def test_mqtt_unreadable_password_file_disables_mqtt_not_the_massager(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="device.mqtt")
    config = mqtt_config(tmp_path, broker.port, username="massager", password_file=str(tmp_path / "missing"))
    async with running_firmware(config, expect_connect=False) as fw:
        await asyncio.sleep(0.5)
        assert fw.bridge.connects == 0
        assert not fw.task.done()
    errors = [r.getMessage() for r in caplog.records if r.name == "device.mqtt"]
    assert len(errors) == 1 and "MQTT disabled" in errors[0] and "password_file" in errors[0], errors


@pytest.fixture
def tls_broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[tuple[Broker, Path]]:
    """Mosquitto with a TLS listener whose certificate is signed by the test CA."""
    b = _tls_broker(tmp_path, pki)
    try:
        yield b, pki["ca"]
    finally:
        b.stop()


async def test_mqtt_tls_with_a_test_ca(tls_broker: tuple[Broker, Path], tmp_path: Path) -> None:
    broker, ca = tls_broker
    config = mqtt_config(tmp_path, broker.port, tls={"enabled": True, "ca_file": str(ca)})
    tls = TLSParameters(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    async with running_firmware(config) as fw, watching(broker.port, f"{BASE}/#", tls_params=tls) as w:
        await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online")
        assert (await w.command({"action": "pause", "id": "tls"}))["id"] == "tls"
        assert fw.bridge.connects == 1


async def test_mqtt_tls_with_a_client_certificate(tmp_path: Path, pki: dict[str, Path]) -> None:
    broker = _tls_broker(tmp_path, pki, "require_certificate true\n")
    try:
        tls = {"enabled": True, "ca_file": str(pki["ca"]), "cert_file": str(pki["client_crt"]),
               "key_file": str(pki["client_key"])}
        config = mqtt_config(tmp_path, broker.port, tls=tls)
        watcher_tls = TLSParameters(ca_certs=str(pki["ca"]), certfile=str(pki["client_crt"]),
                                    keyfile=str(pki["client_key"]))
        async with running_firmware(config) as fw, \
                watching(broker.port, f"{BASE}/#", tls_params=watcher_tls) as w:
            await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online")
            assert (await w.command({"action": "set", "intensity": 1, "id": "cert"}))["ok"]
            assert fw.bridge.connects == 1
    finally:
        broker.stop()


async def test_mqtt_tls_refuses_a_broker_the_ca_did_not_sign(
    tls_broker: tuple[Broker, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, _ca = tls_broker
    other = tmp_path / "other-ca.crt"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
         "-keyout", str(tmp_path / "other.key"), "-out", str(other))
    config = mqtt_config(tmp_path, broker.port, tls={"enabled": True, "ca_file": str(other)})
    caplog.set_level(logging.WARNING, logger="device.mqtt")
    async with running_firmware(config, expect_connect=False) as fw:
        await asyncio.sleep(1.0)
        assert fw.bridge.connects == 0
    assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() or "certificate" in r.getMessage().lower()
               for r in caplog.records), caplog.text


def _start_firmware(port: int, state_dir: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "device", "run", "--sim", "--mqtt-port", str(port), "--state-dir",
         str(state_dir), "--device-id", DEVICE_ID, "--mqtt-host", "127.0.0.1"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=(state_dir.parent / "firmware.log").open("wb"),
    )


@pytest.mark.parametrize(("sig", "how"), [(signal.SIGTERM, "clean stop"), (signal.SIGKILL, "Last Will")])
async def test_mqtt_firmware_process_offline_after_sigterm_and_sigkill(
    broker: Broker, tmp_path: Path, sig: signal.Signals, how: str
) -> None:
    proc = _start_firmware(broker.port, tmp_path / "state")
    try:
        async with watching(broker.port, f"{BASE}/availability") as w:
            online = await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"online", timeout=20)
            mark = w.seen.index(online) + 1
            proc.send_signal(sig)
            offline = await w.wait_for(f"{BASE}/availability", lambda s: s.payload == b"offline",
                                       after=mark, timeout=8)
            assert offline is not None, how
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 8:
            await asyncio.sleep(0.05)
        assert proc.returncode == (0 if sig == signal.SIGTERM else -signal.SIGKILL), (
            (tmp_path / "firmware.log").read_text())
        async with watching(broker.port, f"{BASE}/availability") as late:
            retained = await late.wait_for(f"{BASE}/availability")
            assert retained.payload == b"offline" and retained.retain
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
