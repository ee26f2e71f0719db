"""Home Assistant MQTT discovery: one retained config message per entity, no YAML on the user's side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from device import __version__
from modes.limits import (
    HEAT_TARGET_MAX_C,
    HEAT_TARGET_MIN_C,
    INTENSITY_MAX,
    INTENSITY_MIN,
    TIMER_MIN_MIN,
    ZONES,
)

MANUFACTURER = "Massager firmware project"
MODEL = "Shiatsu foot-and-calf massager"
STATUSES = ("idle", "running", "paused", "finishing", "fault")


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
    def sim_fault(self) -> str:
        """Plant fault injection (``--sim`` only)."""
        return f"{self.base}/sim/fault"

    @property
    def sim_fault_reply(self) -> str:
        """One reply per fault injection message."""
        return f"{self.base}/sim/fault/reply"

    @property
    def sim_plant(self) -> str:
        """Plant truth at 10 Hz (``--sim`` only)."""
        return f"{self.base}/sim/plant"


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
) -> list[DiscoveryMessage]:
    """Every entity of the device for Home Assistant, each with the shared device block."""
    topics = DeviceTopics.of(topic_prefix, device_id)
    device = {
        "identifiers": [f"massager_{device_id}"],
        "name": f"Massager {device_id}",
        "manufacturer": MANUFACTURER,
        "model": MODEL,
        "sw_version": sw_version,
    }
    messages: list[DiscoveryMessage] = []

    def add(component: str, object_id: str, name: str, **fields: Any) -> None:
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"massager_{device_id}_{object_id}",
            "device": device,
            "availability_topic": topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
        }
        config.update(fields)
        topic = f"{discovery_prefix}/{component}/{device_id}/{object_id}/config"
        messages.append(DiscoveryMessage(component, object_id, topic, config))

    def command(action: str, **fields: str) -> str:
        """A command template (Jinja) or fixed payload producing the JSON command."""
        parts = [f'"action":"{action}"', *(f'"{k}":{v}' for k, v in fields.items())]
        return "{" + ",".join(parts) + "}"

    add("select", "program", "Program",
        state_topic=topics.state, value_template="{{ value_json.program }}",
        command_topic=topics.cmd, command_template=command("set", program="{{ value | tojson }}"),
        options=list(programs), icon="mdi:format-list-bulleted")
    add("number", "intensity", "Intensity",
        state_topic=topics.state, value_template="{{ value_json.intensity }}",
        command_topic=topics.cmd, command_template=command("set", intensity="{{ value | int }}"),
        min=INTENSITY_MIN, max=INTENSITY_MAX, step=1, mode="slider", icon="mdi:speedometer")
    add("switch", "heat", "Heat",
        state_topic=topics.state, value_template="{{ 'ON' if value_json.heat else 'OFF' }}",
        state_on="ON", state_off="OFF",
        command_topic=topics.cmd,
        payload_on=command("set", heat="true"), payload_off=command("set", heat="false"),
        icon="mdi:heat-wave")
    add("number", "timer", "Timer",
        state_topic=topics.state, value_template="{{ value_json.timer_min }}",
        command_topic=topics.cmd, command_template=command("set", timer_min="{{ value | int }}"),
        min=TIMER_MIN_MIN, max=timer_max_min, step=1, mode="box", unit_of_measurement="min",
        icon="mdi:timer-outline")
    add("number", "heat_target", "Heat target",
        state_topic=topics.state, value_template="{{ value_json.heat_target_c }}",
        command_topic=topics.cmd, command_template=command("set", heat_target_c="{{ value | float }}"),
        min=HEAT_TARGET_MIN_C, max=heat_target_max_c, step=0.5, mode="box", unit_of_measurement="°C",
        device_class="temperature", icon="mdi:thermometer")
    for action, name, icon in (("start", "Start", "mdi:play"), ("stop", "Stop", "mdi:stop"),
                               ("reset_fault", "Reset fault", "mdi:restore-alert")):
        add("button", action, name, command_topic=topics.cmd, payload_press=command(action), icon=icon)
    for sensor in thermistors:
        add("sensor", f"temperature_{sensor}", f"Temperature {sensor.replace('_', ' ')}",
            state_topic=topics.state, value_template=f"{{{{ value_json.temperature_c.{sensor} }}}}",
            device_class="temperature", unit_of_measurement="°C", state_class="measurement",
            suggested_display_precision=1)
    for zone in zones:
        add("sensor", f"pressure_{zone}", f"Pressure {zone}",
            state_topic=topics.state, value_template=f"{{{{ value_json.pressure_mmhg.{zone} }}}}",
            device_class="pressure", unit_of_measurement="mmHg", state_class="measurement",
            suggested_display_precision=0)
    add("sensor", "remaining", "Remaining time",
        state_topic=topics.state, value_template="{{ value_json.remaining_s }}",
        device_class="duration", unit_of_measurement="s", icon="mdi:timer-sand")
    add("sensor", "status", "Status",
        state_topic=topics.state, value_template="{{ value_json.status }}",
        device_class="enum", options=list(STATUSES), icon="mdi:information-outline")
    add("binary_sensor", "fault", "Fault",
        state_topic=topics.state, value_template="{{ 'ON' if value_json.fault else 'OFF' }}",
        payload_on="ON", payload_off="OFF", device_class="problem",
        json_attributes_topic=topics.state,
        json_attributes_template="{{ (value_json.fault or {}) | tojson }}")
    return messages
