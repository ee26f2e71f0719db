"""Home Assistant MQTT discovery: one retained config message per entity, no YAML on the user's side."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from device import __version__
from device.config import DeviceInfo
from modes.limits import (
    HEAT_TARGET_MAX_C,
    HEAT_TARGET_MIN_C,
    INTENSITY_MAX,
    INTENSITY_MIN,
    TIMER_MIN_MIN,
    ZONES,
)

STATUSES = ("idle", "running", "paused", "finishing", "fault")
PHASES = ("warm_up", "work", "cool_down")
NOT_RUNNING = "Not running"  # the phase sensor's value outside a session
EVENT_TYPES = ("refused", "fault", "warning")  # the event topic's ``event_type`` values
HEAT_TARGET_STEP_C = 0.1  # Home Assistant's step; the firmware keeps any value in range as sent
ORIGIN = {"name": "massager firmware", "sw_version": __version__}
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S+00:00"  # timestamp_custom(..., false): UTC


def words(name: str) -> str:
    """A code or name as Home Assistant shows it: ``quick_boost`` -> ``Quick boost``."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:].lower()


def display_names(names: Sequence[str]) -> dict[str, str]:
    """Each name as words, or as it is where two would read the same."""
    shown = {name: words(name) for name in names}
    if len(set(shown.values())) != len(shown):
        return {name: name for name in names}
    return shown


def skip_options(zones: Sequence[str]) -> dict[tuple[str, ...], str]:
    """Every set of skipped zones (in zone order) and its words: (), ("foot",), ... -> None, Foot, ..."""
    options: dict[tuple[str, ...], str] = {}
    for size in range(len(zones) + 1):
        for chosen in itertools.combinations(zones, size):
            if not chosen:
                options[chosen] = "None"
            elif len(chosen) == len(zones):
                options[chosen] = "All zones"
            else:
                options[chosen] = words(" and ".join(chosen))
    return options


def _jinja(value: Any) -> str:
    """A Python value as a Jinja literal (JSON objects, lists and strings are valid Jinja)."""
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One entity's discovery config: its topic and its JSON payload (published retained)."""

    component: str
    object_id: str
    topic: str
    config: dict[str, Any]

    def payload(self) -> bytes:
        """The UTF-8 JSON payload."""
        return json.dumps(self.config, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    """The device's own topics (DESIGN.md section 5)."""

    base: str

    @classmethod
    def of(cls, topic_prefix: str, device_id: str) -> DeviceTopics:
        """Topics under ``<prefix>/<device id>``."""
        return cls(base=f"{topic_prefix}/{device_id}")

    @property
    def availability(self) -> str:
        """``online`` / ``offline``, retained, also the Last Will."""
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        """The retained state JSON."""
        return f"{self.base}/state"

    @property
    def cmd(self) -> str:
        """Commands to the device."""
        return f"{self.base}/cmd"

    @property
    def cmd_reply(self) -> str:
        """One reply per command message."""
        return f"{self.base}/cmd/reply"

    @property
    def event(self) -> str:
        """Refusals, faults and warnings as they happen (Home Assistant's event entity)."""
        return f"{self.base}/event"


def discovery_messages(
    *,
    device_id: str,
    topic_prefix: str,
    discovery_prefix: str,
    programs: Sequence[str],
    thermistors: Sequence[str],
    timer_max_min: int,
    heat_target_max_c: float = HEAT_TARGET_MAX_C,
    zones: Sequence[str] = ZONES,
    sw_version: str = __version__,
    info: DeviceInfo | None = None,
    serial_number: str = "",
    configuration_url: str | None = None,
) -> list[DiscoveryMessage]:
    """Every entity of the device for Home Assistant, each with the shared device block and origin."""
    info = info or DeviceInfo()
    topics = DeviceTopics.of(topic_prefix, device_id)
    device: dict[str, Any] = {
        "identifiers": [f"massager_{device_id}"],
        "name": info.resolved_name(device_id),
        "manufacturer": info.manufacturer,
        "model": info.model,
        "sw_version": sw_version,
        "serial_number": info.serial_number or serial_number or device_id,
    }
    if info.hw_version:
        device["hw_version"] = info.hw_version
    if info.suggested_area:
        device["suggested_area"] = info.suggested_area
    if configuration_url:
        device["configuration_url"] = configuration_url
    origin = dict(ORIGIN, sw_version=sw_version)
    messages: list[DiscoveryMessage] = []

    def add(component: str, object_id: str, name: str, *, available: bool = True, **fields: Any) -> None:
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"massager_{device_id}_{object_id}",
            "object_id": f"massager_{device_id}_{object_id}",
            "device": device,
            "origin": origin,
        }
        if available:
            config.update(availability_topic=topics.availability, payload_available="online",
                          payload_not_available="offline")
        config.update(fields)
        topic = f"{discovery_prefix}/{component}/{device_id}/{object_id}/config"
        messages.append(DiscoveryMessage(component, object_id, topic, config))

    def command(action: str, **fields: str) -> str:
        """A command template (Jinja) or fixed payload producing the JSON command."""
        parts = [f'"action":"{action}"', *(f'"{k}":{v}' for k, v in fields.items())]
        return "{" + ",".join(parts) + "}"

    def state(template: str, **fields: Any) -> dict[str, Any]:
        return {"state_topic": topics.state, "value_template": "{{ " + template + " }}", **fields}

    def on_off(condition: str) -> str:
        return f"'ON' if {condition} else 'OFF'"

    def attributes(template: str) -> dict[str, Any]:
        return {"json_attributes_topic": topics.state, "json_attributes_template": "{{ " + template + " }}"}

    # -- everyday controls and states ---------------------------------------------------------
    add("switch", "massage", "Massage",
        **state(on_off("value_json.status in ['running', 'paused']")), state_on="ON", state_off="OFF",
        command_topic=topics.cmd, payload_on=command("start"), payload_off=command("stop"), icon="mdi:spa")
    shown = display_names(programs)
    add("select", "program", "Program",
        **state(f"{_jinja(shown)}[value_json.program] | default(value_json.program)"),
        command_topic=topics.cmd,
        command_template=command("set", program="{{ " + f"{_jinja({v: k for k, v in shown.items()})}"
                                 "[value] | default(value) | tojson }}"),
        options=list(shown.values()), icon="mdi:format-list-bulleted")
    add("number", "intensity", "Intensity",
        **state("value_json.intensity"),
        command_topic=topics.cmd, command_template=command("set", intensity="{{ value | int }}"),
        min=INTENSITY_MIN, max=INTENSITY_MAX, step=1, mode="slider", icon="mdi:speedometer")
    add("switch", "heat", "Heat",
        **state(on_off("value_json.heat")), state_on="ON", state_off="OFF",
        command_topic=topics.cmd,
        payload_on=command("set", heat="true"), payload_off=command("set", heat="false"),
        icon="mdi:heat-wave")
    for action, name, icon in (("start", "Start", "mdi:play"), ("stop", "Stop", "mdi:stop"),
                               ("pause", "Pause", "mdi:pause"), ("resume", "Resume", "mdi:play-pause"),
                               ("reset_fault", "Reset fault", "mdi:restore-alert")):
        add("button", action, name, command_topic=topics.cmd, payload_press=command(action), icon=icon)
    add("sensor", "status", "Status",
        **state(f"{_jinja({s: words(s) for s in STATUSES})}[value_json.status] | default(value_json.status)"),
        # options: Home Assistant 2024.3 ignores them on MQTT sensors; later versions list them
        device_class="enum", options=[words(s) for s in STATUSES], icon="mdi:information-outline")
    phases = {p: words(p).replace(" ", "-") for p in PHASES}
    add("sensor", "phase", "Phase",
        **state(f"{_jinja(phases)}.get(value_json.phase, {_jinja(NOT_RUNNING)})"),
        device_class="enum", options=[*phases.values(), NOT_RUNNING], icon="mdi:progress-clock")
    add("sensor", "remaining", "Remaining time",
        **state("value_json.remaining_s"),
        device_class="duration", unit_of_measurement="s", icon="mdi:timer-sand")
    # No end time outside a session: unavailable then (a timestamp sensor takes no "None" in Home
    # Assistant 2024.3: it logs a warning per message), so the value there is only a placeholder.
    add("sensor", "ends_at", "Ends at", available=False,
        availability=[{"topic": topics.availability, "payload_available": "online",
                       "payload_not_available": "offline"},
                      {"topic": topics.state, "payload_available": "online", "payload_not_available": "offline",
                       "value_template": "{{ 'online' if value_json.ends_at else 'offline' }}"}],
        availability_mode="all",
        **state("value_json.ends_at or value_json.boot_at"), device_class="timestamp",
        icon="mdi:timer-check-outline")
    add("binary_sensor", "heating", "Heating",
        **state(on_off("(value_json.outputs.get('heater') or 0) > 0")), payload_on="ON", payload_off="OFF",
        device_class="heat")
    # -- problems -----------------------------------------------------------------------------
    add("binary_sensor", "fault", "Fault",
        **state(on_off("value_json.fault")), payload_on="ON", payload_off="OFF", device_class="problem",
        **attributes('{"code": value_json.fault.code, "message": value_json.fault.message, '
                     f'"since": value_json.fault.since | timestamp_custom("{ISO_FORMAT}", false)}}'
                     ' | tojson if value_json.fault else "{}"'))
    add("sensor", "last_problem", "Last problem",
        **state("value_json.last_problem.summary if value_json.last_problem else 'None'"),
        **attributes("(value_json.last_problem or {}) | tojson"), icon="mdi:alert-circle-outline")
    add("event", "problem", "Problem",
        state_topic=topics.event, event_types=list(EVENT_TYPES), icon="mdi:alert-decagram-outline")
    add("binary_sensor", "heat_target_unreachable", "Heat target unreachable",
        **state(on_off("value_json.warnings | selectattr('code', 'eq', 'HEAT_TARGET_UNREACHABLE') | list")),
        payload_on="ON", payload_off="OFF", device_class="problem",
        **attributes("{'warnings': value_json.warnings} | tojson"), icon="mdi:thermometer-alert")
    # -- settings -----------------------------------------------------------------------------
    add("number", "timer", "Timer",
        **state("value_json.timer_min"),
        command_topic=topics.cmd, command_template=command("set", timer_min="{{ value | int }}"),
        min=TIMER_MIN_MIN, max=timer_max_min, step=1, mode="box", unit_of_measurement="min",
        device_class="duration", entity_category="config", icon="mdi:timer-outline")
    add("number", "heat_target", "Heat target",
        **state("value_json.heat_target_c"),
        command_topic=topics.cmd, command_template=command("set", heat_target_c="{{ value | float }}"),
        min=HEAT_TARGET_MIN_C, max=heat_target_max_c, step=HEAT_TARGET_STEP_C, mode="box",
        unit_of_measurement="°C", device_class="temperature", entity_category="config",
        icon="mdi:thermometer")
    skips = skip_options(zones)
    add("select", "skip_zones", "Skipped zones",
        **state(f"{_jinja({','.join(k): v for k, v in skips.items()})}[value_json.skip_zones | join(',')]"),
        command_topic=topics.cmd,
        command_template=command("set", skip_zones="{{ " + _jinja({v: list(k) for k, v in skips.items()})
                                 + "[value] | tojson }}"),
        options=list(skips.values()), entity_category="config", icon="mdi:debug-step-over")
    add("switch", "child_lock", "Child lock",
        **state(on_off("value_json.child_lock")), state_on="ON", state_off="OFF",
        command_topic=topics.cmd,
        payload_on=command("set", child_lock="true"), payload_off=command("set", child_lock="false"),
        entity_category="config", icon="mdi:lock")
    # -- diagnostics --------------------------------------------------------------------------
    for sensor in thermistors:
        add("sensor", f"temperature_{sensor}", f"Temperature {sensor.replace('_', ' ')}",
            **state(f"value_json.temperature_c.{sensor}"),
            device_class="temperature", unit_of_measurement="°C", state_class="measurement",
            suggested_display_precision=1, entity_category="diagnostic")
    for zone in zones:
        add("sensor", f"pressure_{zone}", f"Pressure {zone}",
            **state(f"value_json.pressure_mmhg.{zone}"),
            device_class="pressure", unit_of_measurement="mmHg", state_class="measurement",
            suggested_display_precision=0, entity_category="diagnostic")
    add("binary_sensor", "connection", "Connection",
        available=False, state_topic=topics.availability, payload_on="online", payload_off="offline",
        device_class="connectivity", entity_category="diagnostic")
    add("sensor", "wifi_signal", "Wi-Fi signal",
        **state("value_json.wifi_dbm"), device_class="signal_strength", unit_of_measurement="dBm",
        state_class="measurement", entity_category="diagnostic")
    add("sensor", "last_boot", "Last boot",
        **state("value_json.boot_at"), device_class="timestamp", entity_category="diagnostic",
        icon="mdi:restart")
    add("sensor", "sessions", "Sessions",
        **state("value_json.usage.sessions"), state_class="total_increasing", entity_category="diagnostic",
        icon="mdi:counter")
    add("sensor", "run_hours", "Run hours",
        **state("value_json.usage.session_h"), device_class="duration", unit_of_measurement="h",
        state_class="total_increasing", suggested_display_precision=1, entity_category="diagnostic")
    add("sensor", "fault_count", "Faults",
        **state("value_json.usage.faults"), state_class="total_increasing", entity_category="diagnostic",
        icon="mdi:alert-octagon-outline")
    add("sensor", "last_fault", "Last fault",
        **state("(value_json.usage.last_fault or 'None') | replace('_', ' ') | capitalize"),
        **attributes("{'code': value_json.usage.last_fault} | tojson"), entity_category="diagnostic",
        icon="mdi:alert-octagon")
    add("binary_sensor", "sensor_doubt", "Sensor implausible",
        **state(on_off("value_json.sensor_doubt")), payload_on="ON", payload_off="OFF",
        device_class="problem", **attributes("{'reason': value_json.sensor_doubt} | tojson"),
        entity_category="diagnostic")
    add("binary_sensor", "storage", "Storage",
        **state(on_off("value_json.storage_error")), payload_on="ON", payload_off="OFF",
        device_class="problem", **attributes("{'error': value_json.storage_error} | tojson"),
        entity_category="diagnostic", icon="mdi:sd")
    add("sensor", "firmware", "Firmware",
        **state("value_json.firmware"), entity_category="diagnostic", icon="mdi:chip")
    # Installed and newest announced version (<prefix>/updates/latest); Install sends the update command.
    add("update", "firmware_update", "Firmware update",
        **state("{'installed_version': value_json.firmware, 'latest_version': "
                "(value_json['firmware_update'] or {}).get('latest', value_json.firmware)} | tojson"),
        command_topic=topics.cmd, payload_install=command("update"), device_class="firmware",
        entity_category="config")
    return messages
