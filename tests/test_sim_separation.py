"""The product knows nothing of the simulator: its modules load no simulation code, the sim rig brings its
own MQTT topics through the bridge's extension point, and the unit's Wi-Fi is read only where it has one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.config import Config
from device.harness import SimUnit
from device.mqtt import MqttBridge
from device.sim import FAULT_REPLY_TOPIC, FAULT_TOPIC, PLANT_TOPIC
from device.tasks import MqttExtension, MqttRequest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("device.api", "device.mqtt", "device.panel", "device.controller", "device.hardware",
           "device.safety", "device.tasks", "device.app", "device.cli")
SIMULATION = ("drivers.sim", "device.sim", "device.harness", "device.dashboard")


def test_product_modules_load_no_simulation_code() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {PRODUCT!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(n for n in sys.modules if n.startswith({SIMULATION!r}))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == []


def test_sim_app_brings_the_sim_topics_through_the_bridge_extension_point(config: Config) -> None:
    unit = SimUnit(config)
    try:
        (extension,) = unit.app.mqtt_extensions
        assert [(r.topic, r.reply) for r in extension.requests] == [(FAULT_TOPIC, FAULT_REPLY_TOPIC)]
        assert [(f.topic, f.every_s) for f in extension.feeds] == [(PLANT_TOPIC, 0.1)]
        bridge = MqttBridge(unit.app)
        base = bridge.topics.base
        assert list(bridge.requests) == [f"{base}/sim/fault"]
        heard: list[str] = []
        unit.app.device.subscribe(heard.append)
        answer = extension.requests[0].answer(b'{"fault": "leak", "zone": "calf", "rate": 0.5, "id": "a1"}')
        assert answer == {"id": "a1", "ok": True, "error": None, "result": "plant fault leak injected"}
        assert "leak" in unit.plant.faults and heard == ["sim_fault"]  # state listeners hear of it
        refused = extension.requests[0].answer(b'{"fault": "melt"}')
        assert refused["ok"] is False and refused["error"]
    finally:
        unit.close()


@pytest.mark.parametrize(("topic", "reply"), [("#", "x/reply"), ("sim/+", "x/reply"), ("/sim/fault", "x/reply"),
                                              ("", "x/reply"), ("x", "x/#")])
def test_bridge_refuses_an_extension_topic_outside_the_device_base(
    config: Config, topic: str, reply: str
) -> None:
    unit = SimUnit(config)
    try:
        request = MqttRequest(topic, reply, lambda _payload: {})
        unit.app.mqtt_extensions.append(MqttExtension(requests=(request,)))
        with pytest.raises(ValueError, match="extension topic"):
            MqttBridge(unit.app)
    finally:
        unit.close()


def test_wifi_signal_is_read_only_where_the_unit_has_its_own(config: Config) -> None:
    unit = SimUnit(config)
    try:
        assert unit.app.device.wifi_signal is None  # the host's Wi-Fi is not the simulated unit's
        assert unit.app.device.state()["wifi_dbm"] is None
        unit.app.device.wifi_signal = lambda: -61
        assert unit.app.device.state()["wifi_dbm"] == -61
    finally:
        unit.close()
