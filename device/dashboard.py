"""The simulator's live terminal view (``massager run --sim --dashboard``): the device and the plant.

Everything shown comes from ``Device.state()`` (what the firmware believes) and ``Plant.truth()``
(what the simulated unit does). Keys press the panel's MOCK button pins, so the real panel code
runs, and inject plant faults through the sim rig (``SimRig.inject_fault``):

    p power   g program   i intensity   h heat   t timer
    P hold power (reset a fault)   L hold program + intensity (child lock)
    1-9 plant faults (see FAULT_KEYS)   0 loop stall   c clear plant faults   q quit

Keys are read from stdin in cbreak mode when it is a terminal (restored on exit); otherwise the view
is drawn without keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import termios
import tty
from collections import deque
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel as Box
from rich.table import Table
from rich.text import Text

from device.commands import CommandError
from device.notice import SAFETY_NOTICE
from device.sim import SimRig
from device.tasks import TaskContext
from drivers.sim.plant import PLANT_FAULTS
from modes.limits import ZONES

log = logging.getLogger(__name__)

REFRESH_S = 0.25  # 4 Hz: cheap, and smooth enough to watch
HOLD_MARGIN_S = 0.3  # a held key releases this long after the panel's hold time
BAR_WIDTH = 30
LOG_LINES = 6
BUTTON_KEYS = {"p": "power", "g": "program", "i": "intensity", "h": "heat", "t": "timer"}
FAULT_KEYS = {str(i + 1): name for i, name in enumerate(PLANT_FAULTS)}  # 1-9
KEY_HELP = (
    "p power  g program  i intensity  h heat  t timer  P hold power (reset)  L child lock  "
    "0 loop stall  c clear faults  q quit\n"
    + "  ".join(f"{k} {v}" for k, v in FAULT_KEYS.items())
)
STATUS_STYLE = {"idle": "green", "running": "bold green", "paused": "yellow", "finishing": "blue",
                "fault": "bold white on red"}


class SimContext(TaskContext, Protocol):
    """A task context on a simulated unit (the app ``device.sim.sim_app`` builds is one)."""

    @property
    def rig(self) -> SimRig:
        """The simulated unit: its mock pins and its plant."""


class RecentLog(logging.Handler):
    """Keeps the last few log lines to show inside the view (stderr would tear the display)."""

    def __init__(self, lines: int = LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=lines)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Remember one formatted record."""
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)


def pressure_bar(value: float | None, cap: float, trip: float, width: int = BAR_WIDTH) -> Text:
    """A zone's pressure as a bar scaled to its trip: green to the cap, yellow past it, red at trip."""
    if value is None:
        return Text("-" * width + "  ---", style="red")
    filled = max(0, min(width, round(width * value / trip)))
    style = "red" if value >= trip else "yellow" if value > cap else "green"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {value:6.1f}")
    return bar


def _fault_text(name: str, params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k != "since_s"}
    return f"{name}({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else name


def plant_params_text(params: dict[str, Any]) -> str:
    """The plant's physics in two lines: the values ``--plant-seed`` drew (or the nominal ones)."""
    volumes = "/".join(f"{v:.2f}" for v in params["zone_volume"].values())
    lags = "/".join(f"{v:.1f}" for v in params["thermistor_lag_s"])
    loads = "/".join(f"{v:.2f}" for v in params["motor_load"].values())
    return (
        f"pump {params['pump_flow']:.1f} mmHg/s  heater {params['heater_full_c_per_s'] * 60:.2f} °C/min  "
        f"air {params['air_c']:.1f} °C  skin {params['skin_c']:.1f} °C  leak {params['leak_per_s']:.3f}/s\n"
        f"volumes {volumes}  vent {params['vent_tau_s']:.2f} s  thermistor lag {lags} s  "
        f"roller load {loads}"
    )


def _roller(speed: float) -> str:
    if abs(speed) < 0.005:
        return "stopped"
    return f"{'forward ' if speed > 0 else 'backward'} {abs(speed):4.0%}"


def _on(value: Any) -> str:
    return "ON" if value else "off"


class Dashboard:
    """The live view of one simulated app and its keys."""

    def __init__(self, context: SimContext, *, console: Console | None = None) -> None:
        if not isinstance(getattr(context, "rig", None), SimRig):
            raise ValueError("the dashboard needs --sim (it shows and drives the simulated plant)")
        self.context = context
        self.rig = context.rig
        self.console = console or Console()
        self.message = SAFETY_NOTICE if context.first_start else "ready"
        self.recent = RecentLog()
        self._holds: list[tuple[float, str]] = []  # (release at, button) on the app clock
        self._quitting = False
        cfg = context.config
        self._pins = {name: cfg.pins.model_dump()[f"button_{name}"] for name in BUTTON_KEYS.values()}
        self._hold_s = {"power": cfg.panel.long_press_s, "lock": cfg.panel.child_lock_hold_s}

    # -- keys -----------------------------------------------------------------------------------

    def _pin(self, button: str) -> Any:
        return self.rig.factory.pin(self._pins[button])

    def press(self, button: str) -> None:
        """A short press: the mock pin goes low and back high (the panel sees both edges)."""
        pin = self._pin(button)
        pin.drive_low()
        pin.drive_high()

    def hold(self, buttons: tuple[str, ...], seconds: float) -> None:
        """Hold buttons down; they are released ``seconds`` (plus a margin) later on the app clock."""
        release_at = self.context.clock.now() + seconds + HOLD_MARGIN_S
        for button in buttons:
            self._pin(button).drive_low()
            self._holds.append((release_at, button))

    def release_due(self) -> None:
        """Release every held button whose time has come."""
        now = self.context.clock.now()
        due = [b for t, b in self._holds if t <= now]
        if due:
            self._holds = [(t, b) for t, b in self._holds if t > now]
            for button in due:
                self._pin(button).drive_high()

    def handle_key(self, key: str) -> None:
        """Act on one key press."""
        if key in BUTTON_KEYS:
            self.press(BUTTON_KEYS[key])
            self.message = f"pressed {BUTTON_KEYS[key]}"
        elif key == "P":
            self.hold(("power",), self._hold_s["power"])
            self.message = f"holding power {self._hold_s['power']:.0f} s"
        elif key == "L":
            self.hold(("program", "intensity"), self._hold_s["lock"])
            self.message = f"holding program + intensity {self._hold_s['lock']:.0f} s"
        elif key in FAULT_KEYS or key in ("0", "c"):
            name = FAULT_KEYS.get(key) or ("loop_stall" if key == "0" else "clear")
            try:
                self.message = self.rig.inject_fault({"fault": name})
            except CommandError as exc:
                self.message = f"fault injection refused: {exc}"
        elif key == "q" and not self._quitting:  # a second stop request would exit at once
            self._quitting = True
            self.message = "stopping"
            self.context.request_stop()

    def _on_stdin(self, fd: int) -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        for key in data.decode("utf-8", errors="ignore"):
            self.handle_key(key)

    # -- drawing --------------------------------------------------------------------------------

    def render(self) -> Group:
        """The whole view, from the device's state and the plant's truth."""
        state = self.context.device.state()
        truth = self.rig.plant.truth()
        safety = self.context.config.safety
        status = state["status"]

        head = Text(f" {status.upper()} ", style=STATUS_STYLE.get(status, ""))
        head.append(f"  program {state['program']}", style="bold")
        head.append(f"  phase {state.get('phase') or '-'}  remaining {_minutes(state['remaining_s'])}"
                    f"  timer {state['timer_min']} min")
        intensity = state["intensity"]
        settings = Text(
            f"intensity {'●' * intensity}{'○' * (5 - intensity)} {intensity}  "
            f"heat {_on(state['heat'])} ({state.get('heat_target_c', '-')} °C)  "
            f"child lock {_on(state['child_lock'])}  sim t {truth['t']:.1f} s"
        )
        fault = state["fault"]
        fault_line = (
            Text(f"FAULT {fault['code']}: {fault.get('message', '')}  (hold power / key P to reset)",
                 style="bold red")
            if fault else Text("no fault latched", style="green")
        )

        zones = Table(title="pressure (plant, mmHg)", title_justify="left", box=None, padding=(0, 1))
        zones.add_column("zone")
        zones.add_column("bar (to trip)")
        zones.add_column("firmware", justify="right")
        zones.add_column("cap / trip", justify="right")
        for zone in ZONES:
            cap = safety.pressure_cap_mmhg[zone]
            trip = safety.pressure_trip_mmhg[zone]
            seen = state["pressure_mmhg"].get(zone)
            zones.add_row(
                zone,
                pressure_bar(truth["pressure_mmhg"][zone], cap, trip),
                "-" if seen is None else f"{seen:.1f}",
                f"{cap:.0f} / {trip:.0f}",
            )

        out = truth["outputs"]
        parts = Table.grid(padding=(0, 2))
        temps = "  ".join(f"{k} {v:.1f} °C" for k, v in truth["temperature_c"].items())
        parts.add_row("temperatures", f"{temps}  (pad {truth['pad_c']:.1f} °C, trip {safety.trip_temp_c:.0f})")
        amps = truth["motor_current_a"]
        parts.add_row("foot rollers", f"{_roller(out['foot_rollers'])}  {amps['foot_rollers']:.2f} A")
        parts.add_row("calf rollers", f"{_roller(out['calf_rollers'])}  {amps['calf_rollers']:.2f} A")
        valves = "  ".join(f"{z} {'connected' if out[f'valve_{z}'] else 'venting'}" for z in ZONES)
        parts.add_row("pump / valves", f"pump {out['pump']:.0%}   {valves}")
        parts.add_row(
            "heater / relay",
            f"heater {out['heater']:.0%}   relay {_on(out['relay'])}   "
            f"heartbeat {'●' if out['heartbeat'] else '○'}",
        )
        plant_faults = ", ".join(_fault_text(n, p) for n, p in truth["fault_params"].items()) or "none"
        parts.add_row("plant faults", Text(plant_faults, style="red" if truth["faults"] else ""))
        parts.add_row("plant", plant_params_text(truth["params"]))

        body = Group(head, settings, fault_line, Text(""), zones, Text(""), parts)
        view = Box(body, title=f"massager sim · {self.context.device.device_id}", title_align="left")
        footer = Text(KEY_HELP, style="dim")
        log_lines = Text("\n".join(self.recent.lines), style="dim")
        return Group(view, Text(f"> {self.message}", style="cyan"), log_lines, footer)

    # -- the task -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Draw at ``REFRESH_S`` until the app stops; read keys when stdin is a terminal."""
        loop = asyncio.get_running_loop()
        fd = _stdin_fd()
        saved: list[Any] | None = None
        root = logging.getLogger()
        muted = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                 and getattr(h.stream, "isatty", lambda: False)()] if self.console.is_terminal else []
        for handler in muted:
            root.removeHandler(handler)
        root.addHandler(self.recent)
        try:
            if fd is not None:
                saved = termios.tcgetattr(fd)
                tty.setcbreak(fd)
                loop.add_reader(fd, self._on_stdin, fd)
            else:
                self.message = "stdin is not a terminal: keys are off"
            with Live(self.render(), console=self.console, auto_refresh=False,
                      redirect_stdout=False, redirect_stderr=False) as live:
                while not self.context.stop_event.is_set():
                    self.release_due()
                    live.update(self.render(), refresh=True)
                    await asyncio.sleep(REFRESH_S)
                live.update(self.render(), refresh=True)
        finally:
            if fd is not None:
                loop.remove_reader(fd)
                if saved is not None:
                    with contextlib.suppress(termios.error):
                        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            root.removeHandler(self.recent)
            for handler in muted:
                root.addHandler(handler)


def _stdin_fd() -> int | None:
    """The stdin file descriptor when it is a terminal, else None."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return None
    return fd if os.isatty(fd) else None


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    return f"{s // 60}:{s % 60:02d}"


async def dashboard_task(context: SimContext) -> None:
    """The live view as one of the app's tasks (``--sim`` only; without it, log why and end)."""
    if not isinstance(getattr(context, "rig", None), SimRig):
        log.error("the dashboard needs --sim; running without it")
        return
    await Dashboard(context).run()
