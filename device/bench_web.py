"""The phone remote's figures (issue 14): tap-to-output latency through the WebSockets listener, page weight,
time to live state. ``python -m device.bench_web [--json] [--quick]``; needs chromium, chromium-driver,
lighttpd and mosquitto (scripts/bootstrap), like the browser tests.

Kept apart from device/bench.py (``massager bench``) so the two can change independently; ``run_web_bench``
returns one JSON-ready dict that ``massager bench`` can add under ``"web"``.

- ``tap``: a click on the page's Start button (dispatched in the page) to the relay pin switching on, through
  the page's MQTT client, the broker's WebSockets listener and the firmware. The two ends are timed on the
  same wall clock (the page's ``performance.timeOrigin + now()``, the mock pin's change time).
- ``command_plain``: the same command from a Python client on the plain listener.
- ``broker_ws`` / ``broker_plain``: the broker's own publish -> receive latency between two clients, over
  WebSockets and over plain TCP, in the same run.
- ``page``: bytes transferred for the page (all resources, as the browser counts them) and the time from
  navigation to the first live state, on an unthrottled connection and on a slow one (Chrome's network
  emulation: 150 ms round trip, 1.6 Mbit/s down, 750 kbit/s up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from device.bench import summary
from device.config import load_config
from device.remote import RemoteHost

TARGET_TAP_OVER_BROKER_MS = 15.0  # tap p99 within the broker's p99 + this
TARGET_PAGE_BYTES = 150_000
SLOW_NETWORK = {"offline": False, "latency": 150, "downloadThroughput": 1_600_000 / 8,
                "uploadThroughput": 750_000 / 8}


def _browser(scratch: Path) -> Any:
    """Headless Chromium as a phone; its temporary files in ``scratch``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--ignore-certificate-errors"):  # the bench's self-signed certificate on the wss listener
        options.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver",
                      env={**os.environ, "TMPDIR": str(scratch)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 360, "height": 780, "deviceScaleFactor": 2, "mobile": True})
    return driver


def _wait(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError("bench_web: a condition did not come true in time")


def _sign_in(driver: Any, host: RemoteHost) -> None:
    """Store the login and the notice as read, so every load connects at once (as on a phone in use)."""
    driver.get(host.url)
    login = json.dumps({"user": host.phone_user, "password": host.phone_password})
    driver.execute_script(
        "localStorage.setItem('massager.login', arguments[0]);"
        "localStorage.setItem('massager.notice-read', '1')",
        login,
    )


def page_figures(driver: Any, host: RemoteHost, *, slow: bool) -> dict[str, Any]:
    """Transferred bytes and navigation -> first live state (ms), with a cold cache."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    conditions = SLOW_NETWORK if slow else {"offline": False, "latency": 0, "downloadThroughput": -1,
                                            "uploadThroughput": -1}
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", conditions)
    try:
        driver.get(host.url)
        first = _wait(lambda: driver.execute_script("return window.massagerRemote && "
                                                    "window.massagerRemote.firstStateAt"), timeout=60)
        transferred = driver.execute_script(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".reduce((sum, e) => sum + (e.transferSize || 0), 0)")
    finally:
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                    "downloadThroughput": -1,
                                                                    "uploadThroughput": -1})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": False})
    return {"transferred_bytes": int(transferred), "first_state_ms": round(float(first), 1)}


def broker_latency(port: int, trials: int, *, user: str, password: str, websockets: bool,
                   ca_file: Path | None = None) -> list[float]:
    """Publish -> receive between two clients of the broker (plain TCP or WebSockets)."""
    import paho.mqtt.client as mqtt

    received = threading.Event()
    clients = []
    for name, login in (("sub", user), ("pub", f"{user}-2")):  # one user a connection
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-web-{name}",
                             transport="websockets" if websockets else "tcp")
        client.username_pw_set(login, password)
        if websockets and ca_file is not None:
            client.tls_set(ca_certs=str(ca_file))
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append(client)
    sub, pub = clients
    topic = "massager/sim/bench/ping"
    sub.on_message = lambda _c, _u, _m: received.set()
    sub.subscribe(topic, qos=0)
    time.sleep(0.5)
    latencies = []
    for _ in range(trials):
        received.clear()
        t0 = time.monotonic()
        pub.publish(topic, b"x", qos=0)
        if received.wait(2.0):
            latencies.append(time.monotonic() - t0)
        time.sleep(0.01)
    for c in clients:
        c.loop_stop()
        c.disconnect()
    return latencies


async def _firmware_trials(host: RemoteHost, driver: Any, trials: int, workdir: Path) -> dict[str, list[float]]:
    """The firmware in-process; ``trials`` taps on the page and ``trials`` plain-MQTT starts."""
    import paho.mqtt.client as mqtt

    from device.bench import AppProbe, bench_app

    config = load_config(None, {
        "state_dir": str(workdir / "state"), "programs_dir": None, "device_id": host.device_id,
        "panel.buzzer_muted": True, "mqtt.host": "127.0.0.1", "mqtt.port": host.mqtt_port,
        "mqtt.username": host.device_id, "mqtt.password": host.device_password, "mqtt.discovery": False,
    })
    app = bench_app(config)
    out: dict[str, list[float]] = {"tap": [], "command_plain": []}
    offset = time.time() - time.monotonic()  # the mock pins stamp changes with time.monotonic()

    async def runner(app: Any) -> None:
        await app.ready.wait()
        probe = AppProbe(app)
        # Not the phone user: the page holds that one (a broker may tie client ids to user names).
        phone = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-web-plain")
        phone.username_pw_set("developer-2", host.developer_password)
        phone.connect("127.0.0.1", host.mqtt_port)
        phone.loop_start()
        try:
            await asyncio.to_thread(_sign_in, driver, host)
            await asyncio.to_thread(driver.get, host.url)
            start_enabled = ("const b = document.getElementById('start');"
                             "return document.body.dataset.link === 'connected' && !b.disabled")
            for _ in range(trials):
                await probe.reset()
                await asyncio.to_thread(_wait, lambda: driver.execute_script(start_enabled))
                await asyncio.sleep(0.05 + random.uniform(0.0, 0.05))
                await asyncio.to_thread(driver.execute_script, "document.getElementById('start').click()")
                on_at = await probe.relay_on_at(time.monotonic())
                sent = await asyncio.to_thread(driver.execute_script, "return window.massagerRemote.lastSent")
                if on_at is not None and sent and sent.get("action") == "start":
                    out["tap"].append(on_at + offset - sent["at"] / 1000.0)
            topic = f"{host.base}/cmd"
            start = json.dumps({"action": "start", "program": "relax", "intensity": 3}).encode()
            for _ in range(trials):
                await probe.reset()
                await asyncio.sleep(0.05 + random.uniform(0.0, 0.05))
                t0 = time.monotonic()
                phone.publish(topic, start, qos=0)
                on_at = await probe.relay_on_at(t0)
                if on_at is not None:
                    out["command_plain"].append(on_at - t0)
            await probe.reset()
        finally:
            phone.loop_stop()
            phone.disconnect()
            app.stop_event.set()

    app.extra_tasks["bench_web"] = runner
    await app.run()
    return out


def run_web_bench(trials: int = 50) -> dict[str, Any]:
    """Every figure of the phone remote; one JSON-ready dict."""
    started = time.monotonic()
    results: dict[str, Any] = {"trials": trials}
    with tempfile.TemporaryDirectory(prefix="massager-bench-web-") as tmp:
        workdir = Path(tmp)
        host = RemoteHost(workdir).start()
        driver = _browser(workdir)
        try:
            _sign_in(driver, host)
            results["broker_plain"] = summary(broker_latency(
                host.mqtt_port, trials, user="developer", password=host.developer_password, websockets=False))
            results["broker_ws"] = summary(broker_latency(
                host.ws_port, trials, user="developer", password=host.developer_password, websockets=True,
                ca_file=host.ca_file))
            measured = asyncio.run(_firmware_trials(host, driver, trials, workdir))
            results["tap"] = summary(measured["tap"])
            results["command_plain"] = summary(measured["command_plain"])
            # Page figures need a device online: a second, plain firmware process is not needed, since
            # the retained state of the in-process run stays on the broker.
            results["page"] = page_figures(driver, host, slow=False)
            results["page_slow_network"] = page_figures(driver, host, slow=True)
        finally:
            driver.quit()
            host.stop()
    tap, base = results["tap"], results["broker_plain"]
    both = bool(tap.get("n") and base.get("n"))
    results["targets"] = {
        "tap.p99_over_broker": {
            "value": round(tap["p99"] - base["p99"], 3) if both else None,
            "target": TARGET_TAP_OVER_BROKER_MS,
            "met": both and tap["p99"] - base["p99"] <= TARGET_TAP_OVER_BROKER_MS,
        },
        "page.transferred_bytes": {
            "value": results["page"]["transferred_bytes"], "target": TARGET_PAGE_BYTES,
            "met": results["page"]["transferred_bytes"] < TARGET_PAGE_BYTES,
        },
    }
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results


def render(results: dict[str, Any]) -> str:
    """A readable table."""
    lines = [f"phone remote bench: {results['trials']} trials, {os.cpu_count()} CPUs"]
    for key in ("broker_plain", "broker_ws", "command_plain", "tap"):
        s = results[key]
        if s.get("n"):
            lines.append(f"  {key:<16} n={s['n']:<4} p50 {s['p50']:8.2f} ms  p99 {s['p99']:8.2f} ms"
                         f"  max {s['max']:8.2f} ms")
    for key in ("page", "page_slow_network"):
        p = results[key]
        lines.append(f"  {key:<16} {p['transferred_bytes']} bytes transferred, first live state "
                     f"{p['first_state_ms']:.0f} ms after navigation")
    for key, v in results["targets"].items():
        lines.append(f"  {'met ' if v['met'] else 'MISS'} {key:<28} {v['value']} (target {v['target']})")
    lines.append(f"took {results['duration_s']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m device.bench_web [--json] [--quick] [--trials N]``."""
    parser = argparse.ArgumentParser(prog="python -m device.bench_web", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10 trials")
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    results = run_web_bench(10 if args.quick else args.trials)
    print(json.dumps(results, indent=1) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
