"""The panel through gpiozero mock pins on a whole simulated app, in virtual time.

Each test runs ``App.run()`` on a VirtualTimeLoop with the panel task and a scripted task that presses
the mock button pins; the session is checked through ``Device.state()`` and the physics through the
plant (inside the script, while the app still owns the pins).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from device.app import App
from device.commands import Pause, Resume, Start
from device.config import Config, load_config
from device.panel import (
    DARK,
    FAULT_BLINK_S,
    FAULT_GAP_S,
    FRAME_S,
    RED,
    STANDBY_AFTER_S,
    STANDBY_GREEN,
    fault_blinks,
    panel_task,
)
from device.persist import STATE_FILE
from device.sim import sim_app
from drivers.clock import LoopClock, run_virtual

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

Script = Callable[["Pan"], Awaitable[None]]


def make_config(state_dir: Path, **overrides: Any) -> Config:
    """Defaults, no broker, state in ``state_dir``."""
    return load_config(None, {"state_dir": str(state_dir), "programs_dir": None, "mqtt.enabled": False,
                              **overrides})


class Pan:
    """What a test script holds: the app, its button pins and LED pins, and waiting on virtual time."""

    def __init__(self, app: App) -> None:
        assert app.rig is not None
        self.app = app
        self.plant = app.rig.plant
        pins = app.config.pins
        pin = app.rig.factory.pin
        self.buttons = {n: pin(getattr(pins, f"button_{n}"))
                        for n in ("power", "program", "intensity", "heat", "timer")}
        self.rgb = (pin(pins.led_status_red), pin(pins.led_status_green), pin(pins.led_status_blue))
        self.heat_led = pin(pins.led_heat)
        self.bar = [pin(n) for n in pins.led_intensity]
        self.buzzer = pin(pins.buzzer)

    @property
    def state(self) -> dict[str, Any]:
        return self.app.device.state()

    async def wait(self, seconds: float) -> None:
        await self.app.clock.sleep(seconds)

    async def wait_for(self, what: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> float:
        """Wait (virtual time) until ``what()``; returns how long it took; fails after ``timeout_s``."""
        start = self.app.clock.now()
        while not what():
            if self.app.clock.now() - start > timeout_s:
                raise AssertionError(f"not true within {timeout_s} s: {what.__doc__ or what}")
            await self.wait(step_s)
        return self.app.clock.now() - start

    def down(self, *names: str) -> None:
        for name in names:
            self.buttons[name].drive_low()

    def up(self, *names: str) -> None:
        for name in names:
            self.buttons[name].drive_high()

    async def press(self, name: str, hold_s: float = 0.2) -> None:
        """Press, hold, release, and give the panel a frame to act."""
        self.down(name)
        await self.wait(hold_s)
        self.up(name)
        await self.wait(2 * FRAME_S)

    async def hold(self, names: tuple[str, ...], hold_s: float) -> None:
        self.down(*names)
        await self.wait(hold_s)
        self.up(*names)
        await self.wait(2 * FRAME_S)

    def colour(self) -> tuple[float, float, float]:
        r, g, b = (float(p.state) for p in self.rgb)
        return (r, g, b)

    def lit_bar(self) -> int:
        return sum(1 for p in self.bar if p.state)

    def buzzer_edges(self) -> int:
        return sum(1 for s in self.buzzer.states[1:] if s.state)

    def running_outputs(self) -> bool:
        out = self.plant.outputs()
        return bool(out["relay"]) and any(
            out[k] for k in ("foot_rollers", "calf_rollers", "pump", "valve_foot", "valve_ankle", "valve_calf")
        )


def run_panel(config: Config, script: Script) -> App:
    """Run the app with the panel and ``script``; re-raise what the script raised; returns the app."""
    failures: list[BaseException] = []
    holder: list[App] = []

    async def main() -> int:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)
        holder.append(app)

        async def scripted(app: App) -> None:
            try:
                await app.clock.sleep(2 * FRAME_S)  # the panel's first frame has run
                await script(Pan(app))
            except BaseException as exc:  # noqa: BLE001 - handed back to the test below
                failures.append(exc)
            finally:
                app.request_stop()

        app.extra_tasks["panel"] = panel_task
        app.extra_tasks["script"] = scripted
        return await app.run()

    code = run_virtual(main())
    if failures:
        raise failures[0]
    assert code == 0
    return holder[0]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _write_prefs(state_dir: Path, **prefs: Any) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).write_text(json.dumps({"version": 1, "preferences": prefs}))


def _stored_prefs(state_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    return data["preferences"]  # type: ignore[no-any-return]


# -- power -------------------------------------------------------------------------------------


def test_panel_power_starts_last_used_program_then_stops(state_dir: Path) -> None:
    _write_prefs(state_dir, program="circulation", intensity=3, heat=False, timer_min=20)

    async def script(p: Pan) -> None:
        assert p.state["status"] == "idle"
        assert p.plant.all_off()
        await p.press("power")
        s = p.state
        assert (s["status"], s["program"], s["intensity"], s["timer_min"]) == ("running", "circulation", 3, 20)
        await p.wait_for(p.running_outputs, 10.0)
        await p.wait_for(lambda: max(p.plant.pressure.values()) > 10.0, 120.0)  # the plant really inflates

        await p.press("power")
        assert p.state["status"] in ("finishing", "idle")
        await p.wait_for(lambda: p.state["status"] == "idle", 30.0)
        await p.wait(0.5)
        assert p.plant.all_off()
        assert all(v < 10.0 for v in p.plant.pressure.values())

    run_panel(make_config(state_dir), script)
    assert json.loads((state_dir / STATE_FILE).read_text())["usage"]["sessions"] == 1


def test_panel_power_stops_on_press_not_release(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await p.press("power")
        await p.wait(5.0)
        assert p.state["status"] == "running"
        p.down("power")
        await p.wait(2 * FRAME_S)
        assert p.state["status"] in ("finishing", "idle")  # still held: already stopping
        await p.wait(1.0)
        p.up("power")
        await p.wait(2 * FRAME_S)
        await p.wait_for(lambda: p.state["status"] == "idle", 30.0)
        await p.wait(1.0)
        assert p.state["status"] == "idle"  # the release did not start it again

    run_panel(make_config(state_dir), script)


def test_panel_long_press_power_without_a_fault_does_nothing(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await p.hold(("power",), 4.0)
        await p.wait(1.0)
        assert p.state["status"] == "idle" and p.state["fault"] is None
        assert p.plant.all_off()

    run_panel(make_config(state_dir), script)


# -- settings ----------------------------------------------------------------------------------


def test_panel_program_cycles_when_idle_and_is_remembered(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        names = p.app.library.names()
        assert p.state["program"] == names[0]
        await p.press("program")
        assert p.state["program"] == names[1] and p.state["status"] == "idle"
        assert p.plant.all_off()
        p.app.store.flush()  # (the writer thread keeps the file)
        assert _stored_prefs(state_dir)["program"] == names[1]

    run_panel(make_config(state_dir), script)

    async def after_restart(p: Pan) -> None:
        assert p.state["program"] == p.app.library.names()[1]

    run_panel(make_config(state_dir), after_restart)


def test_panel_program_cycle_order_is_the_library_order(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        names = p.app.library.names()
        picked = []
        for _ in range(len(names)):
            await p.press("program")
            picked.append(p.state["program"])
        assert picked == [*names[1:], names[0]]

    run_panel(make_config(state_dir), script)


def test_panel_program_while_running_switches_at_a_safe_point(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        names = p.app.library.names()
        await p.press("power")
        assert p.state["program"] == names[0]
        await p.wait(10.0)
        await p.press("program")
        assert p.state["status"] == "running"  # no stop, no jerk
        await p.wait_for(lambda: p.state["program"] == names[1], 180.0)
        assert p.state["status"] == "running"
        await p.press("power")

    run_panel(make_config(state_dir), script)


def test_panel_intensity_cycles_one_to_five(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        assert p.state["intensity"] == 2
        seen = []
        for _ in range(5):
            await p.press("intensity")
            seen.append(p.state["intensity"])
            assert p.lit_bar() == seen[-1]
        assert seen == [3, 4, 5, 1, 2]

    run_panel(make_config(state_dir), script)


def test_panel_intensity_while_running_presses_harder(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await p.press("power")
        for _ in range(4):  # 2 -> 3 -> 4 -> 5 -> 1
            await p.press("intensity")
        assert p.state["intensity"] == 1
        assert p.state["status"] == "running"
        await p.wait(60.0)
        peak_low = 0.0
        for _ in range(600):
            await p.wait(0.1)
            peak_low = max(peak_low, *p.plant.pressure.values())
        for _ in range(4):  # 1 -> 5
            await p.press("intensity")
        assert p.state["intensity"] == 5
        await p.wait(60.0)
        peak_high = 0.0
        for _ in range(600):
            await p.wait(0.1)
            peak_high = max(peak_high, *p.plant.pressure.values())
        assert peak_high > peak_low, (peak_low, peak_high)

    run_panel(make_config(state_dir), script)


def test_panel_heat_toggles_and_heats_only_while_running(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        assert p.state["heat"] is False and not p.heat_led.state
        await p.press("heat")
        assert p.state["heat"] is True and p.heat_led.state
        await p.wait(5.0)
        assert p.plant.outputs()["heater"] == 0.0  # selected, but nothing heats while idle
        await p.press("power")
        await p.wait_for(lambda: p.plant.outputs()["heater"] > 0.0, 30.0)
        await p.press("heat")
        assert p.state["heat"] is False and not p.heat_led.state
        await p.wait(1.0)
        assert p.plant.outputs()["heater"] == 0.0
        await p.press("power")

    run_panel(make_config(state_dir), script)
    assert _stored_prefs(state_dir)["heat"] is False


def test_panel_timer_cycles_10_15_20_30(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        assert p.state["timer_min"] == 15
        seen = []
        for _ in range(4):
            await p.press("timer")
            seen.append(p.state["timer_min"])
        assert seen == [20, 30, 10, 15]

    run_panel(make_config(state_dir), script)


def test_panel_timer_is_clamped_to_the_configured_maximum(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        seen = []
        for _ in range(4):
            await p.press("timer")
            seen.append(p.state["timer_min"])
        assert seen == [20, 10, 15, 20]

    run_panel(make_config(state_dir, **{"session.timer_max_min": 20}), script)


# -- faults ------------------------------------------------------------------------------------


async def _latch_fault(p: Pan, fault: str = "i2c_dead") -> None:
    """Run a session and break the plant: a fault latches, everything goes off."""
    await p.press("power")
    await p.wait_for(p.running_outputs, 10.0)
    p.app.rig.inject_fault({"fault": fault})
    await p.wait_for(lambda: p.state["status"] == "fault", 30.0)
    await p.wait(2 * FRAME_S)
    assert p.plant.all_off()


def test_panel_long_press_power_resets_a_cleared_fault_after_3_s(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await _latch_fault(p)
        assert p.state["fault"]["code"] == "SENSOR_BUS_FAULT"
        await p.press("power")  # a short press does not reset
        assert p.state["status"] == "fault"
        p.app.rig.inject_fault({"fault": "clear"})
        await p.wait(1.0)
        p.down("power")
        await p.wait(2.8)
        assert p.state["status"] == "fault"  # not yet: 3 s
        await p.wait(0.4)
        assert p.state["status"] == "idle" and p.state["fault"] is None
        p.up("power")
        await p.wait(1.0)
        assert p.state["status"] == "idle"  # releasing the long press does not start a session
        assert p.plant.all_off()

    run_panel(make_config(state_dir), script)


def test_panel_refused_reset_keeps_the_fault_and_beeps(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        p.app.rig.inject_fault({"fault": "thermistor_open"})
        await p.wait_for(lambda: p.state["status"] == "fault", 10.0)
        assert p.state["fault"]["code"] == "TEMP_SENSOR_FAULT"
        await p.wait(3.0)
        before = p.buzzer_edges()
        await p.hold(("power",), 3.5)
        await p.wait(1.0)
        assert p.state["status"] == "fault"
        assert p.buzzer_edges() - before >= 1 + 3  # the press click, then the three refusal beeps
        await p.press("power")  # a short press while faulted: no start
        assert p.state["status"] == "fault" and p.plant.all_off()

    run_panel(make_config(state_dir), script)


def test_panel_settings_refused_while_a_fault_is_latched(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await _latch_fault(p)
        before = {k: p.state[k] for k in ("intensity", "heat", "timer_min", "program")}
        for name in ("intensity", "heat", "timer", "program"):
            await p.press(name)
        assert {k: p.state[k] for k in before} == before
        assert p.plant.all_off()

    run_panel(make_config(state_dir), script)


# -- child lock --------------------------------------------------------------------------------


def test_panel_child_lock_hold_program_and_intensity_3_s(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        before = {k: p.state[k] for k in ("intensity", "program")}
        p.down("program", "intensity")
        await p.wait(2.8)
        assert p.state["child_lock"] is False
        await p.wait(0.4)
        assert p.state["child_lock"] is True
        p.up("program", "intensity")
        await p.wait(2 * FRAME_S)
        assert {k: p.state[k] for k in before} == before  # the combination changed no setting

    run_panel(make_config(state_dir), script)
    assert _stored_prefs(state_dir)["child_lock"] is True


def test_panel_child_lock_combination_released_early_does_nothing(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        before = {k: p.state[k] for k in ("intensity", "program", "child_lock")}
        await p.hold(("program", "intensity"), 2.0)
        assert {k: p.state[k] for k in before} == before
        # one released first, the other a bit later: still nothing
        p.down("program", "intensity")
        await p.wait(1.0)
        p.up("intensity")
        await p.wait(2.5)
        p.up("program")
        await p.wait(2 * FRAME_S)
        assert {k: p.state[k] for k in before} == before

    run_panel(make_config(state_dir), script)


def test_panel_child_lock_blocks_everything_but_stop(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await p.hold(("program", "intensity"), 3.2)
        assert p.app.device.child_lock
        before = {k: p.state[k] for k in ("intensity", "heat", "timer_min", "program")}
        for name in ("intensity", "heat", "timer", "program"):
            await p.press(name)
        await p.press("power")
        assert {k: p.state[k] for k in before} == before
        assert p.state["status"] == "idle"
        await p.wait(2.0)
        assert p.plant.all_off()  # power did not start anything
        # a session started from the phone is still stopped by the power button
        p.app.device.execute(Start(action="start"), source="mqtt")
        await p.wait_for(p.running_outputs, 10.0)
        for name in ("intensity", "heat", "timer", "program"):
            await p.press(name)
        assert {k: p.state[k] for k in before} == before
        await p.press("power")
        await p.wait_for(lambda: p.state["status"] == "idle", 30.0)
        await p.wait(0.5)
        assert p.plant.all_off()
        # unlock with the same hold, then the buttons work again
        await p.hold(("program", "intensity"), 3.2)
        assert not p.app.device.child_lock
        await p.press("intensity")
        assert p.state["intensity"] == before["intensity"] % 5 + 1

    run_panel(make_config(state_dir), script)


def test_panel_child_lock_survives_a_restart(state_dir: Path) -> None:
    async def lock(p: Pan) -> None:
        await p.hold(("program", "intensity"), 3.2)
        assert p.state["child_lock"] is True

    run_panel(make_config(state_dir), lock)

    async def after_restart(p: Pan) -> None:
        assert p.app.device.child_lock is True
        assert p.state["child_lock"] is True
        intensity = p.state["intensity"]
        await p.press("intensity")
        await p.press("power")
        assert p.state["intensity"] == intensity and p.state["status"] == "idle"

    run_panel(make_config(state_dir), after_restart)


# -- lights and sound --------------------------------------------------------------------------


def test_panel_status_led_follows_the_session(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        idle = p.colour()
        assert idle[0] == 0 and 0 < idle[1] < 0.5 and idle[2] == 0  # dim green
        assert p.lit_bar() == p.state["intensity"]
        await p.press("power")
        assert p.colour() == (0.0, 1.0, 0.0)
        p.app.device.execute(Pause(action="pause"), source="mqtt")
        seen = set()
        for _ in range(40):
            await p.wait(FRAME_S)
            seen.add(p.colour())
        assert seen == {(0.0, 1.0, 0.0), (0.0, 0.0, 0.0)}  # paused blinks green
        p.app.device.execute(Resume(action="resume"), source="mqtt")
        await p.wait_for(lambda: max(p.plant.pressure.values()) > 30.0, 120.0)
        p.down("power")
        await p.wait(2 * FRAME_S)
        assert p.state["status"] == "finishing"  # venting, rollers stopping
        assert p.colour() == (0.0, 0.0, 1.0)
        p.up("power")
        await p.wait_for(lambda: p.state["status"] == "idle", 30.0)
        await p.wait(2 * FRAME_S)
        assert p.colour() == idle

    run_panel(make_config(state_dir), script)


@pytest.mark.parametrize(("fault", "code"), [("i2c_dead", "SENSOR_BUS_FAULT"),
                                           ("thermistor_open", "TEMP_SENSOR_FAULT")])
def test_panel_fault_blinks_red_with_the_class_count(state_dir: Path, fault: str, code: str) -> None:
    async def script(p: Pan) -> None:
        await _latch_fault(p, fault)
        assert p.state["fault"]["code"] == code
        assert p.lit_bar() == 0 and not p.heat_led.state
        count = fault_blinks(code)
        groups = 3
        reds = 0
        was_red = p.colour() == RED
        colours = set()
        for _ in range(round((2 * FAULT_BLINK_S * count + FAULT_GAP_S) * groups / FRAME_S)):
            await p.wait(FRAME_S)
            c = p.colour()
            colours.add(c)
            red = c == RED
            reds += red and not was_red
            was_red = red
        assert colours == {RED, DARK}
        assert groups * count - 1 <= reds <= groups * count  # the window may start inside a group

    run_panel(make_config(state_dir), script)


def test_panel_buzzer_beeps_on_presses_and_faults(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        start = p.buzzer_edges()
        await p.press("intensity")
        await p.wait(0.5)
        assert p.buzzer_edges() == start + 1
        assert not p.buzzer.state  # and stops again
        await _latch_fault(p)
        await p.wait(3.0)
        assert p.buzzer_edges() >= start + 1 + 1 + 3  # the power click, then three fault beeps
        assert not p.buzzer.state

    run_panel(make_config(state_dir), script)


def test_panel_muted_buzzer_stays_silent(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await p.press("intensity")
        await p.hold(("power",), 3.5)
        await _latch_fault(p)
        await p.wait(3.0)
        assert p.buzzer_edges() == 0 and not p.buzzer.state

    run_panel(make_config(state_dir, **{"panel.buzzer_muted": True}), script)


def test_panel_idle_for_long_goes_quiet_and_dark(state_dir: Path) -> None:
    async def script(p: Pan) -> None:
        await p.press("heat")
        assert p.heat_led.state and p.lit_bar() == 2
        await p.wait(STANDBY_AFTER_S + 1.0)
        assert p.colour() == STANDBY_GREEN
        assert not p.heat_led.state and p.lit_bar() == 0
        assert p.plant.all_off() and p.plant.outputs()["heater"] == 0.0
        await p.press("timer")  # any press wakes the panel
        assert p.heat_led.state and p.lit_bar() == 2

    run_panel(make_config(state_dir), script)
