"""``massager info``: what a technician needs first: version, identity, counters, recent faults."""

from __future__ import annotations

import argparse
import json
from typing import Any

from device import __version__
from device.config import Config
from device.faultlog import FaultLog
from device.persist import StateStore

LAST_FAULTS = 5


def gather(config: Config, config_path: str | None) -> dict[str, Any]:
    """Everything ``info`` reports, as one JSON-ready dict."""
    stored = StateStore(config.state_dir).load()
    entries = FaultLog(config.state_dir / "faults.jsonl").entries()
    return {
        "firmware_version": __version__,
        "device_id": config.resolved_device_id,
        "config_path": config_path or "(built-in defaults)",
        "state_dir": str(config.state_dir),
        "mqtt": f"{config.mqtt.host}:{config.mqtt.port}" if config.mqtt.enabled else "disabled",
        "usage": stored.usage.model_dump(mode="json"),
        "preferences": stored.preferences.model_dump(mode="json"),
        "faults_total": len(entries),
        "last_faults": entries[-LAST_FAULTS:],
    }


def info_main(args: argparse.Namespace, config: Config) -> int:
    """``massager info [--json]``."""
    data = gather(config, str(args.config) if getattr(args, "config", None) else None)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    usage = data["usage"]
    print(f"firmware   {data['firmware_version']}")
    print(f"device id  {data['device_id']}")
    print(f"config     {data['config_path']}")
    print(f"state dir  {data['state_dir']}")
    print(f"mqtt       {data['mqtt']}")
    print(f"sessions   {usage['sessions']}   faults {usage['faults']}")
    for name, seconds in sorted(usage["run_s"].items()):
        print(f"  {name:<14} {seconds / 3600:8.2f} h")
    if data["last_faults"]:
        print("last faults:")
        for entry in data["last_faults"]:
            print(f"  {entry.get('code', '?')}: {entry.get('message', '')}")
    else:
        print("no faults recorded")
    return 0
