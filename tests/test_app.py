"""The whole app: ``massager run --sim`` as a real process (ready, SIGTERM, exit 0, outputs off), a crashing
task, graceful stop, and what persists across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from device.app import App
from device.commands import ResetFault, Start
from device.config import Config, load_config
from device.panel import panel_task
from device.persist import STATE_FILE
from device.sim import sim_app
from drivers.clock import LoopClock, run_virtual
from tests.conftest import Broker, free_port

MASSAGER = Path(sys.executable).parent / "massager"
READY_DEADLINE_S = 30.0  # start-up of a fresh interpreter on a busy 2-core machine
EXIT_DEADLINE_S = 10.0  # finish stage (5 s at most) plus the MQTT stages
FINAL_OUTPUTS = "sim: final plant outputs "
LOAD_PINS = ("foot_rollers_forward", "foot_rollers_backward", "calf_rollers_forward", "calf_rollers_backward",
             "pump", "valve_foot", "valve_ankle", "valve_calf", "heater", "relay")


# -- the real process --------------------------------------------------------------------------


class Firmware:
    """``massager run --sim`` as a child process; stderr lines arrive on a queue from a reader thread."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [str(MASSAGER), "run", "--sim", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, needle: str, timeout_s: float) -> str:
        """The first output line containing ``needle``; fails at the deadline or at end of output."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {needle!r} within {timeout_s} s:\n" + "\n".join(self.seen))
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended without {needle!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if needle in line:
                return line

    def rest(self) -> list[str]:
        """Every line after the process ended."""
        self._reader.join(5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.seen
            if line is not None:
                self.seen.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _final_outputs(lines: list[str]) -> dict[str, Any]:
    found = [line for line in lines if FINAL_OUTPUTS in line]
    assert found, "the app did not log the plant's final outputs:\n" + "\n".join(lines)
    outputs: dict[str, Any] = json.loads(found[-1].split(FINAL_OUTPUTS, 1)[1])
    return outputs


def _assert_all_off(outputs: dict[str, Any]) -> None:
    on = {k: v for k, v in outputs.items() if k != "heartbeat" and v}
    assert not on, f"outputs still on at exit: {on}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_app_run_sim_process_reaches_ready_and_stops_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()  # nothing listens there: the firmware must run without a broker
    fw = Firmware("--state-dir", str(tmp_path / "state"), "--mqtt-port", str(port), "--device-id", "proc1")
    try:
        fw.wait_for_line("device.app: ready", READY_DEADLINE_S)
        assert fw.proc.poll() is None
        sent = time.monotonic()
        fw.proc.send_signal(sig)
        code = fw.proc.wait(EXIT_DEADLINE_S)
        took = time.monotonic() - sent
    finally:
        fw.kill()
    lines = fw.rest()
    assert code == 0, "\n".join(lines)
    assert took < EXIT_DEADLINE_S
    _assert_all_off(_final_outputs(lines))
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert not any("FAULT" in line or "CRITICAL" in line for line in lines), (
        "a healthy start and a clean stop latched a fault or tripped the deadman:\n" + "\n".join(lines)
    )
    assert (tmp_path / "state" / STATE_FILE).exists()


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto_pub")
def test_app_run_sim_process_sigterm_mid_session_finishes_and_exits_off(tmp_path: Path, broker: Broker) -> None:
    """A session started over MQTT runs (the plant shows it); SIGTERM vents, stops and exits 0, all off."""
    fw = Firmware("--state-dir", str(tmp_path / "state"), "--mqtt-port", str(broker.port),
                  "--device-id", "proc2")
    try:
        fw.wait_for_line("device.app: ready", READY_DEADLINE_S)
        subprocess.run(  # the retained state is announced after the device has subscribed to cmd
            ["mosquitto_sub", "-p", str(broker.port), "-t", "massager/proc2/state", "-C", "1", "-W", "15"],
            capture_output=True, check=True, timeout=20,
        )
        subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-t", "massager/proc2/cmd",
             "-m", json.dumps({"action": "start", "program": "relax"}), "-q", "1"],
            check=True, timeout=10,
        )
        fw.wait_for_line("command start from mqtt", 15.0)
        fw.wait_for_line("-> running", 5.0)
        plant = subprocess.run(  # 2 s of plant truth at 10 Hz
            ["mosquitto_sub", "-p", str(broker.port), "-t", "massager/proc2/sim/plant", "-C", "20", "-W", "15"],
            capture_output=True, check=True, timeout=20,
        )
        truths = [json.loads(line) for line in plant.stdout.decode().splitlines() if line.strip()]
        assert any(t["outputs"]["relay"] for t in truths), "the session never powered the actuators"
        fw.proc.send_signal(signal.SIGTERM)
        code = fw.proc.wait(EXIT_DEADLINE_S)
    finally:
        fw.kill()
    lines = fw.rest()
    assert code == 0, "\n".join(lines)
    _assert_all_off(_final_outputs(lines))


# -- in process, virtual time ------------------------------------------------------------------


def make_config(state_dir: Path, **overrides: Any) -> Config:
    """Defaults, no broker, state in ``state_dir``."""
    return load_config(None, {"state_dir": str(state_dir), "programs_dir": None, "mqtt.enabled": False,
                              **overrides})


class AtClose:
    """Records the plant right after ``run()``'s safe_off, before the pins are released."""

    def __init__(self, app: App) -> None:
        assert app.rig is not None
        self.outputs: dict[str, Any] | None = None
        self.pressure: dict[str, float] = {}
        plant = app.rig.plant
        real_close = app.hardware.close

        def close() -> None:
            self.outputs = plant.outputs()
            self.pressure = dict(plant.pressure)
            real_close()

        app.hardware.close = close  # type: ignore[method-assign]


def run_app(config: Config, tasks: dict[str, Callable[[App], Awaitable[None]]]) -> tuple[int, App, AtClose]:
    """Run an App with ``tasks`` on a VirtualTimeLoop; returns the exit status, the app, the plant at close."""
    holder: list[tuple[App, AtClose]] = []

    async def main() -> int:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)
        holder.append((app, AtClose(app)))
        app.extra_tasks.update(tasks)
        code = await app.run()
        left = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == [], f"the app left tasks running: {left}"
        return code

    code = run_virtual(main())
    return code, *holder[0]


async def _run_a_session(app: App) -> None:
    """Start a session and wait until the plant is really working."""
    assert app.rig is not None
    plant = app.rig.plant
    app.device.execute(Start(action="start"), source="test")
    for _ in range(2400):
        out = plant.outputs()
        rolling = out["foot_rollers"] or out["calf_rollers"]
        if out["relay"] and rolling and max(plant.pressure.values()) > 20.0:
            return
        await app.clock.sleep(0.05)
    raise AssertionError(f"the session never got going: {plant.truth()}")


def test_app_crashing_task_leaves_every_output_off_and_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    on_before: dict[str, Any] = {}

    async def boom(app: App) -> None:
        await _run_a_session(app)
        assert app.rig is not None
        on_before.update(app.rig.plant.outputs())
        raise RuntimeError("boom: a task crashed mid-session")

    with caplog.at_level(logging.INFO):
        code, app, at_close = run_app(make_config(tmp_path / "state"), {"panel": panel_task, "boom": boom})
    assert code != 0
    assert on_before["relay"] is True  # the crash really happened with the actuators powered
    assert at_close.outputs is not None
    _assert_all_off(at_close.outputs)
    _assert_all_off(_final_outputs(caplog.messages))
    assert any("task crashed" in r.getMessage() and "boom" in r.getMessage() for r in caplog.records)
    assert app.rig is not None
    pins = app.config.pins
    for name in LOAD_PINS:  # every load pin was last driven low before it was released
        assert not app.rig.factory.pin(getattr(pins, name)).state, name
    for led in (pins.led_status_red, pins.led_status_green, pins.led_status_blue, pins.led_heat, pins.buzzer):
        assert not app.rig.factory.pin(led).state  # the panel went dark too


def test_app_stop_ends_the_app_even_when_a_task_ignores_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A task stuck past the stop (a broker's goodbye that never ends, say) is cancelled, outputs off."""
    async def stuck(app: App) -> None:
        await app.ready.wait()
        app.request_stop()  # as SIGTERM does
        await asyncio.Event().wait()  # never looks at the stop event

    with caplog.at_level(logging.INFO):
        code, _app, at_close = run_app(make_config(tmp_path / "state"), {"stuck": stuck})
    assert code == 0
    assert at_close.outputs is not None
    _assert_all_off(at_close.outputs)
    assert any("after the stop: stuck; cancelling" in r.getMessage() for r in caplog.records)


def test_app_task_crashing_at_once_still_leaves_outputs_off(tmp_path: Path) -> None:
    async def boom(_app: App) -> None:
        raise ValueError("broken at start")

    code, _app, at_close = run_app(make_config(tmp_path / "state"), {"boom": boom})
    assert code != 0
    assert at_close.outputs is not None
    _assert_all_off(at_close.outputs)


def test_app_request_stop_mid_session_vents_and_exits_0(tmp_path: Path) -> None:
    async def stop_mid_session(app: App) -> None:
        await _run_a_session(app)
        app.request_stop()

    code, app, at_close = run_app(make_config(tmp_path / "state"), {"stopper": stop_mid_session})
    assert code == 0
    assert at_close.outputs is not None
    _assert_all_off(at_close.outputs)
    vented = app.config.safety.vented_mmhg
    assert all(p < vented for p in at_close.pressure.values()), at_close.pressure  # finished, not just cut


def test_app_usage_counters_and_preferences_persist_across_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"

    async def session(app: App) -> None:
        app.device.execute(Start(action="start", intensity=4, heat=True, heat_target_c=38.5, timer_min=10),
                           source="test")
        await app.clock.sleep(120.0)
        app.request_stop()

    code, _app, _ = run_app(make_config(state_dir), {"session": session})
    assert code == 0
    seen: dict[str, Any] = {}

    async def look(app: App) -> None:
        seen["prefs"] = app.device.preferences.model_dump()
        seen["usage"] = app.device.stored.usage.model_dump()
        seen["state"] = app.device.state()
        app.request_stop()

    code, _app, _ = run_app(make_config(state_dir), {"look": look})
    assert code == 0
    prefs = seen["prefs"]
    remembered = (prefs["intensity"], prefs["heat"], prefs["heat_target_c"], prefs["timer_min"])
    assert remembered == (4, True, 38.5, 10)
    assert seen["state"]["intensity"] == 4 and seen["state"]["timer_min"] == 10
    assert seen["state"]["heat_target_c"] == 38.5
    usage = seen["usage"]
    assert usage["sessions"] == 1
    assert usage["run_s"].get("heater", 0.0) > 60.0
    assert usage["run_s"].get("foot_rollers", 0.0) > 30.0


@pytest.mark.parametrize("content", [b"", b'{"preferences": {"intensity": 4, "chi', b"\x00" * 300])
def test_app_unreadable_state_comes_up_latched_until_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    """Zero-length, torn or NUL-filled: whether a fault was latched is unknown, so the device is latched."""
    from device.commands import CommandError
    from device.persist import STATE_COPY, STORAGE_FAULT

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_bytes(content)  # the only copy (as the firmware before two copies left it)
    seen: dict[str, Any] = {}

    async def look(app: App) -> None:
        await app.ready.wait()
        seen["state"] = app.device.state()
        with pytest.raises(CommandError, match="STORAGE_FAULT is latched"):
            app.device.execute(Start(action="start"), source="test")
        seen["outputs_off"] = app.rig is not None and app.rig.plant.all_off()
        app.device.execute(ResetFault(action="reset_fault"), source="test")  # a reset acknowledges it
        app.device.execute(Start(action="start"), source="test")  # and then it works
        await app.clock.sleep(5.0)
        seen["status"] = app.device.state()["status"]
        app.request_stop()

    with caplog.at_level(logging.ERROR, logger="device.persist"):
        code, _app, _ = run_app(make_config(state_dir), {"look": look})
    assert code == 0
    assert seen["state"]["status"] == "fault" and seen["state"]["fault"]["code"] == STORAGE_FAULT
    assert seen["outputs_off"] and seen["status"] == "running"
    assert any("kept aside" in m for m in caplog.messages)
    kept = [p for p in state_dir.iterdir() if p.name.startswith(f"{STATE_FILE}.damaged-")]
    assert [p.read_bytes() for p in kept] == [content]
    for name in (STATE_FILE, STATE_COPY):  # replaced by two whole copies
        data = json.loads((state_dir / name).read_text())
        assert data["usage"]["sessions"] == 1 and data["latched_fault"] is None


def test_app_latched_fault_survives_a_restart_until_reset(tmp_path: Path) -> None:
    """A fault latched before a crash or power cut is latched again at the next start."""
    from device.commands import CommandError

    config = load_config(None, {"state_dir": str(tmp_path), "programs_dir": None, "mqtt.enabled": False})

    async def first() -> None:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)

        async def trip(app: App) -> None:
            await app.ready.wait()
            assert app.rig is not None
            app.rig.plant.inject("i2c_dead")
            while app.supervisor.latched is None:
                await asyncio.sleep(0.05)
            app.stop_event.set()

        app.extra_tasks["trip"] = trip
        await app.run()

    async def second() -> tuple[str | None, str]:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)
        seen: list[Any] = []

        async def look(app: App) -> None:
            await app.ready.wait()
            state = app.device.state()
            seen.append(state["fault"]["code"] if state["fault"] else None)
            seen.append(state["status"])
            app.device.reset_fault()  # the bus works again after the restart: reset accepted
            app.stop_event.set()

        app.extra_tasks["look"] = look
        assert await app.run() == 0
        assert app.fault_log.entries()[-1]["code"] == "SENSOR_BUS_FAULT"
        assert len(app.fault_log.entries()) == 1  # restored, not logged twice
        return seen[0], seen[1]

    run_virtual(first())
    assert run_virtual(second()) == ("SENSOR_BUS_FAULT", "fault")

    async def third() -> object:
        clock = LoopClock()  # virtual time, the deadman's too: a starved host is no stalled loop
        app = sim_app(config, clock=clock, monotonic=clock.now)
        out: list[object] = []

        async def look(app: App) -> None:
            await app.ready.wait()
            out.append(app.supervisor.latched)
            with contextlib.suppress(CommandError):
                app.device.reset_fault()
            app.stop_event.set()

        app.extra_tasks["look"] = look
        await app.run()
        return out[0]

    assert run_virtual(third()) is None  # the reset was remembered


def test_app_start_up_venting_a_full_zone_does_not_trip_the_deadman(tmp_path: Path) -> None:
    """Air left in a zone after a restart takes about a second to vent: start-up passes feed the deadman."""
    from drivers.clock import ScaledClock

    config = load_config(None, {"state_dir": str(tmp_path), "programs_dir": None, "mqtt.enabled": False})

    async def main() -> object:
        app = sim_app(config, clock=ScaledClock())
        assert app.rig is not None
        app.rig.plant.pressure["calf"] = 60.0
        out: list[object] = []

        async def look(app: App) -> None:
            await app.ready.wait()
            out.append(app.supervisor.latched)
            app.stop_event.set()

        app.extra_tasks["look"] = look
        assert await app.run() == 0
        return out[0]

    assert asyncio.run(main()) is None


def test_app_stored_fault_with_an_unknown_code_is_kept_as_it_was(tmp_path: Path) -> None:
    """A fault code this firmware does not know (newer firmware, a downgrade) stays latched as it was."""
    from device.commands import CommandError
    from device.persist import LatchedFault, StateStore, StoredState

    state_dir = tmp_path / "state"
    stored = StoredState(latched_fault=LatchedFault(code="FUTURE_FAULT", message="from v9", since=1.7e9))
    assert StateStore(state_dir).save(stored)
    seen: dict[str, Any] = {}

    async def look(app: App) -> None:
        await app.ready.wait()
        seen["fault"] = app.device.state()["fault"]
        with pytest.raises(CommandError, match="FUTURE_FAULT is latched"):
            app.device.execute(Start(action="start"), source="test")
        app.device.execute(ResetFault(action="reset_fault"), source="test")
        seen["after"] = app.device.state()["fault"]
        app.request_stop()

    code, _app, _ = run_app(make_config(state_dir), {"look": look})
    assert code == 0
    assert seen["fault"]["code"] == "FUTURE_FAULT" and seen["fault"]["since"] == 1.7e9
    assert "from v9" in seen["fault"]["message"]
    assert seen["after"] is None


def test_app_fault_latched_on_a_full_disk_is_logged_kept_and_latched_after_a_restart(tmp_path: Path) -> None:
    """The reserve makes room for the fault record: fault log and state hold it; state shows the disk full."""
    from tests.test_persist import _fill, _small_filesystem

    with _small_filesystem(tmp_path / "small", 512) as small:
        config = make_config(small)
        seen: dict[str, Any] = {}

        async def trip(app: App) -> None:
            await app.ready.wait()
            assert app.rig is not None
            app.store.flush()
            _fill(small)
            app.rig.plant.inject("i2c_dead")
            while app.supervisor.latched is None:
                await asyncio.sleep(0.05)
            # the writer thread keeps the record: wait for it in real time (virtual time would not wait
            # for a thread; a starved host ran a hundred virtual pauses before the thread wrote)
            app.store.flush()
            seen["storage_error"] = app.device.state()["storage_error"]
            app.request_stop()

        code, app, _ = run_app(config, {"trip": trip})
        assert code == 0
        assert seen["storage_error"] is not None and "reserve" in seen["storage_error"]
        assert [e["code"] for e in app.fault_log.entries()] == ["SENSOR_BUS_FAULT"]

        async def look(app: App) -> None:
            await app.ready.wait()
            seen["fault"] = app.device.state()["fault"]
            app.request_stop()

        code, _app, _ = run_app(config, {"look": look})
        assert code == 0
        assert seen["fault"] is not None and seen["fault"]["code"] == "SENSOR_BUS_FAULT"
