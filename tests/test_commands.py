"""Command validation (the one path for phone, Home Assistant and panel) and the first-start notice."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from device.app import App
from device.commands import CommandError, Set, Start, decode_payload, parse_command
from device.config import load_config
from device.notice import SAFETY_NOTICE
from device.sim import sim_app
from drivers.clock import LoopClock, run_virtual


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"action": "start", "intensity": 6}, "intensity", "less than or equal to 5"),
        ({"action": "start", "intensity": True}, "intensity", "integer"),
        ({"action": "start", "heat_target_c": 43}, "heat_target_c", "less than or equal to 42"),
        ({"action": "set", "heat_target_c": 30}, "heat_target_c", "greater than or equal to 35"),
        ({"action": "set", "timer_min": 31}, "timer_min", "less than or equal to 30"),
        ({"action": "set", "skip_zones": ["knee"]}, "skip_zones.0", "'foot', 'ankle' or 'calf'"),
        ({"action": "fly"}, "action", "unknown action"),
        ({"intensity": 3}, "action", "missing"),
        ({"action": "stop", "force": True}, "force", "unknown field"),
        ({"action": "set", "Setting": 1}, "Setting", "unknown field"),
    ],
)
def test_commands_bad_fields_are_named(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(data)
    assert caught.value.field == field
    assert words in caught.value.message


def test_commands_heat_target_in_range_is_accepted() -> None:
    assert parse_command({"action": "start", "heat_target_c": 38.5}) == Start(
        action="start", heat_target_c=38.5
    )
    assert parse_command({"action": "set", "heat_target_c": 35}) == Set(action="set", heat_target_c=35.0)


@pytest.mark.parametrize(
    ("payload", "words"),
    [(b"\xff\xfe", "not UTF-8"), (b"{", "not valid JSON"), (b"x" * 5000, "limit is 4096")],
)
def test_commands_bad_payload_bytes_are_refused(payload: bytes, words: str) -> None:
    with pytest.raises(CommandError, match=words):
        decode_payload(payload)


def _run_app_briefly(state_dir: Path) -> App:
    config = load_config(None, {"state_dir": str(state_dir), "programs_dir": None, "mqtt.enabled": False})

    async def main() -> App:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)

        async def stop_soon(app: App) -> None:
            await app.ready.wait()
            await asyncio.sleep(0.5)
            app.stop_event.set()

        app.extra_tasks["stop"] = stop_soon
        assert await app.run() == 0
        return app

    result: App = run_virtual(main())
    return result


def test_commands_first_start_shows_the_safety_notice_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="device.app")
    first = _run_app_briefly(tmp_path / "state")
    assert first.first_start
    assert any(SAFETY_NOTICE in r.getMessage() for r in caplog.records)
    caplog.clear()
    second = _run_app_briefly(tmp_path / "state")
    assert not second.first_start
    assert not any(SAFETY_NOTICE in r.getMessage() for r in caplog.records)


def test_commands_start_with_heat_target_sets_the_session_target(tmp_path: Path) -> None:
    config = load_config(None, {"state_dir": str(tmp_path), "programs_dir": None, "mqtt.enabled": False})

    async def main() -> float:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)
        seen: list[float] = []

        async def drive(app: App) -> None:
            await app.ready.wait()
            reply = app.device.handle_payload(b'{"action": "start", "heat": true, "heat_target_c": 37}')
            assert reply.ok, reply.error
            seen.append(app.device.state()["heat_target_c"])
            app.stop_event.set()

        app.extra_tasks["drive"] = drive
        await app.run()
        return seen[0]

    assert run_virtual(main()) == 37.0


def test_commands_fresh_unit_starts_from_the_config_session_defaults(tmp_path: Path) -> None:
    config = load_config(None, {
        "state_dir": str(tmp_path), "programs_dir": None, "mqtt.enabled": False,
        "session.default_program": "circulation", "session.default_intensity": 4,
        "session.timer_default_min": 10,
    })

    async def main() -> dict[str, object]:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)
        seen: dict[str, object] = {}

        async def look(app: App) -> None:
            await app.ready.wait()
            seen.update(app.device.state())
            assert app.device.handle_payload(b'{"action": "start"}').ok
            seen["started"] = app.device.state()["program"]
            app.stop_event.set()

        app.extra_tasks["look"] = look
        await app.run()
        return seen

    seen = run_virtual(main())
    assert (seen["program"], seen["intensity"], seen["timer_min"]) == ("circulation", 4, 10)
    assert seen["started"] == "circulation"


def test_commands_text_from_outside_is_escaped_in_errors() -> None:
    from device.commands import CommandError, parse_command, printable, quote_field

    assert printable("a\nb\r\x1b[2K\u2028c\u0085") == "a\\nb\\r\\x1b[2K\\u2028c\\x85"
    assert printable("x" * 50, 10) == "xxxxxxx..."
    assert quote_field("skip_zones") == "skip_zones"
    assert quote_field("a\nCRITICAL x") == '"a\\nCRITICAL x"'
    try:
        parse_command({"action": "stop", "a\nCRITICAL device.safety: fault latched": 1})
    except CommandError as exc:
        text = str(exc)
    assert text.isprintable() and text.startswith('"a\\nCRITICAL') and "unknown field" in text
    assert CommandError("x\ny", "bad\nvalue").args[0] == "x\\ny: bad\\nvalue"
