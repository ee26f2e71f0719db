"""The massage session: one state machine over the program runner, the timer and the user's settings.

``idle`` -> ``running`` <-> ``paused``; ``running``/``paused`` -> ``finishing`` (every zone vents, the
rollers ramp to a stop, heat off) -> ``idle`` by itself; ``fault`` from every state, ``idle`` after a
reset. Pausing vents every zone, stops the rollers and the heat, and freezes the timer; a session left
paused for PAUSE_MAX_S finishes by itself. Heat only ever runs while the session runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from modes.library import ProgramLibrary, UnknownProgram
from modes.limits import (
    HEAT_TARGET_MIN_C,
    INTENSITY_MAX,
    INTENSITY_MIN,
    TIMER_MIN_MIN,
    ZONES,
    Zone,
)
from modes.runner import ProgramRunner, Segment
from modes.signals import OFF, Command, Sample

log = logging.getLogger(__name__)

PAUSE_MAX_S = 600.0  # a session paused this long finishes by itself
FINISH_MAX_S = 10.0  # finishing gives up waiting for the sensors after this and goes idle
_ZERO_SETPOINTS: Mapping[Zone, float] = MappingProxyType(dict.fromkeys(ZONES, 0.0))


class Status(StrEnum):
    """Where the session is."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHING = "finishing"
    FAULT = "fault"


_ALLOWED: Mapping[Status, frozenset[Status]] = {
    Status.IDLE: frozenset({Status.RUNNING, Status.FAULT}),
    Status.RUNNING: frozenset({Status.PAUSED, Status.FINISHING, Status.FAULT}),
    Status.PAUSED: frozenset({Status.RUNNING, Status.FINISHING, Status.FAULT}),
    Status.FINISHING: frozenset({Status.IDLE, Status.FAULT}),
    Status.FAULT: frozenset({Status.IDLE}),
}


class CommandRefused(ValueError):
    """A session command was refused and changed nothing; ``field`` names the command field at fault."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SessionSettings:
    """Plain values the app builds from the config (caps already within the hard caps)."""

    pressure_cap_mmhg: Mapping[Zone, float]
    heat_target_c: float = 40.0
    heat_target_max_c: float = 42.0
    heater_max_duty: float = 1.0
    roller_max_speed: float = 1.0
    timer_default_min: int = 15
    timer_max_min: int = 30
    default_program: str = "relax"
    default_intensity: int = 2
    skip_zones: frozenset[Zone] = frozenset()


@dataclass(frozen=True)
class SessionSnapshot:
    """The session as the app, the supervisor and MQTT see it right now."""

    status: Status
    program: str
    phase: str | None  # warm_up, work, cool_down; None unless running or paused
    intensity: int
    heat: bool
    heat_target_c: float
    timer_min: int
    remaining_s: float | None  # None when idle or in fault
    skip_zones: tuple[Zone, ...]
    setpoints_mmhg: Mapping[Zone, float] = field(default_factory=lambda: dict(_ZERO_SETPOINTS))
    heat_active: bool = False  # heater control is driving toward heat_target_c now


class Session:
    """The session state machine; ``step(now, sample)`` returns the outputs at 20 Hz."""

    def __init__(self, *, library: ProgramLibrary, settings: SessionSettings) -> None:
        self._library = library
        self._settings = settings
        self._runner = ProgramRunner(
            caps_mmhg=settings.pressure_cap_mmhg,
            heater_max_duty=settings.heater_max_duty,
            roller_max_speed=settings.roller_max_speed,
        )
        self._status = Status.IDLE
        self._program = self._default_program(settings.default_program)
        self._intensity = self._check_intensity(settings.default_intensity)
        self._heat = False
        self._heat_target_c = self._check_heat_target(settings.heat_target_c)
        self._timer_min = self._check_timer(settings.timer_default_min)
        self._skip = self._check_skip(settings.skip_zones)
        self._segment: Segment | None = None
        self._next_program: str | None = None  # switches at the next safe point (between waves)
        self._run_s = 0.0  # session run time, paused time excluded
        self._last_now = 0.0
        self._since = 0.0  # when the current status began

    # -- reading ------------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """The current status."""
        return self._status

    @property
    def library(self) -> ProgramLibrary:
        """The programs this session can run."""
        return self._library

    def snapshot(self) -> SessionSnapshot:
        """The session right now (cheap: built on every tick)."""
        status = self._status
        running = status is Status.RUNNING
        phase = None
        remaining = None
        if status in (Status.RUNNING, Status.PAUSED) and self._segment is not None:
            step = self._segment.locate(self._run_s)
            phase = step.phase
            remaining = max(0.0, self._segment.end_s - self._run_s)
        elif status is Status.FINISHING:
            remaining = 0.0
        return SessionSnapshot(
            status=status,
            program=self._program,
            phase=phase,
            intensity=self._intensity,
            heat=self._heat,
            heat_target_c=self._heat_target_c,
            timer_min=self._timer_min,
            remaining_s=remaining,
            skip_zones=tuple(z for z in ZONES if z in self._skip),
            setpoints_mmhg=dict(self._runner.airbags.setpoints) if running else _ZERO_SETPOINTS,
            heat_active=running and self._heat,
        )

    # -- commands -----------------------------------------------------------------------------

    def start(
        self,
        now: float,
        *,
        program: str | None = None,
        intensity: int | None = None,
        heat: bool | None = None,
        timer_min: int | None = None,
        heat_target_c: float | None = None,
    ) -> None:
        """Start a session (idle -> running); values not given keep the current selection."""
        self._refuse_unless("start", Status.IDLE)
        values = self._validate(program, intensity, heat, timer_min, heat_target_c, None)
        self._apply(values)
        self._transition(Status.RUNNING, now, "start")
        self._run_s = 0.0
        self._last_now = now
        self._next_program = None
        self._runner.restart(now)
        self._segment = Segment.lay_out(self._library.plan(self._program), 0.0, self._timer_min * 60.0)
        log.info(
            "session started: %s, intensity %d, heat %s, timer %d min",
            self._program, self._intensity, "on" if self._heat else "off", self._timer_min,
        )

    def stop(self, now: float) -> None:
        """Finish the session (running/paused -> finishing -> idle once vented and stopped)."""
        self._refuse_unless("stop", Status.RUNNING, Status.PAUSED)
        self._transition(Status.FINISHING, now, "stop")

    def pause(self, now: float) -> None:
        """Pause (running -> paused): zones vent, rollers stop, heat off, the timer stands still."""
        self._refuse_unless("pause", Status.RUNNING)
        self._advance(now)
        self._transition(Status.PAUSED, now, "pause")

    def resume(self, now: float) -> None:
        """Resume (paused -> running): the timer runs on and a fresh wave starts gently."""
        self._refuse_unless("resume", Status.PAUSED)
        self._transition(Status.RUNNING, now, "resume")
        self._last_now = now
        self._runner.restart(now)
        if self._next_program is not None:
            self._switch_program()

    def update(
        self,
        now: float,
        *,
        program: str | None = None,
        intensity: int | None = None,
        heat: bool | None = None,
        timer_min: int | None = None,
        skip_zones: Iterable[str] | None = None,
        heat_target_c: float | None = None,
    ) -> None:
        """Change settings (idle, running or paused); a running session takes them at its next safe point."""
        self._refuse_unless("set", Status.IDLE, Status.RUNNING, Status.PAUSED)
        values = self._validate(program, intensity, heat, timer_min, heat_target_c, skip_zones)
        if self._status is Status.IDLE:
            self._apply(values)
            return
        self._advance(now)
        old_skip = self._skip
        old_program = self._program
        self._apply(values)
        if "program" in values and values["program"] != old_program:
            self._next_program = values["program"]
            log.info("program %s -> %s at the next safe point", old_program, values["program"])
        if "timer_min" in values:
            self._retime()
        newly_skipped = self._skip - old_skip
        if newly_skipped and newly_skipped & set(self._runner.airbags.wave_zones):
            self._runner.airbags.vent_all(now, pause_s=2.0)  # stop pressing a zone the user just skipped

    def enter_fault(self, now: float) -> None:
        """Any state -> fault: step() returns OFF until clear_fault() (no-op when already in fault)."""
        if self._status is Status.FAULT:
            return
        self._advance(now)
        self._transition(Status.FAULT, now, "fault")
        runner = self._runner
        runner.airbags.vent_all(now)
        runner.heat.reset()
        runner.foot_rollers.halt(now)
        runner.calf_rollers.halt(now)

    def clear_fault(self, now: float) -> None:
        """Fault -> idle (the safety supervisor decides whether the reset is allowed)."""
        self._refuse_unless("reset_fault", Status.FAULT)
        self._transition(Status.IDLE, now, "reset")
        self._segment = None

    # -- the tick -----------------------------------------------------------------------------

    def step(self, now: float, sample: Sample) -> Command:
        """The outputs for this tick (20 Hz)."""
        status = self._status
        if status is Status.RUNNING:
            return self._step_running(now, sample)
        if status is Status.PAUSED:
            if now - self._since >= PAUSE_MAX_S:
                log.info("paused for %.0f s: finishing the session", now - self._since)
                self._transition(Status.FINISHING, now, "pause too long")
            return self._runner.wind_down(now)
        if status is Status.FINISHING:
            command = self._runner.wind_down(now)
            if self._runner.rollers_stopped and self._runner.vented(sample):
                self._transition(Status.IDLE, now, "vented and stopped")
                return OFF
            if now - self._since >= FINISH_MAX_S:
                log.warning("finishing: zones not confirmed vented after %.0f s; going idle", FINISH_MAX_S)
                self._transition(Status.IDLE, now, "finish timeout")
                return OFF
            return command
        return OFF

    def _step_running(self, now: float, sample: Sample) -> Command:
        self._advance(now)
        segment = self._segment
        assert segment is not None
        if self._run_s >= segment.end_s:
            why = "timer ended" if segment.plan.fills_timer else "program done"
            self._transition(Status.FINISHING, now, why)
            return self._runner.wind_down(now)
        if self._next_program is not None and not self._runner.airbags.in_wave:
            self._switch_program()
            segment = self._segment
            assert segment is not None
        return self._runner.run(
            now,
            sample,
            segment.locate(self._run_s),
            intensity=self._intensity,
            skip=self._skip,
            heat_target_c=self._heat_target_c if self._heat else None,
        )

    # -- internals ----------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Count run time up to ``now`` while running."""
        if self._status is Status.RUNNING:
            self._run_s += max(0.0, now - self._last_now)
            self._last_now = now

    def _transition(self, new: Status, now: float, why: str) -> None:
        """The one way the status changes: refuses what the state machine does not allow, logs old -> new."""
        old = self._status
        if new not in _ALLOWED[old]:
            raise CommandRefused("action", f"cannot go from {old} to {new} ({why})")
        self._status = new
        self._since = now
        log.info("session %s -> %s (%s)", old, new, why)
        if new is Status.IDLE:
            self._segment = None
            self._next_program = None

    def _refuse_unless(self, action: str, *allowed: Status) -> None:
        if self._status not in allowed:
            states = " or ".join(str(s) for s in allowed)
            raise CommandRefused(
                "action", f"{action} is not possible while {self._status}; only while {states}"
            )

    def _switch_program(self) -> None:
        name = self._next_program
        assert name is not None
        self._next_program = None
        available = self._timer_min * 60.0 - self._run_s
        self._segment = Segment.lay_out(self._library.plan(name), self._run_s, max(available, 1.0))
        log.info("program switched to %s with %.0f s left", name, available)

    def _retime(self) -> None:
        """Lay the running program out again for a changed timer; never end before the cool-down."""
        old = self._segment
        if old is None:
            return
        new = Segment.lay_out(old.plan, old.start_s, max(self._timer_min * 60.0 - old.start_s, 1.0))
        if new.end_s < self._run_s + new.cool_s:
            new = replace(new, end_s=min(old.end_s, self._run_s + new.cool_s))
        self._segment = new
        log.info("timer %d min: %.0f s left", self._timer_min, new.end_s - self._run_s)

    def _apply(self, values: Mapping[str, Any]) -> None:
        """Take validated values (from _validate) as the current selection."""
        self._program = values.get("program", self._program)
        self._intensity = values.get("intensity", self._intensity)
        self._heat = values.get("heat", self._heat)
        self._timer_min = values.get("timer_min", self._timer_min)
        self._heat_target_c = values.get("heat_target_c", self._heat_target_c)
        self._skip = values.get("skip_zones", self._skip)

    def _validate(
        self,
        program: str | None,
        intensity: int | None,
        heat: bool | None,
        timer_min: int | None,
        heat_target_c: float | None,
        skip_zones: Iterable[str] | None,
    ) -> dict[str, Any]:
        """Check every given value first, so a refused command changes nothing."""
        values: dict[str, Any] = {}
        if program is not None:
            values["program"] = self._check_program(program)
        if intensity is not None:
            values["intensity"] = self._check_intensity(intensity)
        if heat is not None:
            if not isinstance(heat, bool):
                raise CommandRefused("heat", f"heat must be true or false, got {heat!r}")
            values["heat"] = heat
        if timer_min is not None:
            values["timer_min"] = self._check_timer(timer_min)
        if heat_target_c is not None:
            values["heat_target_c"] = self._check_heat_target(heat_target_c)
        if skip_zones is not None:
            values["skip_zones"] = self._check_skip(skip_zones)
        return values

    def _default_program(self, name: str) -> str:
        """The configured default program, or the first built-in when it is not in the library."""
        if name in self._library:
            return name
        fallback = self._library.names()[0]
        log.error("default program %r is not available (invalid or missing); using %s", name, fallback)
        return fallback

    def _check_program(self, name: object) -> str:
        if not isinstance(name, str):
            raise CommandRefused("program", f"program must be a name, got {name!r}")
        try:
            self._library.get(name)
        except UnknownProgram as exc:
            raise CommandRefused("program", str(exc)) from None
        return name

    @staticmethod
    def _check_intensity(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not INTENSITY_MIN <= value <= INTENSITY_MAX:
            raise CommandRefused(
                "intensity", f"intensity must be a whole number from {INTENSITY_MIN} to {INTENSITY_MAX}, "
                f"got {value!r}"
            )
        return value

    def _check_timer(self, value: object) -> int:
        high = self._settings.timer_max_min
        if isinstance(value, bool) or not isinstance(value, int) or not TIMER_MIN_MIN <= value <= high:
            raise CommandRefused(
                "timer_min", f"timer_min must be a whole number of minutes from {TIMER_MIN_MIN} to {high}, "
                f"got {value!r}"
            )
        return value

    def _check_heat_target(self, value: object) -> float:
        high = self._settings.heat_target_max_c
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not HEAT_TARGET_MIN_C <= value <= high
        ):
            raise CommandRefused(
                "heat_target_c", f"heat_target_c must be from {HEAT_TARGET_MIN_C} to {high} °C, got {value!r}"
            )
        return float(value)

    @staticmethod
    def _check_skip(zones: Iterable[str]) -> frozenset[Zone]:
        if isinstance(zones, str):
            raise CommandRefused("skip_zones", f"skip_zones must be a list of zones, got {zones!r}")
        chosen: set[Zone] = set()
        for zone in zones:
            if zone not in ZONES:
                raise CommandRefused(
                    "skip_zones", f"skip_zones: {zone!r} is not a zone (one of {', '.join(ZONES)})"
                )
            chosen.add(zone)
        return frozenset(chosen)
