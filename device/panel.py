"""The front panel: buttons into the one command path; status LED, heat LED, intensity bar and buzzer.

Buttons (gpiozero ``DigitalInputDevice``, pull-up, debounced) call back on gpiozero's threads; each callback
only posts ``(button, pressed)`` into an asyncio queue with ``loop.call_soon_threadsafe``. The panel task
drains the queue every frame on the injected clock, times long presses and the child-lock hold on
that clock too (so they work in virtual time and with ``--time-scale``), and draws the LEDs and the
buzzer from the device's state, re-read when ``Device.subscribe`` flags a change and once a second.

Buttons:

- ``power``: while a session runs or is paused, stop it at once (on press; works with the child lock
  on). When idle, a short press starts the last-used program. Held ``panel.long_press_s`` (3 s):
  resets a latched fault; a refused reset gives the error beep.
- ``program`` cycles the programs (idle: selects; running: switches at the next safe point),
  ``intensity`` cycles 1-5, ``heat`` toggles heat, ``timer`` cycles 10 / 15 / 20 / 30 min (clamped to
  ``session.timer_max_min``). These act when released.
- ``program`` + ``intensity`` held together ``panel.child_lock_hold_s`` (3 s) lock or unlock the panel;
  pressing them together never changes a setting. While locked only ``power`` (stop) works.

Status LED: idle dim green (a faint standby glow after ``STANDBY_AFTER_S`` without activity, with the
heat LED and intensity bar dark), running green, paused blinking green, finishing blue, fault blinking
red: a group of N blinks, then a pause, where N names the fault class (``FAULT_BLINKS``):

    1  heat: OVER_TEMPERATURE, HEATER_OVER_TARGET, HEATER_RUNAWAY, HEAT_BALANCE
    2  temperature sensor: TEMP_SENSOR_FAULT
    3  air: OVER_PRESSURE, PRESSURE_NOT_RISING, PRESSURE_SENSOR_FAULT, VALVE_STUCK, PUMP_OVERRUN,
       COMPRESSION_TOO_LONG
    4  rollers: MOTOR_STALL
    5  sensor bus or storage: SENSOR_BUS_FAULT, STORAGE_FAULT
    6  control loop, power rail or anything else: CONTROL_LOOP_STALL, RELAY_WELDED, POWER_FAULT,
       unknown codes

A warning that is no hazard (the heat target cannot be reached) lights the heat LED blinking slowly.

Buzzer (silent with ``panel.buzzer_muted``): a click on every press, two short beeps when the child
lock toggles or a fault resets, three beeps when a press is refused, three long beeps when a fault
latches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from gpiozero import LED, RGBLED, Buzzer, DigitalInputDevice, LEDBarGraph

from device.commands import CommandError, Set, Start, Stop
from device.tasks import TaskContext
from modes.limits import INTENSITY_MAX, INTENSITY_MIN

log = logging.getLogger(__name__)

BUTTONS = ("power", "program", "intensity", "heat", "timer")
SETTING_BUTTONS = ("program", "intensity", "heat", "timer")
FRAME_S = 0.1  # panel frame while animating: blink, beep and long-press resolution
# (calm panels wake once per REFRESH_S; button edges and state changes wake it at once)
REFRESH_S = 1.0  # re-read the device state at least this often even without a change notice
STANDBY_AFTER_S = 300.0  # idle this long without activity: LEDs go to standby
TIMER_CHOICES_MIN = (10, 15, 20, 30)

Colour = tuple[float, float, float]
DARK: Colour = (0.0, 0.0, 0.0)
IDLE_GREEN: Colour = (0.0, 0.15, 0.0)
STANDBY_GREEN: Colour = (0.0, 0.03, 0.0)
GREEN: Colour = (0.0, 1.0, 0.0)
BLUE: Colour = (0.0, 0.0, 1.0)
RED: Colour = (1.0, 0.0, 0.0)

PAUSE_BLINK_S = 0.5  # paused: 0.5 s on, 0.5 s off
FAULT_BLINK_S = 0.3  # fault: each blink 0.3 s on, 0.3 s off ...
FAULT_GAP_S = 1.5  # ... then dark this long before the group repeats

FAULT_BLINKS: dict[str, int] = {
    "OVER_TEMPERATURE": 1,
    "HEATER_OVER_TARGET": 1,
    "HEATER_RUNAWAY": 1,
    "HEATER_NOT_HEATING": 1,
    "HEAT_BALANCE": 1,
    "TEMP_SENSOR_FAULT": 2,
    "OVER_PRESSURE": 3,
    "PRESSURE_NOT_RISING": 3,
    "PRESSURE_SENSOR_FAULT": 3,
    "VALVE_STUCK": 3,
    "PUMP_OVERRUN": 3,
    "COMPRESSION_TOO_LONG": 3,
    "MOTOR_STALL": 4,
    "SENSOR_BUS_FAULT": 5,
    "STORAGE_FAULT": 5,
    "CONTROL_LOOP_STALL": 6,
    "RELAY_WELDED": 6,
    "POWER_FAULT": 6,
}
OTHER_FAULT_BLINKS = 6

Beep = tuple[tuple[float, float], ...]  # (on seconds, off seconds) per beep
BEEP_PRESS: Beep = ((0.05, 0.0),)
BEEP_CONFIRM: Beep = ((0.1, 0.1), (0.1, 0.0))
BEEP_REFUSED: Beep = ((0.1, 0.1), (0.1, 0.1), (0.1, 0.0))
BEEP_FAULT: Beep = ((0.5, 0.3), (0.5, 0.3), (0.5, 0.0))


def fault_blinks(code: str | None) -> int:
    """How many blinks per group the status LED gives for a fault code."""
    return FAULT_BLINKS.get(str(code), OTHER_FAULT_BLINKS)


def status_colour(status: str, fault_code: str | None, t: float, *, standby: bool = False) -> Colour:
    """The status LED's colour at time ``t`` for a device status (pure: the panel's LED table)."""
    if fault_code is not None or status == "fault":
        count = fault_blinks(fault_code)
        period = 2 * FAULT_BLINK_S * count + FAULT_GAP_S
        phase = t % period
        if phase < 2 * FAULT_BLINK_S * count and phase % (2 * FAULT_BLINK_S) < FAULT_BLINK_S:
            return RED
        return DARK
    if status == "running":
        return GREEN
    if status == "paused":
        return GREEN if t % (2 * PAUSE_BLINK_S) < PAUSE_BLINK_S else DARK
    if status == "finishing":
        return BLUE
    return STANDBY_GREEN if standby else IDLE_GREEN


def timer_choices(timer_max_min: int) -> tuple[int, ...]:
    """The timer button's steps, clamped to the configured maximum."""
    return tuple(sorted({min(m, timer_max_min) for m in TIMER_CHOICES_MIN}))


def next_timer(current: int, timer_max_min: int) -> int:
    """The timer after ``current`` in the button's cycle."""
    choices = timer_choices(timer_max_min)
    return next((m for m in choices if m > current), choices[0])


def next_intensity(current: int) -> int:
    """The intensity after ``current`` in the button's 1-5 cycle."""
    return current + 1 if current < INTENSITY_MAX else INTENSITY_MIN


def next_program(names: Sequence[str], current: str) -> str:
    """The program after ``current`` in the library's order."""
    if not names:
        return current
    try:
        return names[(list(names).index(current) + 1) % len(names)]
    except ValueError:
        return names[0]


class Panel:
    """Buttons, LEDs and buzzer of one device; ``run`` until the stop event, then ``close``."""

    def __init__(self, context: TaskContext, *, pin_factory: Any = None) -> None:
        cfg = context.config
        pins = cfg.pins
        self.device = context.device
        self.clock = context.clock
        self.library = context.library
        self.long_press_s = cfg.panel.long_press_s
        self.child_lock_hold_s = cfg.panel.child_lock_hold_s
        self.muted = cfg.panel.buzzer_muted
        self.timer_max_min = cfg.session.timer_max_min
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        self._woken = asyncio.Event()
        self._loop_thread = threading.get_ident()
        self._devices: list[Any] = []
        bounce = cfg.panel.bounce_s or None
        try:
            # Not gpiozero's Button: its hold thread would wake ten times a second per button, and the
            # panel times long presses itself on the app's clock.
            self.buttons: dict[str, DigitalInputDevice] = {}
            for name in BUTTONS:
                button = self._add(
                    DigitalInputDevice(getattr(pins, f"button_{name}"), pull_up=True, bounce_time=bounce,
                                       pin_factory=pin_factory)
                )
                button.when_activated = partial(self._post, name, True)
                button.when_deactivated = partial(self._post, name, False)
                self.buttons[name] = button
            self.status_led: RGBLED = self._add(
                RGBLED(pins.led_status_red, pins.led_status_green, pins.led_status_blue,
                       pwm=True, pin_factory=pin_factory)
            )
            self.heat_led: LED = self._add(LED(pins.led_heat, pin_factory=pin_factory))
            self.intensity_bar: LEDBarGraph = self._add(
                LEDBarGraph(*pins.led_intensity, pwm=False, pin_factory=pin_factory)
            )
            self.buzzer: Buzzer = self._add(Buzzer(pins.buzzer, pin_factory=pin_factory))
        except Exception:
            self.close()
            raise
        self._held: dict[str, float] = {}  # button -> when it was pressed (panel clock)
        self._consumed: set[str] = set()  # held buttons whose release must do nothing
        self._combo_since: float | None = None
        self._program_pick: str | None = None  # a program switch asked for while running
        self._beeps: deque[tuple[float, bool]] = deque()  # (when, buzzer on) edges still to play
        self._dirty = True
        self._state: dict[str, Any] = {}
        self._refreshed_at = float("-inf")
        self._activity_key: tuple[Any, ...] | None = None
        self._active_at = self.clock.now()
        self._shown: tuple[Any, ...] | None = None
        self._fault_shown = False
        self._unsubscribe: Callable[[], None] | None = self.device.subscribe(self._on_change)

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    # -- thread bridges ---------------------------------------------------------------------------

    def _post(self, name: str, pressed: bool) -> None:
        """From a gpiozero thread (or a mock pin's caller): hand the edge to the event loop."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: the panel is shutting down
            self._loop.call_soon_threadsafe(self._edge, name, pressed)

    def _edge(self, name: str, pressed: bool) -> None:
        """On the event loop: queue the edge and wake the panel task at once (button latency)."""
        self._events.put_nowait((name, pressed))
        self._woken.set()

    def _on_change(self, _reason: str) -> None:
        """Device listener: only flag and wake the task; the next frame re-reads the state."""
        self._dirty = True
        if threading.get_ident() == self._loop_thread:
            self._woken.set()
        else:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._woken.set)

    # -- the task -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Handle buttons and draw LEDs and buzzer every frame until ``stop`` is set."""
        log.info("panel ready%s", " (buzzer muted)" if self.muted else "")
        while not stop.is_set():
            self._woken.clear()
            self.frame(self.clock.now())
            if self._events.empty():
                await self._next_frame(FRAME_S if self._animating() else REFRESH_S)

    def _animating(self) -> bool:
        """True while something needs frame-rate timing: a held button, a beep, a blinking LED."""
        state = self._state
        return bool(self._held or self._beeps or state.get("fault") is not None
                    or state.get("status") in ("paused", "fault"))

    async def _next_frame(self, seconds: float) -> None:
        """Sleep ``seconds`` on the app clock, or less when a button edge or a state change arrives."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            woken.cancel()

    def frame(self, now: float) -> None:
        """One panel frame: button edges, held-button timing, then LEDs and buzzer."""
        while not self._events.empty():
            name, pressed = self._events.get_nowait()
            if pressed:
                self._pressed(name, now)
            else:
                self._released(name, now)
        if self._held:
            self._check_holds(now)
        self._draw(now)

    # -- buttons ------------------------------------------------------------------------------

    def _pressed(self, name: str, now: float) -> None:
        if name in self._held:
            return
        self._held[name] = now
        self._active_at = now
        self.beep(BEEP_PRESS, now)
        if "program" in self._held and "intensity" in self._held:
            self._combo_since = now  # the child-lock hold: neither button acts on release
            self._consumed.update(("program", "intensity"))
        if name == "power":
            status = self._fresh_state()["status"]
            if status in ("running", "paused"):
                self._consumed.add("power")
                self._execute(Stop(action="stop"), now)

    def _released(self, name: str, now: float) -> None:
        if self._held.pop(name, None) is None:
            return
        if name in ("program", "intensity"):
            self._combo_since = None
        if name in self._consumed:
            self._consumed.discard(name)
            return
        if name == "power":
            self._power_short(now)
        else:
            self._setting(name, now)

    def _check_holds(self, now: float) -> None:
        since = self._held.get("power")
        if since is not None and "power" not in self._consumed and now - since >= self.long_press_s:
            self._consumed.add("power")
            self._power_long(now)
        if self._combo_since is not None and now - self._combo_since >= self.child_lock_hold_s:
            self._combo_since = None
            locked = not self.device.child_lock
            self.device.set_child_lock(locked)
            log.info("panel: child lock %s", "on" if locked else "off")
            self.beep(BEEP_CONFIRM, now)

    def _power_short(self, now: float) -> None:
        state = self._fresh_state()
        status = state["status"]
        if status == "idle" and state["fault"] is None:
            if self._refuse_if_locked("start", now):
                return
            self._execute(Start(action="start"), now)
        elif status == "fault" or state["fault"] is not None:
            log.info("panel: a fault is latched; hold power %.0f s to reset it", self.long_press_s)
            self.beep(BEEP_REFUSED, now)

    def _power_long(self, now: float) -> None:
        if self._fresh_state()["fault"] is None:
            return
        if self._refuse_if_locked("reset_fault", now):
            return
        try:
            self.device.reset_fault()
        except CommandError as exc:
            log.info("panel: fault reset refused: %s", exc)
            self.beep(BEEP_REFUSED, now)
            return
        self.beep(BEEP_CONFIRM, now)

    def _setting(self, name: str, now: float) -> None:
        if self._refuse_if_locked(name, now):
            return
        state = self._fresh_state()
        running = state["status"] in ("running", "paused")
        if name == "program":
            current = self._program_pick if running and self._program_pick else state["program"]
            pick = next_program(self.library.names(), current)
            if self._execute(Set(action="set", program=pick), now) and running:
                self._program_pick = pick
        elif name == "intensity":
            self._execute(Set(action="set", intensity=next_intensity(state["intensity"])), now)
        elif name == "heat":
            self._execute(Set(action="set", heat=not state["heat"]), now)
        elif name == "timer":
            self._execute(Set(action="set", timer_min=next_timer(state["timer_min"], self.timer_max_min)), now)

    def _refuse_if_locked(self, what: str, now: float) -> bool:
        if not self.device.child_lock:
            return False
        log.info("panel: %s refused: the child lock is on (hold program + intensity %.0f s)",
                 what, self.child_lock_hold_s)
        self.beep(BEEP_REFUSED, now)
        return True

    def _execute(self, command: Any, now: float) -> bool:
        """Run a command through the device's one command path; a refusal gives the error beep."""
        try:
            self.device.execute(command, source="panel")
        except CommandError as exc:
            log.info("panel: %s refused: %s", command.action, exc)
            self.beep(BEEP_REFUSED, now)
            return False
        self._dirty = True
        return True

    # -- lights and sound ---------------------------------------------------------------------

    def beep(self, pattern: Beep, now: float) -> None:
        """Play ``pattern`` on the buzzer from ``now``, replacing what was playing (unless muted)."""
        if self.muted:
            return
        self._beeps.clear()
        t = now
        for on_s, off_s in pattern:
            self._beeps.append((t, True))
            t += on_s
            self._beeps.append((t, False))
            t += off_s

    def _fresh_state(self) -> dict[str, Any]:
        self._state = self.device.state()
        self._dirty = False
        return self._state

    def _draw(self, now: float) -> None:
        if self._dirty or now - self._refreshed_at >= REFRESH_S:
            self._refreshed_at = now
            self._fresh_state()
        state = self._state
        fault = state["fault"]
        if fault is not None and not self._fault_shown:
            self.beep(BEEP_FAULT, now)
        self._fault_shown = fault is not None
        status = state["status"]
        if status not in ("running", "paused") or state["program"] == self._program_pick:
            self._program_pick = None
        key = (status, state["program"], state["intensity"], state["heat"], state["timer_min"],
               state["child_lock"], fault is not None)
        if key != self._activity_key:
            self._activity_key = key
            self._active_at = now
        standby = status == "idle" and fault is None and now - self._active_at >= STANDBY_AFTER_S
        colour = status_colour(status, fault["code"] if fault else None, now, standby=standby)
        lit = not standby and fault is None
        heat_lit = lit and bool(state["heat"])
        if heat_lit and state.get("warnings"):  # the target cannot be reached: a slow blink (1 s on/off)
            heat_lit = int(now) % 2 == 0
        shown = (colour, heat_lit, state["intensity"] if lit else 0)
        if shown != self._shown:
            self._shown = shown
            self.status_led.value = colour
            self.heat_led.value = shown[1]
            self.intensity_bar.lit_count = shown[2]
        while self._beeps and self._beeps[0][0] <= now:
            _when, on = self._beeps.popleft()
            if on:
                self.buzzer.on()
            else:
                self.buzzer.off()

    def close(self) -> None:
        """Stop listening, turn every LED and the buzzer off, release the pins; safe to call twice."""
        unsubscribe: Callable[[], None] | None = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            self._unsubscribe = None
            with contextlib.suppress(ValueError):
                unsubscribe()
        for device in reversed(self._devices):
            try:
                device.close()
            except Exception:
                log.exception("panel: closing %r failed", device)
        self._devices.clear()


async def panel_task(context: TaskContext) -> None:
    """The panel as one of the app's tasks, on the context's pin factory (gpiozero's default on the Pi)."""
    panel = Panel(context, pin_factory=context.pin_factory)
    try:
        await panel.run(context.stop_event)
    finally:
        panel.close()
