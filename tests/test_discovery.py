"""Home Assistant discovery payloads: every entity, its keys and category, templates rendered as Home
Assistant renders them (Jinja2) against real state payloads, and commands that the device accepts."""

from __future__ import annotations

import datetime
import json
from typing import Any

import jinja2
import jinja2.sandbox
import pytest

from device import __version__
from device.commands import parse_command
from device.config import DeviceInfo
from device.discovery import (
    EVENT_TYPES,
    HEAT_TARGET_STEP_C,
    NOT_RUNNING,
    DiscoveryMessage,
    discovery_messages,
    display_names,
    skip_options,
)

COMMON_KEYS = {"name", "unique_id", "object_id", "device", "origin"}
AVAILABILITY_KEYS = {"availability_topic", "payload_available", "payload_not_available"}
REQUIRED_KEYS: dict[str, set[str]] = {
    "select": {"command_topic", "command_template", "options", "state_topic", "value_template"},
    "number": {"command_topic", "command_template", "min", "max", "step", "state_topic", "value_template"},
    "switch": {"command_topic", "payload_on", "payload_off", "state_topic", "value_template",
               "state_on", "state_off"},
    "button": {"command_topic", "payload_press"},
    "sensor": {"state_topic", "value_template"},
    "binary_sensor": {"state_topic", "payload_on", "payload_off", "device_class"},
    "event": {"state_topic", "event_types"},
    "update": {"state_topic", "value_template", "command_topic", "payload_install"},
}
PROGRAMS = ["relax", "circulation", "deep_knead", "quick_boost"]
ENTITIES = {
    "massage": "switch", "program": "select", "intensity": "number", "heat": "switch",
    "start": "button", "stop": "button", "pause": "button", "resume": "button", "reset_fault": "button",
    "status": "sensor", "phase": "sensor", "remaining": "sensor", "ends_at": "sensor",
    "heating": "binary_sensor", "fault": "binary_sensor", "last_problem": "sensor", "problem": "event",
    "heat_target_unreachable": "binary_sensor",
    "timer": "number", "heat_target": "number", "skip_zones": "select", "child_lock": "switch",
    "temperature_pad_1": "sensor", "temperature_pad_2": "sensor",
    "pressure_foot": "sensor", "pressure_ankle": "sensor", "pressure_calf": "sensor",
    "connection": "binary_sensor", "wifi_signal": "sensor", "last_boot": "sensor", "sessions": "sensor",
    "run_hours": "sensor", "fault_count": "sensor", "last_fault": "sensor", "sensor_doubt": "binary_sensor",
    "storage": "binary_sensor", "firmware": "sensor", "firmware_update": "update",
}
CONFIG = {"timer", "heat_target", "skip_zones", "child_lock", "firmware_update"}
DIAGNOSTIC = {"temperature_pad_1", "temperature_pad_2", "pressure_foot", "pressure_ankle", "pressure_calf",
              "connection", "wifi_signal", "last_boot", "sessions", "run_hours", "fault_count", "last_fault",
              "sensor_doubt", "storage", "firmware"}

IDLE: dict[str, Any] = {
    "status": "idle", "program": "relax", "phase": None, "intensity": 2, "heat": False,
    "heat_target_c": 40.0, "timer_min": 15, "remaining_s": None, "skip_zones": [],
    "temperature_c": {"pad_1": 24.9, "pad_2": None}, "pressure_mmhg": {"foot": 0.2, "ankle": 0.0, "calf": 0.1},
    "outputs": {}, "fault": None, "warnings": [], "sensor_doubt": None, "child_lock": False,
    "storage_error": None, "ends_at": None, "last_problem": None, "boot_at": "2026-12-02T08:00:00+00:00",
    "firmware": __version__, "usage": {"sessions": 0, "session_h": 0.0, "faults": 0, "last_fault": None},
    "wifi_dbm": None,
}
RUNNING: dict[str, Any] = {
    **IDLE, "status": "running", "program": "deep_knead", "phase": "warm_up", "heat": True, "remaining_s": 812,
    "skip_zones": ["foot", "calf"], "outputs": {"heater": 0.4, "pump": 1.0}, "child_lock": True,
    "warnings": [{"code": "HEAT_TARGET_UNREACHABLE", "message": "the pad gained 0.2 °C in 60 s"}],
    "ends_at": "2026-12-02T08:13:32+00:00", "wifi_dbm": -61,
    "usage": {"sessions": 3, "session_h": 1.25, "faults": 1, "last_fault": "OVER_TEMPERATURE"},
    "last_problem": {"kind": "refused", "code": "start", "summary": "Start refused", "message": "action: ...",
                     "at": "2026-12-02T08:01:00+00:00"},
}
FAULT: dict[str, Any] = {
    **IDLE, "status": "fault", "sensor_doubt": "thermistor pad_2 open", "storage_error": "disk full",
    "fault": {"code": "OVER_TEMPERATURE", "message": "pad_1 reads 45.3 °C", "since": 1796198400.25},
}


def _timestamp_custom(value: Any, fmt: str, local: bool = True) -> str:
    """Home Assistant's filter, for UTC (local=False) as the templates use it."""
    assert local is False
    return datetime.datetime.fromtimestamp(float(value), datetime.UTC).strftime(fmt)


JINJA = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.Undefined)
JINJA.filters["timestamp_custom"] = _timestamp_custom


def render(template: str, **variables: Any) -> str:
    """A template rendered the way Home Assistant's MQTT integration does (value / value_json)."""
    return JINJA.from_string(template).render(**variables).strip()


def value_of(config: dict[str, Any], state: dict[str, Any]) -> str:
    return render(config["value_template"], value_json=state, value=json.dumps(state))


def command_of(config: dict[str, Any], value: Any) -> Any:
    return parse_command(json.loads(render(config["command_template"], value=value)))


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


def test_discovery_has_every_entity_of_the_contract() -> None:
    assert {k: m.component for k, m in _messages().items()} == ENTITIES


def test_discovery_every_payload_has_the_required_keys_for_its_component() -> None:
    for msg in _messages().values():
        required = COMMON_KEYS | REQUIRED_KEYS[msg.component]
        if msg.object_id not in ("connection", "ends_at"):
            required |= AVAILABILITY_KEYS
        missing = required - msg.config.keys()
        assert not missing, f"{msg.topic} lacks {missing}"
        assert msg.topic == f"homeassistant/{msg.component}/unit7/{msg.object_id}/config"
        if "availability_topic" in msg.config:
            assert msg.config["availability_topic"] == "massager/unit7/availability"
            pair = (msg.config["payload_available"], msg.config["payload_not_available"])
            assert pair == ("online", "offline")
        if "command_topic" in msg.config:
            assert msg.config["command_topic"] == "massager/unit7/cmd"
        assert json.loads(msg.payload()) == msg.config


def test_discovery_connection_follows_the_availability_topic_itself() -> None:
    connection = _messages()["connection"].config
    assert AVAILABILITY_KEYS.isdisjoint(connection)  # never "unavailable": off when the device is gone
    assert connection["state_topic"] == "massager/unit7/availability"
    assert (connection["payload_on"], connection["payload_off"]) == ("online", "offline")
    assert connection["device_class"] == "connectivity"


def test_discovery_unique_ids_and_entity_ids_are_unique_and_name_the_device() -> None:
    configs = [m.config for m in _messages().values()]
    for key in ("unique_id", "object_id"):
        ids = [c[key] for c in configs]
        assert len(ids) == len(set(ids)) and all(i.startswith("massager_unit7_") for i in ids)


def test_discovery_entity_categories() -> None:
    for object_id, msg in _messages().items():
        expected = "config" if object_id in CONFIG else "diagnostic" if object_id in DIAGNOSTIC else None
        assert msg.config.get("entity_category") == expected, object_id


def test_discovery_every_entity_without_a_device_class_icon_has_an_icon() -> None:
    for object_id, msg in _messages().items():
        if msg.component in ("button", "select", "switch", "number", "event") or (
            msg.component == "sensor" and "device_class" not in msg.config
        ):
            assert msg.config.get("icon", "").startswith("mdi:"), object_id


def test_discovery_device_block_defaults_and_origin() -> None:
    msgs = _messages()
    blocks = [m.config["device"] for m in msgs.values()]
    assert all(b == blocks[0] for b in blocks)
    assert blocks[0] == {
        "identifiers": ["massager_unit7"], "name": "Massager unit7",
        "manufacturer": "Massager firmware project",
        "model": "Shiatsu foot-and-calf massager", "sw_version": __version__, "serial_number": "unit7",
    }
    assert all(m.config["origin"] == {"name": "massager firmware", "sw_version": __version__}
               for m in msgs.values())


def test_discovery_device_block_from_the_config() -> None:
    info = DeviceInfo(name="Grandma's massager", manufacturer="Acme", model="FC-2", hw_version="rev C",
                      suggested_area="Living room", web_remote=True)
    device = _messages(info=info, serial_number="10000000abcd",
                       configuration_url=info.resolved_configuration_url("unit7"))["status"].config["device"]
    assert device == {
        "identifiers": ["massager_unit7"], "name": "Grandma's massager", "manufacturer": "Acme",
        "model": "FC-2",
        "sw_version": __version__, "serial_number": "10000000abcd", "hw_version": "rev C",
        "suggested_area": "Living room", "configuration_url": "http://unit7.local/",
    }
    assert DeviceInfo(serial_number="SN-1").resolved_configuration_url("x") is None
    explicit = DeviceInfo(serial_number="SN-1", web_remote=True, configuration_url="https://a.example/m")
    assert explicit.resolved_configuration_url("x") == "https://a.example/m"
    assert _messages(info=explicit, serial_number="pi")["status"].config["device"]["serial_number"] == "SN-1"


@pytest.mark.parametrize("state", [IDLE, RUNNING, FAULT], ids=["idle", "running", "fault"])
def test_discovery_every_value_template_renders_on_real_states(state: dict[str, Any]) -> None:
    for object_id, msg in _messages().items():
        config = msg.config
        if "value_template" in config:
            value = value_of(config, state)
            assert value, object_id
            if "options" in config:
                assert value in config["options"], (object_id, value)
            if msg.component in ("switch", "binary_sensor"):
                assert value in ("ON", "OFF"), (object_id, value)
        if "json_attributes_template" in config:
            attrs = json.loads(render(config["json_attributes_template"], value_json=state))
            assert isinstance(attrs, dict), object_id


def test_discovery_states_read_as_words() -> None:
    msgs = {k: m.config for k, m in _messages().items()}
    assert value_of(msgs["status"], RUNNING) == "Running"
    assert value_of(msgs["status"], FAULT) == "Fault"
    assert msgs["status"]["options"] == ["Idle", "Running", "Paused", "Finishing", "Fault"]
    assert value_of(msgs["phase"], RUNNING) == "Warm-up"
    assert value_of(msgs["phase"], IDLE) == NOT_RUNNING
    assert msgs["phase"]["options"] == ["Warm-up", "Work", "Cool-down", NOT_RUNNING]
    assert value_of(msgs["program"], RUNNING) == "Deep knead"
    assert value_of(msgs["last_fault"], RUNNING) == "Over temperature"
    assert value_of(msgs["last_problem"], RUNNING) == "Start refused"
    assert value_of(msgs["last_problem"], IDLE) == "None"  # Home Assistant's "no value" (unknown)
    assert value_of(msgs["ends_at"], RUNNING) == "2026-12-02T08:13:32+00:00"


def test_discovery_ends_at_is_unavailable_outside_a_session_and_always_a_timestamp() -> None:
    ends_at = _messages()["ends_at"].config
    assert ends_at["availability_mode"] == "all"
    device, session = ends_at["availability"]
    assert device == {"topic": "massager/unit7/availability", "payload_available": "online",
                      "payload_not_available": "offline"}
    assert session["topic"] == "massager/unit7/state"
    for state, online in ((IDLE, "offline"), (RUNNING, "online"), (FAULT, "offline")):
        assert render(session["value_template"], value_json=state) == online
        assert datetime.datetime.fromisoformat(value_of(ends_at, state)).tzinfo is not None


def test_discovery_problem_states() -> None:
    msgs = {k: m.config for k, m in _messages().items()}
    assert value_of(msgs["heating"], RUNNING) == "ON" and value_of(msgs["heating"], IDLE) == "OFF"
    assert value_of(msgs["heat_target_unreachable"], RUNNING) == "ON"
    assert value_of(msgs["heat_target_unreachable"], IDLE) == "OFF"
    assert value_of(msgs["fault"], FAULT) == "ON" and value_of(msgs["fault"], IDLE) == "OFF"
    attrs = json.loads(render(msgs["fault"]["json_attributes_template"], value_json=FAULT))
    assert attrs == {"code": "OVER_TEMPERATURE", "message": "pad_1 reads 45.3 °C",
                     "since": "2026-12-02T08:00:00+00:00"}
    assert datetime.datetime.fromisoformat(attrs["since"]).timestamp() == 1796198400
    assert value_of(msgs["sensor_doubt"], FAULT) == "ON" and value_of(msgs["storage"], FAULT) == "ON"
    assert value_of(msgs["massage"], RUNNING) == "ON" and value_of(msgs["massage"], FAULT) == "OFF"
    assert msgs["problem"]["event_types"] == list(EVENT_TYPES)
    assert msgs["problem"]["state_topic"] == "massager/unit7/event"


def test_discovery_program_select_round_trips_every_program() -> None:
    program = _messages()["program"].config
    assert program["options"] == ["Relax", "Circulation", "Deep knead", "Quick boost"]
    for name, shown in zip(PROGRAMS, program["options"], strict=True):
        command = command_of(program, shown)
        assert (command.action, command.program) == ("set", name)  # type: ignore[union-attr]
        assert value_of(program, {**IDLE, "program": name}) == shown
    # a name with quotes stays one JSON string (tojson), never breaks the document
    assert json.loads(render(program["command_template"], value='a"b')) == {"action": "set", "program": 'a"b'}


def test_discovery_program_names_that_would_read_alike_stay_as_they_are() -> None:
    names = ["deep_knead", "Deep knead"]
    assert display_names(names) == {name: name for name in names}


def test_discovery_skip_zones_select_round_trips_every_choice() -> None:
    select = _messages()["skip_zones"].config
    assert select["options"] == ["None", "Foot", "Ankle", "Calf", "Foot and ankle", "Foot and calf",
                                 "Ankle and calf", "All zones"]
    for zones, shown in skip_options(("foot", "ankle", "calf")).items():
        command = command_of(select, shown)
        assert command.skip_zones == list(zones)  # type: ignore[union-attr]
        assert value_of(select, {**IDLE, "skip_zones": list(zones)}) == shown


def test_discovery_numbers_have_the_contract_ranges_and_valid_commands() -> None:
    msgs = _messages(timer_max_min=20)
    intensity, timer = msgs["intensity"].config, msgs["timer"].config
    assert (intensity["min"], intensity["max"], intensity["step"]) == (1, 5, 1)
    assert (timer["min"], timer["max"], timer["unit_of_measurement"], timer["device_class"]) == (
        5, 20, "min", "duration")
    cmd = command_of(intensity, 4.0)
    assert (cmd.action, cmd.intensity) == ("set", 4)  # type: ignore[union-attr]
    cmd = command_of(timer, 15.0)
    assert (cmd.action, cmd.timer_min) == ("set", 15)  # type: ignore[union-attr]


def test_discovery_heat_target_step_is_what_the_firmware_accepts() -> None:
    heat_target = _messages(heat_target_max_c=41.0)["heat_target"].config
    assert (heat_target["min"], heat_target["max"], heat_target["unit_of_measurement"]) == (35.0, 41.0, "°C")
    assert heat_target["step"] == HEAT_TARGET_STEP_C == 0.1
    for value in (35.0, 37.3, 38.5, 41.0):  # every step Home Assistant can send is a valid command
        cmd = command_of(heat_target, value)
        assert (cmd.action, cmd.heat_target_c) == ("set", value)  # type: ignore[union-attr]


def test_discovery_switches_and_buttons_send_valid_commands() -> None:
    msgs = _messages()
    for object_id, field in (("heat", "heat"), ("child_lock", "child_lock")):
        config = msgs[object_id].config
        on = parse_command(json.loads(config["payload_on"]))
        off = parse_command(json.loads(config["payload_off"]))
        assert (on.action, getattr(on, field), getattr(off, field)) == ("set", True, False)
    massage = msgs["massage"].config
    assert parse_command(json.loads(massage["payload_on"])).action == "start"
    assert parse_command(json.loads(massage["payload_off"])).action == "stop"
    for action in ("start", "stop", "pause", "resume", "reset_fault"):
        assert parse_command(json.loads(msgs[action].config["payload_press"])).action == action


@pytest.mark.parametrize(
    ("object_id", "device_class", "unit"),
    [("temperature_pad_1", "temperature", "°C"), ("pressure_calf", "pressure", "mmHg"),
     ("remaining", "duration", "s"), ("run_hours", "duration", "h"), ("wifi_signal", "signal_strength", "dBm"),
     ("ends_at", "timestamp", None), ("last_boot", "timestamp", None)],
)
def test_discovery_sensors_carry_units_and_device_classes(object_id: str, device_class: str,
                                                          unit: str | None) -> None:
    config = _messages()[object_id].config
    assert config["device_class"] == device_class
    assert config.get("unit_of_measurement") == unit


def test_discovery_follows_the_configured_prefixes() -> None:
    msgs = _messages(topic_prefix="spa", discovery_prefix="ha")
    assert msgs["status"].topic == "ha/sensor/unit7/status/config"
    assert msgs["status"].config["state_topic"] == "spa/unit7/state"
    assert msgs["problem"].config["state_topic"] == "spa/unit7/event"


def test_discovery_firmware_update_shows_installed_and_latest_and_installs() -> None:
    update = _messages()["firmware_update"].config
    assert update["device_class"] == "firmware" and update["command_topic"] == "massager/unit7/cmd"
    assert parse_command(json.loads(update["payload_install"])).action == "update"
    assert json.loads(value_of(update, IDLE)) == {"installed_version": __version__,
                                                  "latest_version": __version__}
    announced = {**IDLE, "firmware_update": {"installed": __version__, "latest": "9.9.9"}}
    assert json.loads(value_of(update, announced)) == {"installed_version": __version__,
                                                       "latest_version": "9.9.9"}
    unset = {**IDLE, "firmware_update": None}  # the simulation: no updates
    assert json.loads(value_of(update, unset))["latest_version"] == __version__
