"""Validate discovery payloads with Home Assistant's own MQTT code (run by the Home Assistant venv's python).

stdin: {"messages": [{"component", "object_id", "config"}], "states": [state payload, ...]}.
stdout: {"version": Home Assistant's version, "problems": ["object_id: what is wrong", ...], "ignored":
["object_id.key" that this version drops but later ones read], "rendered": {object_id: [value per state],
"object_id.commands": [command per test value]}}. Each payload goes through its platform's
DISCOVERY_SCHEMA (and the origin schema, as discovery does); a key the schema drops (unknown to Home
Assistant) is a problem; every value, attribute and command template is rendered with Home Assistant's
template engine.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from typing import Any

import voluptuous as vol
from homeassistant.components.mqtt.discovery import MQTT_ORIGIN_INFO_SCHEMA
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template

# Keys that newer Home Assistant versions read and older ones drop without harm: reported, not problems.
NEWER_KEYS = {("sensor", "options")}


def _render(hass: HomeAssistant, template: str, variables: dict[str, Any]) -> str:
    return str(Template(template, hass).async_render(variables, parse_result=False))


async def validate(data: dict[str, Any]) -> dict[str, Any]:
    """Every problem Home Assistant's schemas and template engine find in the payloads."""
    hass = HomeAssistant("/tmp")
    problems: list[str] = []
    ignored: list[str] = []
    rendered: dict[str, list[str]] = {}
    for message in data["messages"]:
        object_id, component, config = message["object_id"], message["component"], message["config"]
        platform = importlib.import_module(f"homeassistant.components.mqtt.{component}")
        try:
            if "origin" in config:
                MQTT_ORIGIN_INFO_SCHEMA(dict(config["origin"]))
            validated = platform.DISCOVERY_SCHEMA(dict(config))
        except vol.Invalid as exc:
            problems.append(f"{object_id}: {exc}")
            continue
        dropped = set(config) - set(validated)
        ignored.extend(f"{object_id}.{key}" for key in sorted(dropped) if (component, key) in NEWER_KEYS)
        dropped = {key for key in dropped if (component, key) not in NEWER_KEYS}
        if dropped:
            problems.append(f"{object_id}: keys Home Assistant does not know: {sorted(dropped)}")
        values: list[str] = []
        for state in data["states"]:
            variables = {"value": json.dumps(state), "value_json": state}
            for key in ("value_template", "json_attributes_template"):
                if key not in config:
                    continue
                try:
                    text = _render(hass, config[key], variables)
                except Exception as exc:  # noqa: BLE001 - report any template failure as a problem
                    problems.append(f"{object_id}: {key} fails on status {state.get('status')}: {exc}")
                    continue
                if key == "value_template":
                    values.append(text)
                elif not isinstance(json.loads(text), dict):
                    problems.append(f"{object_id}: attributes are not a JSON object: {text}")
        rendered[object_id] = values
        if "command_template" in config:
            inputs = config.get("options") or (  # a number: its ends and one step up, as floats (like HA)
                [float(config["min"]), float(config["max"]), float(config["min"]) + config["step"]])
            commands = []
            for value in inputs or []:
                try:
                    commands.append(json.loads(_render(hass, config["command_template"], {"value": value})))
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{object_id}: command_template fails for {value!r}: {exc}")
            rendered[f"{object_id}.commands"] = [json.dumps(c) for c in commands]
    await hass.async_stop(force=True)
    return {"version": HA_VERSION, "problems": problems, "ignored": ignored, "rendered": rendered}


def main() -> int:
    """Read the payloads from stdin, print the findings as JSON."""
    data = json.load(sys.stdin)
    result = asyncio.run(validate(data))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
