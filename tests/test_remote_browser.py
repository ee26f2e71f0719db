"""The phone remote in a real browser (Debian's headless Chromium through chromium-driver and Selenium).

The page comes from the device's web server (lighttpd with image/remote/lighttpd.conf) and talks MQTT over
the broker's WebSockets listener (image/mosquitto/massager-websockets.conf) to the firmware, which runs as
its own process on the simulated plant. Oracles read the plant's truth on ``sim/plant``, never the page.
Every wait is on a condition with a generous bound (the machine may be loaded); no sleep is an assertion.

Screenshots of the main states are taken on every run (into the test's tmp dir); with
MASSAGER_UPDATE_SCREENSHOTS=1 they replace docs/remote/*.png, which docs/remote.md shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from device.notice import SAFETY_NOTICE
from device.remote import RemoteHost

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
WAIT_S = 30.0  # upper bound of every wait on a condition (a loaded 2-core machine is slow, never this slow)
SCALE = 4.0  # the firmware's sim clock runs this much faster than real time
PHONE_WIDTH_PX = 360
SCREENSHOTS = REPO / "docs" / "remote"


def _missing_tools() -> list[str]:
    return [p for p in (CHROMIUM, CHROMEDRIVER, LIGHTTPD) if not Path(p).exists()]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with a 360 px wide phone viewport (its temporary files in the test's folder)."""
    missing = _missing_tools()
    if missing:
        message = (f"not installed: {', '.join(missing)} "
                   "(scripts/bootstrap installs chromium, chromium-driver and lighttpd)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--window-size=500,900",
                # the WebSockets listener has TLS, as on a device, with the test's self-signed certificate
                "--ignore-certificate-errors"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    scratch = tmp_path_factory.mktemp("chromium")
    service = Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": str(scratch)})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE_WIDTH_PX, "height": 780, "deviceScaleFactor": 2, "mobile": True})
        driver.set_page_load_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


class Plant:
    """A developer MQTT client: reads the plant's truth and the device's topics, injects plant faults."""

    def __init__(self, host: RemoteHost) -> None:
        self.host = host
        self.latest: dict[str, Any] = {}
        self.seen: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=f"test-plant-{os.getpid()}")
        self.client.username_pw_set("developer", host.developer_password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.connect("127.0.0.1", host.mqtt_port)
        self.client.loop_start()
        assert self._connected.wait(WAIT_S), "the test's MQTT client did not connect"

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if not rc.is_failure:
            client.subscribe(f"{self.host.base}/#", qos=1)
            self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        with self._lock:
            self.latest.clear()  # what was retained is gone with a restarted broker (no persistence)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic.removeprefix(self.host.base + "/")
        try:
            value: Any = json.loads(msg.payload)
        except ValueError:
            value = msg.payload.decode(errors="replace")
        with self._lock:
            self.latest[topic] = value

    def get(self, topic: str) -> Any:
        """The latest message on ``<base>/<topic>``, or None."""
        with self._lock:
            return self.latest.get(topic)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        """Poll ``check`` until it is truthy; fail with ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        plant = self.get("sim/plant")
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; plant: {plant}")

    def outputs(self) -> dict[str, Any]:
        """The plant's outputs as read from the pins (``sim/plant``)."""
        plant = self.get("sim/plant")
        return plant["outputs"] if isinstance(plant, dict) else {}

    def inject(self, fault: str, **params: Any) -> None:
        """Inject a plant fault through ``sim/fault``."""
        self.client.publish(f"{self.host.base}/sim/fault", json.dumps({"fault": fault, **params}), qos=1)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


class Device:
    """The host (broker + web server), the firmware as its own process, and the plant watcher."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host = RemoteHost(tmp)
        self.firmware: subprocess.Popen[bytes] | None = None
        self.plant: Plant | None = None

    def start(self) -> Device:
        self.host.start()
        self.plant = Plant(self.host)
        self.start_firmware()
        return self

    def start_firmware(self) -> None:
        config = self.host.firmware_config(self.tmp / "state")
        self.firmware = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--sim", "--config", str(config),
             "--time-scale", str(SCALE)],
            stdout=(self.tmp / "firmware.log").open("ab"), stderr=subprocess.STDOUT, cwd=REPO,
        )
        assert self.plant is not None
        self.plant.wait("the firmware online with its first state",
                        lambda: self.plant is not None and self.plant.get("availability") == "online"
                        and isinstance(self.plant.get("state"), dict) and self.plant.get("sim/plant"))

    def stop_firmware(self) -> None:
        if self.firmware is not None and self.firmware.poll() is None:
            self.firmware.terminate()
            try:
                self.firmware.wait(15)
            except subprocess.TimeoutExpired:
                self.firmware.kill()
                self.firmware.wait()
        self.firmware = None

    def stop(self) -> None:
        self.stop_firmware()
        if self.plant is not None:
            self.plant.close()
        self.host.stop()

    def log(self) -> str:
        path = self.tmp / "firmware.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
def device(tmp_path: Path, browser: Any) -> Iterator[Device]:
    """A simulated device behind its broker and web server; the browser starts each test on a blank page."""
    dev = Device(tmp_path).start()
    try:
        yield dev
    finally:
        with contextlib.suppress(WebDriverException):
            browser.get("about:blank")
        dev.stop()


# -- helpers for the page -----------------------------------------------------------------------------


def wait_page(browser: Any, what: str, check: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    """Wait until ``check(browser)`` is truthy; the failure names ``what`` and shows the page's state."""
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.1).until(check)
    except Exception as exc:
        link = browser.execute_script("const e = document.getElementById('link'); return e && e.textContent")
        raise AssertionError(f"timed out waiting for {what} (link: {link!r})") from exc


def text(browser: Any, element_id: str) -> str:
    """The visible text of an element (textContent, trimmed)."""
    return str(browser.execute_script(f"return document.getElementById('{element_id}').textContent")).strip()


def visible(browser: Any, element_id: str) -> bool:
    """Whether an element is shown (not hidden, has a box)."""
    return bool(browser.execute_script(
        f"const e = document.getElementById('{element_id}'); return !!e && e.getClientRects().length > 0"))


def click(browser: Any, element_id: str) -> None:
    """Scroll an element into view and click it like a user."""
    element = browser.find_element(By.ID, element_id)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def open_page(browser: Any, device: Device) -> None:
    browser.get(device.host.url)
    wait_page(browser, "the page's script to run",
              lambda b: b.execute_script("return document.body.dataset.ready"))


def sign_in(browser: Any, device: Device, password: str | None = None, *, notice: bool = True) -> None:
    """Type the phone credentials (the user name is filled in from device.json) and connect."""
    field = browser.find_element(By.ID, "login-password")
    field.clear()
    field.send_keys(device.host.phone_password if password is None else password)
    click(browser, "login-submit")
    if password is None:
        wait_page(browser, "connected", lambda b: text(b, "link") == "Connected")
        wait_page(browser, "the first state", lambda b: text(b, "status") != "–")
        if notice:
            wait_page(browser, "the safety notice", lambda b: b.execute_script(
                "return document.getElementById('notice').open"))
            click(browser, "notice-ok")


def screenshot(browser: Any, tmp: Path, name: str) -> None:
    """A screenshot of the whole page (the test's tmp dir; docs/remote/ when asked to update them)."""
    height = browser.execute_script("return Math.max(document.documentElement.scrollHeight, 780)")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": PHONE_WIDTH_PX, "height": int(height), "deviceScaleFactor": 1, "mobile": True})
    try:
        browser.execute_script("window.scrollTo(0, 0)")
        path = tmp / f"{name}.png"
        assert browser.save_screenshot(str(path))
        if os.environ.get("MASSAGER_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    finally:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE_WIDTH_PX, "height": 780, "deviceScaleFactor": 2, "mobile": True})


def remaining_s(browser: Any) -> int | None:
    """The page's remaining time in seconds (None while it shows none)."""
    shown = text(browser, "remaining")
    if ":" not in shown:
        return None
    minutes, seconds = shown.split(":")
    return int(minutes) * 60 + int(seconds)


# -- the tests ----------------------------------------------------------------------------------------


def test_remote_signs_in_with_provisioned_credentials_and_refuses_wrong_ones(
    browser: Any, device: Device
) -> None:
    open_page(browser, device)
    assert browser.title == "Massager remote"
    assert browser.find_element(By.ID, "login-user").get_attribute("value") == device.host.phone_user
    screenshot(browser, device.tmp, "sign-in")

    sign_in(browser, device, "not-the-password")
    wait_page(browser, "the refusal", lambda b: "not accepted" in text(b, "login-error"))
    assert visible(browser, "login") and not visible(browser, "remote")
    assert text(browser, "link") == "Not signed in"

    sign_in(browser, device, notice=False)
    # First use: the safety notice, word for word the device's own.
    wait_page(browser, "the safety notice",
              lambda b: b.execute_script("return document.getElementById('notice').open"))
    assert text(browser, "notice-text") == SAFETY_NOTICE
    screenshot(browser, device.tmp, "safety-notice")
    click(browser, "notice-ok")
    assert text(browser, "status") == "Ready"
    assert not visible(browser, "login")
    # Signed in again later (the page remembers the login on this phone): no notice the second time.
    open_page(browser, device)
    wait_page(browser, "connected again from the saved login", lambda b: text(b, "link") == "Connected")
    assert not browser.execute_script("return document.getElementById('notice').open")


def test_remote_fits_a_360_px_phone_without_horizontal_scroll(browser: Any, device: Device) -> None:
    open_page(browser, device)
    sign_in(browser, device)
    wait_page(browser, "the program cards", lambda b: len(b.find_elements(By.CSS_SELECTOR, ".program")) >= 5)
    widths = browser.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth, document.body.scrollWidth]")
    assert widths[0] == PHONE_WIDTH_PX
    assert max(widths[1:]) <= PHONE_WIDTH_PX, f"horizontal scroll: {widths}"
    # STOP stays on screen wherever the page is scrolled, and is a large touch target.
    for where in ("0", "document.documentElement.scrollHeight"):
        browser.execute_script(f"window.scrollTo(0, {where})")
        box = browser.execute_script(
            "const r = document.getElementById('stop').getBoundingClientRect();"
            "return [r.top, r.bottom, r.height, r.width, window.innerHeight]")
        assert box[0] >= 0 and box[1] <= box[4], f"STOP off screen: {box}"
        assert box[2] >= 48 and box[3] >= 200, f"STOP too small: {box}"
    # Every control has a name a screen reader reads.
    unnamed = browser.execute_script("""
        return [...document.querySelectorAll('button, input, select')].filter(e => e.getClientRects().length)
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
          .map(e => e.outerHTML.slice(0, 80));""")
    assert unnamed == []
    screenshot(browser, device.tmp, "idle")
    # Keyboard: arrow keys move the intensity choice, and the device follows.
    plant = device.plant
    assert plant is not None
    before = plant.get("state")["intensity"]
    target = 3 if before != 3 else 2
    radio = browser.find_element(By.CSS_SELECTOR, f'input[name="intensity"][value="{target - 1}"]')
    browser.execute_script("arguments[0].focus()", radio)
    radio.send_keys(Keys.SPACE)
    radio.send_keys(Keys.ARROW_RIGHT)
    plant.wait(f"intensity {target} on the device", lambda: plant.get("state")["intensity"] == target)
    # The dark theme follows the phone's setting.
    light = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert dark != light
        screenshot(browser, device.tmp, "idle-dark")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_remote_start_changes_the_plant_and_the_page_follows_it_until_stop(
    browser: Any, device: Device
) -> None:
    plant = device.plant
    assert plant is not None
    open_page(browser, device)
    sign_in(browser, device)
    assert plant.outputs()["foot_rollers"] == 0 and plant.outputs()["pump"] == 0
    card = browser.find_element(By.CSS_SELECTOR, '.program input[value="circulation"]')
    browser.execute_script("arguments[0].closest('label').scrollIntoView({block: 'center'})", card)
    card.find_element(By.XPATH, "..").click()
    plant.wait("the program chosen on the device",
               lambda: (plant.get("state") or {}).get("program") == "circulation")
    click(browser, "start")
    wait_page(browser, "the start confirmed", lambda b: text(b, "result") == "Start: done.")
    # The plant's own outputs move (the pins, not the firmware's report).
    plant.wait("rollers or pump driven on the plant",
               lambda: abs(plant.outputs().get("foot_rollers", 0)) > 0 or plant.outputs().get("pump", 0) > 0)
    wait_page(browser, "running", lambda b: text(b, "status") == "Running")
    # Pressure bars follow the device: a zone the plant inflates shows on the page.
    plant.wait("a zone inflated on the plant",
               lambda: max((plant.get("sim/plant") or {}).get("pressure_mmhg", {"x": 0}).values()) > 10)
    wait_page(browser, "a pressure bar above 10 mmHg", lambda b: any(
        float(v or 0) > 10 for v in b.execute_script(
            "return [...document.querySelectorAll('.bar')].map(e => e.dataset.mmhg)")))
    bar_width = browser.execute_script(
        "return Math.max(...[...document.querySelectorAll('.bar-fill')]"
        ".map(e => parseFloat(e.style.width) || 0))")
    assert bar_width > 5
    # Remaining time counts down with the device's clock.
    first = wait_page(browser, "a remaining time", remaining_s)
    wait_page(browser, "the remaining time to go down", lambda b: (remaining_s(b) or first) < first - 2)
    assert "rollers" in text(browser, "running") or "pump" in text(browser, "running")
    screenshot(browser, device.tmp, "running")

    click(browser, "pause")
    wait_page(browser, "paused", lambda b: text(b, "status") == "Paused")
    plant.wait("the rollers stopped on pause", lambda: plant.outputs().get("foot_rollers") == 0
               and plant.outputs().get("calf_rollers") == 0)
    click(browser, "resume")
    wait_page(browser, "running again", lambda b: text(b, "status") == "Running")
    plant.wait("the rollers driven again",
               lambda: abs(plant.outputs().get("foot_rollers", 0)) > 0 or plant.outputs().get("pump", 0) > 0)

    click(browser, "stop")
    wait_page(browser, "the stop confirmed", lambda b: text(b, "stop-result") == "Stop: done.")
    plant.wait("every output off and every zone vented on the plant", lambda: (
        plant.outputs().get("foot_rollers") == 0 and plant.outputs().get("calf_rollers") == 0
        and plant.outputs().get("pump") == 0 and plant.outputs().get("heater") == 0
        and not any(plant.outputs().get(f"valve_{z}") for z in ("foot", "ankle", "calf"))))
    wait_page(browser, "ready again", lambda b: text(b, "status") == "Ready")


def test_remote_shows_a_plant_fault_and_the_reason_a_reset_is_refused(browser: Any, device: Device) -> None:
    plant = device.plant
    assert plant is not None
    open_page(browser, device)
    sign_in(browser, device)
    assert not visible(browser, "fault")
    plant.inject("thermistor_open")
    plant.wait("a latched fault", lambda: (plant.get("state") or {}).get("fault"))
    code = plant.get("state")["fault"]["code"]
    wait_page(browser, "the fault banner", lambda b: visible(b, "fault") and text(b, "fault-code") == code)
    assert text(browser, "fault-message") == plant.get("state")["fault"]["message"]
    assert "reset" in text(browser, "fault-help").lower() or "service" in text(browser, "fault-help").lower()
    assert text(browser, "status") == "Fault"
    assert browser.find_element(By.ID, "start").get_attribute("disabled") is not None
    # Reset asks to confirm first; the device refuses it while the thermistor is still open, and says why.
    click(browser, "reset")
    assert visible(browser, "reset-confirm")
    click(browser, "reset-confirm")
    wait_page(browser, "the refused reset", lambda b: text(b, "reset-result").startswith("Reset refused:"))
    assert "thermistor" in text(browser, "reset-result")  # the device's own reason
    screenshot(browser, device.tmp, "fault")
    # STOP is accepted while a fault is latched.
    click(browser, "stop")
    wait_page(browser, "the stop confirmed", lambda b: text(b, "stop-result") == "Stop: done.")
    # Once the plant is healthy again the same button resets the fault. (The clear and the page's reset
    # travel on different connections: wait until the plant is healthy and the device has read it so.)
    plant.inject("clear")
    plant.wait("the plant healthy again", lambda: (plant.get("sim/plant") or {}).get("faults") == [])
    plant.wait("both thermistors read again", lambda: all(
        v is not None for v in ((plant.get("state") or {}).get("temperature_c") or {"x": None}).values()))
    click(browser, "reset")
    click(browser, "reset-confirm")
    wait_page(browser, "the banner gone after a reset",
              lambda b: not visible(b, "fault") and text(b, "reset-result") == "Reset: done.", timeout=WAIT_S)


def test_remote_shows_the_child_lock_and_still_runs_and_stops(browser: Any, device: Device) -> None:
    plant = device.plant
    assert plant is not None
    open_page(browser, device)
    sign_in(browser, device)
    assert not visible(browser, "child-lock")
    # The panel is locked (as by holding program + intensity on the device): the page says so.
    plant.client.publish(f"{device.host.base}/cmd", json.dumps({"action": "set", "child_lock": True}), qos=1)
    plant.wait("the lock in the device's state", lambda: (plant.get("state") or {}).get("child_lock") is True)
    wait_page(browser, "the child lock note", lambda b: visible(b, "child-lock"))
    assert "locked" in text(browser, "child-lock")
    # The lock is the device's buttons only: the phone still starts, and STOP stops.
    click(browser, "start")
    plant.wait("outputs driven while locked",
               lambda: abs(plant.outputs().get("foot_rollers", 0)) > 0 or plant.outputs().get("pump", 0) > 0)
    click(browser, "stop")
    wait_page(browser, "the stop confirmed", lambda b: text(b, "stop-result") == "Stop: done.")
    plant.wait("the rollers and the pump off on the plant", lambda: plant.outputs().get("foot_rollers") == 0
               and plant.outputs().get("calf_rollers") == 0 and plant.outputs().get("pump") == 0)
    plant.client.publish(f"{device.host.base}/cmd", json.dumps({"action": "set", "child_lock": False}), qos=1)
    wait_page(browser, "the note gone after unlocking", lambda b: not visible(b, "child-lock"))


def test_remote_shows_offline_and_reconnects_after_a_broker_restart(browser: Any, device: Device) -> None:
    plant = device.plant
    assert plant is not None
    open_page(browser, device)
    sign_in(browser, device)
    device.host.stop_broker()
    wait_page(browser, "the lost connection shown", lambda b: b.execute_script(
        "return document.getElementById('link').dataset.link") == "reconnecting", timeout=15)
    assert "reconnecting" in text(browser, "link")
    click(browser, "stop")
    assert "not connected" in text(browser, "stop-result")
    assert browser.find_element(By.ID, "start").get_attribute("disabled") is not None
    screenshot(browser, device.tmp, "offline")
    device.host.start_broker()
    wait_page(browser, "connected again by itself", lambda b: text(b, "link") == "Connected", timeout=45)
    plant.wait("the firmware back on the broker", lambda: plant.get("availability") == "online", timeout=60)
    click(browser, "stop")
    wait_page(browser, "a command answered after the restart",
              lambda b: text(b, "stop-result") == "Stop: done.", timeout=45)
    # The device going away (its Last Will or its own goodbye) shows as such, not as a broker problem.
    device.stop_firmware()
    wait_page(browser, "device offline shown", lambda b: text(b, "link") == "Device offline")


def test_remote_says_when_the_device_has_no_listener_for_it(browser: Any, device: Device) -> None:
    # A device provisioned without a certificate has no WebSockets listener (no network listener without TLS).
    settings = json.loads((device.tmp / "device.json").read_text())
    (device.tmp / "device.json").write_text(json.dumps({**settings, "websocket_port": None}))
    open_page(browser, device)
    assert visible(browser, "no-listener") and "certificate" in text(browser, "no-listener")
    assert not visible(browser, "login") and not visible(browser, "remote")


def test_remote_gives_way_to_another_phone_with_the_same_user_and_takes_over_on_request(
    browser: Any, device: Device
) -> None:
    open_page(browser, device)
    sign_in(browser, device)
    other = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, transport="websockets")
    other.username_pw_set(device.host.phone_user, device.host.phone_password)
    other.tls_set(ca_certs=str(device.host.ca_file))
    other.reconnect_delay_set(1, 1)  # the other phone reconnects as fast as the page: a tug of war
    other.connect("127.0.0.1", device.host.ws_port)
    other.loop_start()
    try:
        wait_page(browser, "the page giving way", lambda b: text(b, "link") == "In use on another phone or tab",
                  timeout=60)
        assert visible(browser, "take-over")
    finally:
        other.loop_stop()
        other.disconnect()
    click(browser, "take-over")
    wait_page(browser, "connected again after Use here", lambda b: text(b, "link") == "Connected")
    assert not visible(browser, "take-over")
