"""The ``massager`` command line (DESIGN.md section 4)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device import __version__
from device.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _add_overrides(parser: argparse.ArgumentParser, *, with_config: bool = True) -> None:
    """The options every config-reading command takes (applied on top of the file)."""
    if with_config:
        parser.add_argument("--config", type=Path, metavar="FILE", help="config file (TOML)")
    parser.add_argument("--mqtt-host", metavar="H", help="MQTT broker host")
    parser.add_argument("--mqtt-port", type=_whole_number(1, 65535), metavar="N", help="MQTT broker port")
    parser.add_argument("--device-id", metavar="ID", help="device id used in MQTT topics")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="where state and logs are kept")
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default=None, help="logging level"
    )


def _whole_number(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number, between ``lo`` and ``hi`` when given."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be {lo}-{hi}, got {value}")
        return value

    return parse


def _time_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 1000, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="massager", description="Firmware of the shiatsu foot-and-calf massager."
    )
    parser.add_argument("--version", action="version", version=f"massager {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the firmware")
    _add_overrides(run)
    run.add_argument("--sim", action="store_true", help="mock pins and the simulated plant")
    run.add_argument("--time-scale", type=_time_scale, default=1.0, metavar="X",
                     help="with --sim: run the clock X times faster than real time")
    run.add_argument("--dashboard", action="store_true",
                     help="with --sim: show the live terminal view (keys press buttons, inject faults)")
    run.add_argument("--plant-seed", type=_whole_number(), default=None, metavar="N",
                     help="with --sim: draw the plant's physics from the documented ranges (same N, same unit)")
    run.add_argument("--no-plant-feed", action="store_true",
                     help="with --sim: no 10 Hz sim/plant truth topic (a unit has none; for measuring)")

    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file", type=Path, metavar="FILE")

    programs = sub.add_parser("programs", help="list built-in and user programs")
    _add_overrides(programs)
    programs.add_argument("--json", action="store_true", help="JSON output")

    selftest = sub.add_parser("selftest", help="end-of-line test of every actuator and sensor")
    _add_overrides(selftest)
    selftest.add_argument("--sim", action="store_true", help="test the simulated plant")
    selftest.add_argument("--json", action="store_true", help="JSON output")
    selftest.add_argument("--inject", metavar="FAULT", default=None,
                          help="with --sim: inject a plant fault first (to see the matching check fail)")
    selftest.add_argument("--inject-zone", choices=("foot", "ankle", "calf", "all"), default=None,
                          help="the zone of a valve fault given with --inject")
    selftest.add_argument("--inject-motor", choices=("foot_rollers", "calf_rollers", "all"),
                          default=None, help="the motor of motor_stall given with --inject")

    faults = sub.add_parser("faults", help="print the persistent fault log")
    _add_overrides(faults)
    faults.add_argument("--json", action="store_true", help="JSON output")

    bench = sub.add_parser("bench", help="the performance benchmark")
    _add_overrides(bench)
    bench.add_argument("--json", action="store_true", help="JSON output")
    bench.add_argument("--quick", action="store_true", help="a short run for smoke tests")
    bench.add_argument("--repeat", type=_whole_number(1, 50), default=1, metavar="N",
                       help="run the whole plan N times; report each figure's median and worst run")
    bench.add_argument("--no-web", action="store_true",
                       help="leave out the phone page's figures (no browser started; "
                            "python -m device.bench_web measures them alone)")

    info = sub.add_parser("info", help="firmware version, device id, usage counters, last faults")
    _add_overrides(info)
    info.add_argument("--json", action="store_true", help="JSON output")

    update = sub.add_parser("update", help="install a signed firmware update bundle (root; docs/technician.md)")
    update.add_argument("source", nargs="?", metavar="FILE|URL", help="the bundle, a file or an http(s) URL")
    update.add_argument("--force", action="store_true",
                        help="technicians only: allow the same or an older version (a downgrade)")
    update.add_argument("--request", action="store_true",
                        help="install what the firmware was asked for over MQTT (massager-update.service)")
    update.add_argument("--no-restart", action="store_true", help="switch, but leave the service running")
    update.add_argument("--root", type=Path, default=Path(os.environ.get("MASSAGER_ROOT") or "/"),
                        help=argparse.SUPPRESS)  # tests: every path under this folder

    safe_off = sub.add_parser("safe-off", help="drive every output off (systemd ExecStopPost)")
    _add_overrides(safe_off)
    safe_off.add_argument("--sim", action="store_true", help="on mock pins (for tests)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config file (or defaults) and apply the command-line overrides on top."""
    overrides: dict[str, Any] = {}
    for option, key in (
        ("mqtt_host", "mqtt.host"),
        ("mqtt_port", "mqtt.port"),
        ("device_id", "device_id"),
        ("state_dir", "state_dir"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            overrides[key] = str(value) if isinstance(value, Path) else value
    path = getattr(args, "config", None)
    if path is None and getattr(args, "sim", False) is False and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    return load_config(path, overrides)


DEFAULT_CONFIG = DEFAULT_CONFIG_PATH  # read when --config is not given (outside --sim)

# Each command's implementation, imported only when it runs (start-up stays quick).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("device.app", "run_main"),
    "programs": ("device.programs_cmd", "programs_main"),
    "selftest": ("device.selftest", "selftest_main"),
    "faults": ("device.faultlog", "faults_main"),
    "bench": ("device.bench", "bench_main"),
    "info": ("device.info", "info_main"),
    "safe-off": ("device.app", "safe_off_main"),
    "update": ("device.update_install", "update_main"),
}


def setup_logging(level: str | None) -> None:
    """Log to stderr (journald adds its own time stamps under systemd)."""
    logging.basicConfig(
        level=getattr(logging, level or "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``massager`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", None))
    if args.command == "check-config":
        try:
            config = load_config(args.file)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.file}: OK (device id {config.resolved_device_id})")
        return 0
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    module_name, function_name = COMMANDS[args.command]
    handler = getattr(importlib.import_module(module_name), function_name)
    status: int = handler(args, config)
    return status
