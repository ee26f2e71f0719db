"""The sim dashboard: what it shows (device state and plant truth), keys that press the real panel's mock
buttons and inject plant faults, cbreak mode on a terminal restored at exit, and no keys without one."""

from __future__ import annotations

import io
import os
import sys
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from device.app import App
from device.config import Config, load_config
from device.dashboard import HOLD_MARGIN_S, Dashboard, plant_params_text
from device.panel import FRAME_S, panel_task
from device.sim import sim_app
from drivers.clock import LoopClock, run_virtual
from drivers.sim.plant import PlantParams

Script = Callable[[App, Dashboard], Awaitable[None]]


def make_config(state_dir: Path) -> Config:
    return load_config(None, {"state_dir": str(state_dir), "programs_dir": None, "mqtt.enabled": False})


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=130, color_system=None)


def _text(dash: Dashboard) -> str:
    console = Console(file=io.StringIO(), width=130, color_system=None, record=True)
    console.print(dash.render())
    return console.export_text()


def run_with_dashboard(config: Config, script: Script, *, with_loop: bool = False) -> int:
    """Run the app with panel and a dashboard (its task too when ``with_loop``) and a script using it."""
    failures: list[BaseException] = []

    async def main() -> int:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)
        dash = Dashboard(app, console=_console())

        async def scripted(app: App) -> None:
            try:
                await app.clock.sleep(2 * FRAME_S)
                await script(app, dash)
            except BaseException as exc:  # noqa: BLE001 - handed back to the test
                failures.append(exc)
            finally:
                if not app.stop_event.is_set() and not dash._quitting:
                    app.request_stop()

        async def dashboard(_app: App) -> None:
            await dash.run()

        app.extra_tasks["panel"] = panel_task
        if with_loop:
            app.extra_tasks["dashboard"] = dashboard
        app.extra_tasks["script"] = scripted
        return await app.run()

    code = run_virtual(main())
    if failures:
        raise failures[0]
    return int(code)


async def _until(app: App, what: Callable[[], bool], timeout_s: float) -> None:
    start = app.clock.now()
    while not what():
        if app.clock.now() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s")
        await app.clock.sleep(0.05)


def test_dashboard_shows_device_state_and_plant_truth(tmp_path: Path) -> None:
    async def script(app: App, dash: Dashboard) -> None:
        idle = _text(dash)
        for word in ("IDLE", "program relax", "remaining -", "timer 15 min", "intensity", "heat off",
                     "child lock off", "no fault latched", "foot", "ankle", "calf", "120 / 135",
                     "80 / 95", "60 / 75", "pad_1", "pad_2", "foot rollers", "calf rollers", "stopped",
                     "relay off", "heartbeat", "plant faults", "none", "p power", "q quit"):
            assert word in idle, word
        dash.handle_key("p")
        assert app.rig is not None
        plant = app.rig.plant
        await _until(app, lambda: max(plant.pressure.values()) > 20.0 and plant.outputs()["relay"], 120.0)
        running = _text(dash)
        assert "RUNNING" in running and "relay ON" in running
        assert "remaining 14:" in running or "remaining 15:" in running
        assert "connected" in running  # a zone valve is connected while inflating
        top = max(plant.pressure, key=lambda z: plant.pressure[z])
        row = next(line for line in running.splitlines() if line.strip("│ ").startswith(top))
        assert "█" in row  # the inflated zone's bar is filled

    assert run_with_dashboard(make_config(tmp_path / "state"), script) == 0


def test_dashboard_button_keys_press_the_real_panel(tmp_path: Path) -> None:
    async def script(app: App, dash: Dashboard) -> None:
        state = app.device.state
        dash.handle_key("i")
        await app.clock.sleep(2 * FRAME_S)
        assert state()["intensity"] == 3
        dash.handle_key("h")
        dash.handle_key("t")
        await app.clock.sleep(2 * FRAME_S)
        assert state()["heat"] is True and state()["timer_min"] == 20
        dash.handle_key("g")
        await app.clock.sleep(2 * FRAME_S)
        assert state()["program"] == app.library.names()[1]
        dash.handle_key("p")
        await app.clock.sleep(2 * FRAME_S)
        assert state()["status"] == "running" and state()["program"] == app.library.names()[1]
        dash.handle_key("p")
        await app.clock.sleep(2 * FRAME_S)
        assert state()["status"] in ("finishing", "idle")

    assert run_with_dashboard(make_config(tmp_path / "state"), script, with_loop=True) == 0


def test_dashboard_child_lock_key_holds_both_buttons(tmp_path: Path) -> None:
    async def script(app: App, dash: Dashboard) -> None:
        dash.handle_key("L")
        assert app.rig is not None
        pins = app.config.pins
        assert not app.rig.factory.pin(pins.button_program).state  # held down (pulled low)
        assert not app.rig.factory.pin(pins.button_intensity).state
        await app.clock.sleep(app.config.panel.child_lock_hold_s + HOLD_MARGIN_S + 0.5)  # the view releases
        assert app.rig.factory.pin(pins.button_program).state
        assert app.device.child_lock is True
        assert app.device.state()["intensity"] == 2
        assert "child lock ON" in _text(dash)

    assert run_with_dashboard(make_config(tmp_path / "state"), script, with_loop=True) == 0


def test_dashboard_fault_keys_latch_then_clear_and_reset(tmp_path: Path) -> None:
    async def script(app: App, dash: Dashboard) -> None:
        assert app.rig is not None
        dash.handle_key("p")
        await _until(app, lambda: app.rig is not None and app.rig.plant.outputs()["relay"], 10.0)
        dash.handle_key("9")  # i2c_dead
        assert "i2c_dead" in dash.message
        await _until(app, lambda: app.device.state()["status"] == "fault", 5.0)
        await app.clock.sleep(2 * FRAME_S)
        assert app.rig.plant.all_off()
        shown = _text(dash)
        assert "FAULT SENSOR_BUS_FAULT" in shown and "i2c_dead" in shown
        dash.handle_key("c")
        assert "cleared" in dash.message
        await app.clock.sleep(1.0)
        dash.handle_key("P")  # hold power: reset
        await _until(app, lambda: app.device.state()["status"] == "idle", app.config.panel.long_press_s + 2.0)
        assert app.device.state()["fault"] is None
        assert "no fault latched" in _text(dash)

    assert run_with_dashboard(make_config(tmp_path / "state"), script, with_loop=True) == 0


def test_dashboard_bad_fault_key_parameters_are_reported_not_raised(tmp_path: Path) -> None:
    async def script(app: App, dash: Dashboard) -> None:
        dash.handle_key("x")  # unknown keys do nothing
        for key in "12345678":
            dash.handle_key(key)
            assert "injected" in dash.message, (key, dash.message)
        dash.handle_key("c")
        assert app.rig is not None and app.rig.plant.faults == {}

    assert run_with_dashboard(make_config(tmp_path / "state"), script) == 0


def test_dashboard_q_quits_the_app(tmp_path: Path) -> None:
    async def script(app: App, dash: Dashboard) -> None:
        dash.handle_key("q")
        dash.handle_key("q")  # a second q must not become the "exit at once" second signal
        await app.stop_event.wait()

    assert run_with_dashboard(make_config(tmp_path / "state"), script, with_loop=True) == 0


def test_dashboard_reads_keys_in_cbreak_mode_and_restores_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master, slave = os.openpty()
    tty_in = os.fdopen(slave, "r", closefd=False)
    monkeypatch.setattr(sys, "stdin", tty_in)
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON
    seen: dict[str, Any] = {}
    try:

        async def script(app: App, dash: Dashboard) -> None:
            await _until(app, lambda: not termios.tcgetattr(slave)[3] & termios.ICANON, 5.0)
            seen["lflag"] = termios.tcgetattr(slave)[3]
            os.write(master, b"i")  # typed on the terminal: the intensity button
            await _until(app, lambda: app.device.state()["intensity"] == 3, 60.0)
            os.write(master, b"q")  # then quit
            start = app.clock.now()
            while not app.stop_event.is_set():
                if app.clock.now() - start > 60.0:
                    raise AssertionError(f"the keys were never read: {dash.message!r}")
                await app.clock.sleep(0.05)
            seen["intensity"] = app.device.state()["intensity"]

        assert run_with_dashboard(make_config(tmp_path / "state"), script, with_loop=True) == 0
        assert not seen["lflag"] & termios.ICANON and not seen["lflag"] & termios.ECHO  # cbreak while running
        assert seen["intensity"] == 3  # "i" pressed the intensity button
        assert termios.tcgetattr(slave) == before  # restored at exit
    finally:
        tty_in.close()
        os.close(master)
        os.close(slave)


def test_dashboard_without_a_terminal_draws_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("q"))

    async def script(app: App, dash: Dashboard) -> None:
        await app.clock.sleep(1.0)
        assert "keys are off" in dash.message
        assert "IDLE" in _text(dash)

    assert run_with_dashboard(make_config(tmp_path / "state"), script, with_loop=True) == 0


def test_dashboard_task_without_sim_ends_quietly(tmp_path: Path) -> None:
    from device.dashboard import dashboard_task

    class NoSim:
        rig = None

    run_virtual(dashboard_task(NoSim()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--sim"):
        Dashboard(NoSim())  # type: ignore[arg-type]


def test_dashboard_shows_the_plant_params_and_fault_parameters(tmp_path: Path) -> None:
    async def script(app: App, dash: Dashboard) -> None:
        view = _text(dash)
        for words in ("pump 38.0 mmHg/s", "air 25.0 °C", "skin 32.0 °C", "volumes 1.00/1.65/2.24",
                      "roller load 1.00/1.00"):
            assert words in view, words
        app.rig.inject_fault({"fault": "leak", "zone": "calf", "rate": 0.5})
        assert "leak(zone=calf, rate=0.5)" in _text(dash)

    assert run_with_dashboard(make_config(tmp_path / "state"), script) == 0


def test_dashboard_plant_line_shows_drawn_values() -> None:
    drawn = PlantParams.draw(42)
    text = plant_params_text(drawn.as_dict())
    assert f"pump {drawn.pump_flow:.1f} mmHg/s" in text and f"air {drawn.air_c:.1f} °C" in text
    assert f"roller load {drawn.motor_load['foot_rollers']:.2f}/" in text
