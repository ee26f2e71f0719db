"""``massager info``: what a technician needs first: version, identity, counters, recent faults."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from device import __version__
from device.config import Config
from device.faultlog import FAULT_LOG_NAME, FaultLog, format_entry
from device.persist import STATE_COPY, STATE_FILE, STORAGE_FAULT, Damaged, Decoded, StoredState, decode_state

LAST_FAULTS = 5


def read_state(state_dir: Path) -> tuple[StoredState, str | None]:
    """The newest stored copy that checks out, read without touching the files (the firmware moves bad ones)."""
    best: Decoded | None = None
    problems: list[str] = []
    for path in (state_dir / STATE_FILE, state_dir / STATE_COPY):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"cannot read {path}: {exc.strerror or exc}")
            continue
        try:
            decoded = decode_state(raw)
        except Damaged as exc:
            problems.append(f"{path} is corrupt ({exc})")
            continue
        if decoded.salvaged is not None:
            problems.append(f"{path} holds values this firmware refuses ({decoded.salvaged})")
        if best is None or decoded.generation > best.generation:
            best = decoded
    if best is None:
        if problems:
            problems.append(f"the firmware will come up latched ({STORAGE_FAULT}) until a reset")
        return StoredState(), "; ".join(problems) or None
    return best.state, "; ".join(problems) or None


def gather(config: Config, config_path: str | None) -> dict[str, Any]:
    """Everything ``info`` reports, as one JSON-ready dict."""
    stored, state_problem = read_state(config.state_dir)
    problems = [state_problem] if state_problem else []
    log_path = config.state_dir / FAULT_LOG_NAME
    try:
        entries = FaultLog(log_path).entries()
    except OSError as exc:
        entries = []
        problems.append(f"cannot read {log_path}: {exc.strerror or exc}")
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
        "problems": problems,
    }


def config_path(args: argparse.Namespace) -> str | None:
    """The file the config came from: ``--config``, else the device's default file when it exists."""
    from device import cli  # at call time: the same default that ``config_from_args`` used

    path = getattr(args, "config", None)
    if path is None and cli.DEFAULT_CONFIG.exists():
        path = cli.DEFAULT_CONFIG
    return str(path) if path is not None else None


def info_main(args: argparse.Namespace, config: Config) -> int:
    """``massager info [--json]``."""
    data = gather(config, config_path(args))
    if args.json:
        print(json.dumps(data, indent=1, ensure_ascii=False))
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
    for problem in data["problems"]:
        print(f"warning: {problem}")
    if data["last_faults"]:
        print(f"last faults ({len(data['last_faults'])} of {data['faults_total']}, newest last):")
        for entry in data["last_faults"]:
            print(f"  {format_entry(entry)}")
    else:
        print("no faults recorded")
    return 0
