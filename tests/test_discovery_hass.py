"""Discovery payloads checked by Home Assistant's own MQTT schemas and template engine.

Home Assistant lives in its own venv (it pins paho-mqtt 1.x; the firmware needs 2.x): ``.venv-hass``,
made by ``scripts/hass-check --install`` (or set HASS_PYTHON). Without it these tests are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from device.commands import parse_command
from device.config import DeviceInfo
from device.discovery import discovery_messages
from modes.library import load_library
from tests.test_discovery import FAULT, IDLE, RUNNING

REPO = Path(__file__).resolve().parent.parent
HASS_PYTHON = Path(os.environ.get("HASS_PYTHON", REPO / ".venv-hass" / "bin" / "python"))

pytestmark = pytest.mark.skipif(
    not HASS_PYTHON.exists(), reason=f"no Home Assistant venv at {HASS_PYTHON} (scripts/hass-check --install)"
)


def _validate(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "device_id": "unit7", "topic_prefix": "massager", "discovery_prefix": "homeassistant",
        "programs": load_library(None)[0].names(), "thermistors": ["pad_1", "pad_2"], "timer_max_min": 30,
    }
    args.update(overrides)
    messages = discovery_messages(**args)
    data = {"messages": [{"component": m.component, "object_id": m.object_id, "config": m.config}
                         for m in messages],
            "states": [IDLE, RUNNING, FAULT]}
    proc = subprocess.run([str(HASS_PYTHON), str(REPO / "tests" / "hass_validate.py")], input=json.dumps(data),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def checked() -> dict[str, Any]:
    info = DeviceInfo(name="Living room massager", hw_version="rev C", suggested_area="Living room",
                      web_remote=True)
    return _validate(info=info, serial_number="10000000abcd",
                     configuration_url=info.resolved_configuration_url("unit7"))


def test_discovery_passes_home_assistants_schemas_and_templates(checked: dict[str, Any]) -> None:
    assert checked["version"].startswith("2024.3")
    assert checked["problems"] == []
    assert set(checked["ignored"]) <= {"status.options", "phase.options"}  # read by newer versions


def test_discovery_values_rendered_by_home_assistant(checked: dict[str, Any]) -> None:
    rendered = checked["rendered"]
    assert rendered["status"] == ["Idle", "Running", "Fault"]
    assert rendered["phase"] == ["Not running", "Warm-up", "Not running"]
    assert rendered["heating"] == ["OFF", "ON", "OFF"]
    assert rendered["ends_at"][1] == "2026-12-02T08:13:32+00:00"  # (unavailable outside a session)
    assert rendered["skip_zones"] == ["None", "Foot and calf", "None"]
    assert rendered["last_fault"] == ["None", "Over temperature", "None"]


def test_discovery_commands_rendered_by_home_assistant_are_accepted(checked: dict[str, Any]) -> None:
    for key, commands in checked["rendered"].items():
        if not key.endswith(".commands"):
            continue
        for text in commands:
            document = json.loads(text)
            assert parse_command(document).action == "set", (key, document)
