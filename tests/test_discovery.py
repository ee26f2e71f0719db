"""Home Assistant discovery payloads: every entity, every required key, commands that the device accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from device import __version__
from device.commands import parse_command
from device.discovery import DiscoveryMessage, discovery_messages

# What Home Assistant needs per component for an entity that works (HA MQTT integration docs),
# plus what this project promises for every entity (device block, unique id, availability).
COMMON_KEYS = {
    "name", "unique_id", "device", "availability_topic", "payload_available", "payload_not_available",
}
REQUIRED_KEYS: dict[str, set[str]] = {
    "select": {"command_topic", "command_template", "options", "state_topic", "value_template"},
    "number": {"command_topic", "command_template", "min", "max", "step", "state_topic", "value_template"},
    "switch": {"command_topic", "payload_on", "payload_off", "state_topic", "value_template",
               "state_on", "state_off"},
    "button": {"command_topic", "payload_press"},
    "sensor": {"state_topic", "value_template"},
    "binary_sensor": {"state_topic", "value_template", "payload_on", "payload_off", "device_class"},
}
PROGRAMS = ["relax", "circulation", "deep_knead"]


def _messages(**overrides: Any) -> dict[str, DiscoveryMessage]:
    args: dict[str, Any] = {
        "device_id": "unit7",
        "topic_prefix": "massager",
        "discovery_prefix": "homeassistant",
        "programs": PROGRAMS,
        "thermistors": ["pad_1", "pad_2"],
        "timer_max_min": 30,
    }
    args.update(overrides)
    return {m.object_id: m for m in discovery_messages(**args)}


def _render(template: str, value: Any) -> str:
    """Render the two Jinja forms the templates use ({{ value | tojson }}, {{ value | int }})."""
    if "{{ value | tojson }}" in template:
        return template.replace("{{ value | tojson }}", json.dumps(value))
    if "{{ value | float }}" in template:
        return template.replace("{{ value | float }}", str(float(value)))
    return template.replace("{{ value | int }}", str(int(value)))


def test_discovery_has_every_entity_of_the_contract() -> None:
    msgs = _messages()
    expected = {
        "program": "select", "intensity": "number", "heat": "switch", "timer": "number",
        "heat_target": "number",
        "start": "button", "stop": "button", "reset_fault": "button",
        "temperature_pad_1": "sensor", "temperature_pad_2": "sensor",
        "pressure_foot": "sensor", "pressure_ankle": "sensor", "pressure_calf": "sensor",
        "remaining": "sensor", "status": "sensor", "fault": "binary_sensor",
    }
    assert {k: m.component for k, m in msgs.items()} == expected


def test_discovery_every_payload_has_the_required_keys_for_its_component() -> None:
    for msg in _messages().values():
        missing = (COMMON_KEYS | REQUIRED_KEYS[msg.component]) - msg.config.keys()
        assert not missing, f"{msg.topic} lacks {missing}"
        assert msg.topic == f"homeassistant/{msg.component}/unit7/{msg.object_id}/config"
        assert msg.config["availability_topic"] == "massager/unit7/availability"
        assert msg.config["payload_available"] == "online"
        assert msg.config["payload_not_available"] == "offline"
        for key in ("state_topic", "json_attributes_topic"):
            if key in msg.config:
                assert msg.config[key] == "massager/unit7/state"
        if "command_topic" in msg.config:
            assert msg.config["command_topic"] == "massager/unit7/cmd"
        assert json.loads(msg.payload()) == msg.config


def test_discovery_unique_ids_are_unique_and_name_the_device() -> None:
    ids = [m.config["unique_id"] for m in _messages().values()]
    assert len(ids) == len(set(ids))
    assert all("unit7" in i for i in ids)


def test_discovery_device_block_is_shared_with_version() -> None:
    blocks = [m.config["device"] for m in _messages().values()]
    assert all(b == blocks[0] for b in blocks)
    assert blocks[0]["identifiers"] == ["massager_unit7"]
    assert blocks[0]["sw_version"] == __version__
    assert {"name", "manufacturer", "model"} <= blocks[0].keys()


def test_discovery_program_select_lists_the_library_and_builds_a_set_command() -> None:
    program = _messages()["program"].config
    assert program["options"] == PROGRAMS
    command = parse_command(json.loads(_render(program["command_template"], "deep_knead")))
    assert command.action == "set" and command.program == "deep_knead"  # type: ignore[union-attr]
    # a name with quotes stays one JSON string (tojson), never breaks the document
    odd = json.loads(_render(program["command_template"], 'a"b'))
    assert odd == {"action": "set", "program": 'a"b'}


def test_discovery_numbers_have_the_contract_ranges_and_valid_commands() -> None:
    msgs = _messages(timer_max_min=20)
    intensity, timer = msgs["intensity"].config, msgs["timer"].config
    assert (intensity["min"], intensity["max"], intensity["step"]) == (1, 5, 1)
    assert (timer["min"], timer["max"], timer["unit_of_measurement"]) == (5, 20, "min")
    cmd = parse_command(json.loads(_render(intensity["command_template"], 4.0)))
    assert (cmd.action, cmd.intensity) == ("set", 4)  # type: ignore[union-attr]
    cmd = parse_command(json.loads(_render(timer["command_template"], 15)))
    assert (cmd.action, cmd.timer_min) == ("set", 15)  # type: ignore[union-attr]


def test_discovery_heat_switch_and_buttons_send_valid_commands() -> None:
    msgs = _messages()
    heat = msgs["heat"].config
    on, off = parse_command(json.loads(heat["payload_on"])), parse_command(json.loads(heat["payload_off"]))
    assert (on.action, on.heat, off.heat) == ("set", True, False)  # type: ignore[union-attr]
    for action in ("start", "stop", "reset_fault"):
        assert parse_command(json.loads(msgs[action].config["payload_press"])).action == action


@pytest.mark.parametrize(
    ("object_id", "device_class", "unit"),
    [("temperature_pad_1", "temperature", "°C"), ("pressure_calf", "pressure", "mmHg"),
     ("remaining", "duration", "s")],
)
def test_discovery_sensors_carry_units_and_device_classes(object_id: str, device_class: str, unit: str) -> None:
    config = _messages()[object_id].config
    assert config["device_class"] == device_class
    assert config["unit_of_measurement"] == unit


def test_discovery_value_templates_point_at_state_fields() -> None:
    msgs = _messages()
    assert msgs["temperature_pad_2"].config["value_template"] == "{{ value_json.temperature_c.pad_2 }}"
    assert msgs["pressure_ankle"].config["value_template"] == "{{ value_json.pressure_mmhg.ankle }}"
    assert msgs["remaining"].config["value_template"] == "{{ value_json.remaining_s }}"
    assert msgs["status"].config["options"] == ["idle", "running", "paused", "finishing", "fault"]
    assert msgs["fault"].config["device_class"] == "problem"


def test_discovery_follows_the_configured_prefixes() -> None:
    msgs = _messages(topic_prefix="spa", discovery_prefix="ha")
    assert msgs["status"].topic == "ha/sensor/unit7/status/config"
    assert msgs["status"].config["state_topic"] == "spa/unit7/state"


def test_discovery_heat_target_number_follows_the_configured_range() -> None:
    heat_target = _messages(heat_target_max_c=41.0)["heat_target"].config
    assert (heat_target["min"], heat_target["max"], heat_target["unit_of_measurement"]) == (35.0, 41.0, "°C")
    assert heat_target["value_template"] == "{{ value_json.heat_target_c }}"
    cmd = parse_command(json.loads(_render(heat_target["command_template"], 38.5)))
    assert (cmd.action, cmd.heat_target_c) == ("set", 38.5)  # type: ignore[union-attr]
