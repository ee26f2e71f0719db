"""The phone remote without a browser: its files, the web server that serves them, the WebSockets listener.

The page, lighttpd's config and mosquitto's WebSockets listener are the shipped files (device/remote.py
rewrites only ports and paths); the browser tests are tests/test_remote_browser.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from device.notice import SAFETY_NOTICE
from device.remote import BUILTIN_JSON, REMOTE_DIR, RemoteHost, builtin_json
from device.safety.faults import FaultCode

MQTT_ESM_SHA256 = "6e009e77fc644cbf7b46ea37ba77fbdaf5780452389a57f2b4a676437c2defdd"  # mqtt 5.16.0
PAGE_BUDGET_BYTES = 150_000  # the whole page, vendored client included, as transferred (gzip)
PAGE_FILES = ("", "app.js", "faults.js", "style.css", "vendor/mqtt/mqtt.esm.js", "builtin.json", "device.json",
              "manifest.webmanifest", "icon.svg")
WAIT_S = 10.0
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
needs_lighttpd = pytest.mark.skipif(
    not Path(LIGHTTPD).exists() and not os.environ.get("CI"),
    reason="lighttpd is not installed: scripts/bootstrap",
)


def test_vendored_mqtt_client_is_the_pinned_release_with_its_licence() -> None:
    bundle = REMOTE_DIR / "vendor/mqtt/mqtt.esm.js"
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == MQTT_ESM_SHA256
    assert "MIT License" in (REMOTE_DIR / "vendor/mqtt/LICENSE.md").read_text()
    vendored = (REMOTE_DIR / "vendor/mqtt/VENDORED.md").read_text()
    assert MQTT_ESM_SHA256 in vendored and "5.16.0" in vendored


def test_builtin_json_is_current_with_the_program_library() -> None:
    assert BUILTIN_JSON.read_text() == builtin_json(), "run: python -m device.remote --write-builtin"
    data = json.loads(BUILTIN_JSON.read_text())
    assert data["safety_notice"] == SAFETY_NOTICE
    assert {p["name"] for p in data["programs"]} >= {"relax", "circulation", "sensitive"}
    assert all(p["description"] and p["suits"] and p["duration_min"] > 0 for p in data["programs"])


def test_every_fault_code_has_advice_for_the_user() -> None:
    source = (REMOTE_DIR / "faults.js").read_text()
    table = source.split("export const FAULT_HELP = {", 1)[1].split("};", 1)[0]
    advised = set(re.findall(r"^\s+([A-Z_]+):", table, re.M))
    assert advised == {str(code) for code in FaultCode}
    assert "UNKNOWN_FAULT_HELP" in source  # an unknown code gets the generic advice


def test_page_loads_only_its_own_files() -> None:
    for path in REMOTE_DIR.rglob("*.js"):
        if "vendor" in path.parts:
            continue
        for target in re.findall(r'^import .* from "([^"]+)";', path.read_text(), re.M):
            assert target.startswith("./") and (path.parent / target).is_file(), (path, target)
    html = (REMOTE_DIR / "index.html").read_text()
    for target in re.findall(r'(?:src|href)="([^"#][^"]*)"', html):
        assert "//" not in target and (REMOTE_DIR / target).is_file(), target


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_page_installs_to_the_home_screen_with_png_icons() -> None:
    manifest = json.loads((REMOTE_DIR / "manifest.webmanifest").read_text())
    assert manifest["display"] == "standalone" and manifest["start_url"] == "./"
    sizes: dict[str, set[int]] = {"any": set(), "maskable": set()}
    for icon in manifest["icons"]:
        path = REMOTE_DIR / icon["src"]
        assert path.is_file(), icon
        if icon["type"] == "image/png":
            width, height = _png_size(path)
            assert icon["sizes"] == f"{width}x{height}", icon  # the declared size is the real one
            sizes[icon["purpose"]].add(width)
    # Android asks for 192 and 512 px PNGs (a maskable one fills its adaptive shapes); iOS ignores the
    # manifest and takes a 180 px PNG apple-touch-icon (it cannot use SVG).
    assert {192, 512} <= sizes["any"] and 512 in sizes["maskable"], sizes
    html = (REMOTE_DIR / "index.html").read_text()
    touch = re.search(r'<link rel="apple-touch-icon" href="([^"]+)">', html)
    assert touch and _png_size(REMOTE_DIR / touch.group(1)) == (180, 180)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[RemoteHost]:
    """lighttpd with the shipped config, serving the page (no broker)."""
    host = RemoteHost(tmp_path)
    host.prepare()
    host.start_web()
    try:
        yield host
    finally:
        host.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers here, not something to follow."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def fetch(url: str, ca: Path | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET asking for gzip (HTTPS trusting ``ca``): status, headers, the body as transferred."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=WAIT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@needs_lighttpd
def test_web_server_serves_the_page_compressed_with_its_types_under_budget(web: RemoteHost) -> None:
    def get(url: str) -> tuple[int, dict[str, str], bytes]:
        return fetch(url, web.ca_file)

    types = {"": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
             ".webmanifest": "application/manifest+json", ".svg": "image/svg+xml"}
    total = 0
    for name in PAGE_FILES:
        status, headers, body = get(web.url + name)
        assert status == 200, name
        assert headers["Content-Type"].startswith(types[Path(name).suffix]), (name, headers["Content-Type"])
        assert headers.get("X-Content-Type-Options") == "nosniff"
        if name.endswith((".js", ".css")) or name == "":
            assert headers.get("Content-Encoding") == "gzip", name
            local = REMOTE_DIR / (name or "index.html")
            assert gzip.decompress(body) == local.read_bytes(), name
        total += len(body)
    assert total < PAGE_BUDGET_BYTES, f"the page transfers {total} bytes"
    # A second visit revalidates instead of downloading again.
    _status, headers, _body = get(web.url + "vendor/mqtt/mqtt.esm.js")
    request = urllib.request.Request(web.url + "vendor/mqtt/mqtt.esm.js", headers={
        "Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]})
    trusted = ssl.create_default_context(cafile=str(web.ca_file))
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=WAIT_S, context=trusted)
    assert not_modified.value.code == 304
    settings = json.loads(get(web.url + "device.json")[2])
    assert settings["device_id"] == web.device_id and settings["websocket_port"] == web.ws_port
    for name in ("../lighttpd.conf", "nothere.js", "vendor/", "device.json~"):
        assert get(web.url + name)[0] in (403, 404), name


@needs_lighttpd
def test_web_server_sends_plain_http_to_https_with_the_device_certificate(web: RemoteHost) -> None:
    assert web.url.startswith("https://")  # with a certificate the page comes over HTTPS, as on a device
    for path in ("", "app.js", "device.json?x=1"):
        status, headers, body = fetch(web.plain_url + path)
        assert status == 308, (path, status)
        assert headers["Location"] == web.url + path, headers
        assert b"Massager remote" not in body  # nothing of the page over plain HTTP
    assert fetch(web.url, web.ca_file)[0] == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(web.url)  # the device's own certificate: not one the system trusts


class WsClient:
    """A paho MQTT 5 client over WebSockets."""

    def __init__(self, host: RemoteHost, user: str | None, password: str | None) -> None:
        self.rc: ReasonCode | None = None
        self.messages: list[tuple[str, bytes]] = []
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, transport="websockets")
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.tls_set(ca_certs=str(host.ca_file))  # wss, as on a device
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", host.ws_port)
        self.client.loop_start()
        assert self._connected.wait(WAIT_S), "no CONNACK over WebSockets"

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.rc = rc
        self._connected.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def plain_websocket_connects(host: RemoteHost) -> bool:
    """Whether an MQTT client without TLS gets a CONNACK from the WebSockets listener."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, transport="websockets")
    client.username_pw_set(host.phone_user, host.phone_password)
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    try:
        client.connect("127.0.0.1", host.ws_port)
    except Exception:  # noqa: BLE001 - any failure to even start the handshake is the answer
        return False
    client.loop_start()
    try:
        return connected.wait(2.0)
    finally:
        client.loop_stop()


def test_websockets_listener_takes_the_phone_user_under_the_same_acl_over_tls(tmp_path: Path) -> None:
    host = RemoteHost(tmp_path)
    host.prepare()
    host.start_broker()
    clients: list[WsClient] = []
    try:
        opened = re.findall(r"listen socket on port (\d+)", (tmp_path / "mosquitto.log").read_text())
        assert set(map(int, opened)) == {host.mqtt_port, host.ws_port}  # no default 1883 listener
        for user, password in ((None, None), (host.phone_user, "guess")):
            refused = WsClient(host, user, password)
            clients.append(refused)
            assert refused.rc is not None and refused.rc.is_failure, user
        assert not plain_websocket_connects(host)  # TLS or nothing
        phone = WsClient(host, host.phone_user, host.phone_password)
        clients.append(phone)
        assert phone.rc is not None and not phone.rc.is_failure
        phone.client.subscribe(f"{host.base}/#", qos=1)
        device = WsClient(host, host.device_id, host.device_password)
        clients.append(device)
        device.client.subscribe(f"{host.base}/cmd", qos=1)
        time.sleep(0.5)  # both SUBACKs (the assertion below waits on messages, not on this)
        phone.client.publish(f"{host.base}/state", '{"status": "forged"}', qos=1)
        phone.client.publish(f"{host.base}/cmd", '{"action": "stop"}', qos=1)
        device.client.publish(f"{host.base}/sim/plant", "{}", qos=1)
        device.client.publish(f"{host.base}/state", '{"status": "idle"}', qos=1)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not (device.messages and phone.messages):
            time.sleep(0.05)
        assert device.messages == [(f"{host.base}/cmd", b'{"action": "stop"}')]
        assert phone.messages == [(f"{host.base}/state", b'{"status": "idle"}')]  # no forgery, no sim/plant
    finally:
        for c in clients:
            c.close()
        host.stop()


@needs_lighttpd
def test_sim_web_prints_the_page_address_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "device.remote", "sim", "--time-scale", "2", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if match := re.search(r"Phone remote:\s+(http://\S+)", line):
                url = match.group(1)
        assert url, "no address printed"
        status, _headers, body = fetch(url)
        assert status == 200 and b"Massager remote" in gzip.decompress(body)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired as exc:
            # name what still runs and where it waits, so a hang explains itself
            tree = subprocess.run(["ps", "-o", "pid,stat,wchan:24,etime,args", "-g", str(proc.pid)],
                                  capture_output=True, text=True).stdout
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"sim --web still ran 30 s after Ctrl-C:\n{tree}") from exc
    assert proc.returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)  # the web server went with it


@needs_lighttpd
def test_bench_web_reports_tap_latency_page_weight_and_time_to_live_state() -> None:
    if not (shutil.which("chromium") and shutil.which("chromedriver")) and not os.environ.get("CI"):
        pytest.skip("chromium and chromium-driver are not installed: scripts/bootstrap")
    from device.bench_web import render, run_web_bench

    results = run_web_bench(trials=3)
    assert results["tap"]["n"] == 3 and results["command_plain"]["n"] == 3
    assert results["broker_plain"]["n"] == 3 and results["broker_ws"]["n"] == 3
    assert 0 < results["tap"]["p50"] < 2000  # ms; the figures themselves are for docs/performance.md
    assert results["targets"]["page.transferred_bytes"]["met"], results["page"]
    assert results["page_slow_network"]["first_state_ms"] > 0
    assert "tap" in render(results)
    from device.bench import check_targets  # `massager bench` judges the same figures under "web"

    verdicts = check_targets({"web": results})
    web_targets = {"web.tap.p99_over_broker", "web.page.transferred_bytes", "web.page.first_state_ms"}
    assert web_targets <= verdicts.keys()
    assert verdicts["web.page.transferred_bytes"]["met"] is True
