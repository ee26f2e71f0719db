"""Massage programs as data: validated pydantic models, and the plain plans the runner executes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modes.limits import PRESSURE_CAP_MMHG, PROGRAM_COMPRESSION_MAX_S, TIMER_MAX_MIN, ZONES, Zone

PHASES: tuple[str, ...] = ("warm_up", "work", "cool_down")
MIN_PRESSURE_FRACTION = 0.05  # below this a zone barely touches the leg
MIN_REVERSING_S = 1.0  # a reversal stops the rollers for a moment: each direction runs at least this long
MAX_STEP_S = 1800.0
MAX_HOLD_S = 60.0
SHORT_PULSE_MAX_HOLD_S = 1.0
MIN_WAVE_PAUSE_S = 1.5  # every zone vents below 10 mmHg between two waves
MAX_PROGRAM_MIN = float(TIMER_MAX_MIN)


class ProgramError(ValueError):
    """A program is not valid; the message names the field and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Seconds = Annotated[float, Field(allow_inf_nan=False)]


class RollerMotion(_Model):
    """How one roller motor runs during a step: speed, and how long each way before it reverses."""

    speed: float = Field(ge=0.1, le=1.0, allow_inf_nan=False)  # fraction of top speed at intensity 5
    up_s: Seconds = Field(gt=0.0, le=600.0)  # rolling toward the heart
    down_s: Seconds = Field(0.0, ge=0.0, le=600.0)  # rolling back; 0 = never reverses

    @model_validator(mode="after")
    def _reversal(self) -> Self:
        if self.down_s > 0.0 and min(self.up_s, self.down_s) < MIN_REVERSING_S:
            raise ValueError(
                f"up_s = {self.up_s} s and down_s = {self.down_s} s: a reversing roller must run each "
                f"way at least {MIN_REVERSING_S} s (it stops before every reversal)"
            )
        return self


class Wave(_Model):
    """Sequential compression of airbag zones, distal to proximal, repeated for the whole step."""

    zones: tuple[Zone, ...] = Field(min_length=1, max_length=3)  # inflated in this order
    pressure: float | dict[Zone, float]  # fraction of each zone's cap at intensity 5 (all, or per zone)
    hold_s: Seconds = Field(0.0, ge=0.0, le=MAX_HOLD_S)  # each zone holds its pressure this long
    rise_mmhg_s: float | dict[Zone, float] | None = None  # ramp limit while inflating; None = pump speed
    pause_s: Seconds = Field(2.0, ge=MIN_WAVE_PAUSE_S, le=120.0)  # everything vented between waves
    pulse: Literal["long", "short"] = "long"  # long = compression (hand-off up the leg), short = percussion

    @model_validator(mode="before")
    @classmethod
    def _known_zones(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("pressure", "rise_mmhg_s"):
                given = data.get(name)
                if isinstance(given, dict):
                    unknown = [k for k in given if k not in ZONES]
                    if unknown:
                        raise ValueError(f"{name}: {unknown[0]!r} is not a zone (one of {', '.join(ZONES)})")
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        zones = self.zones
        if len(set(zones)) != len(zones):
            raise ValueError(f"zones {list(zones)}: a zone may appear only once in a wave")
        if list(zones) != sorted(zones, key=ZONES.index):
            raise ValueError(
                f"zones {list(zones)}: waves run toward the heart, so zones must be in the order "
                f"{', '.join(ZONES)}"
            )
        for zone in zones:
            fraction = self.fraction(zone, missing_ok=True)
            if fraction is None:
                raise ValueError(f"pressure has no value for zone {zone!r} of this wave")
            _check_fraction(f"pressure.{zone}" if isinstance(self.pressure, dict) else "pressure",
                            fraction, zone)
        for name, given in (("pressure", self.pressure), ("rise_mmhg_s", self.rise_mmhg_s)):
            if isinstance(given, dict):
                extra = [z for z in given if z not in zones]
                if extra:
                    raise ValueError(f"{name} names {', '.join(extra)}, which this wave does not inflate")
        rises = self.rise_mmhg_s.values() if isinstance(self.rise_mmhg_s, dict) else [self.rise_mmhg_s]
        for rise in rises:
            if rise is not None and not 1.0 <= rise <= 200.0:
                raise ValueError(f"rise_mmhg_s = {rise}: must be between 1 and 200 mmHg/s")
        for i, zone in enumerate(zones):  # how long each zone stays pressed, at intensity 5
            pressed_s = self._ramp_s(zone) + self.hold_s
            if self.pulse == "long" and i + 1 < len(zones):
                pressed_s += self._ramp_s(zones[i + 1])  # connected while it hands its air on
            if pressed_s > PROGRAM_COMPRESSION_MAX_S:
                raise ValueError(
                    f"zone {zone} would stay pressed about {pressed_s:.0f} s (ramp, hold_s = {self.hold_s} s "
                    f"and the hand-off); at most {PROGRAM_COMPRESSION_MAX_S:.0f} s: shorten hold_s or "
                    "raise rise_mmhg_s"
                )
        if self.pulse == "short":
            if self.hold_s > SHORT_PULSE_MAX_HOLD_S:
                raise ValueError(
                    f"hold_s = {self.hold_s} s: short pulses hold at most {SHORT_PULSE_MAX_HOLD_S} s "
                    "(use pulse = \"long\" for compression)"
                )
            if self.rise_mmhg_s is not None:
                raise ValueError("rise_mmhg_s: short pulses inflate at full pump speed; remove it")
        return self

    def _ramp_s(self, zone: Zone) -> float:
        """Seconds the ramp of ``zone`` takes from empty to its target at intensity 5."""
        rise = self.rise(zone)
        fraction = self.fraction(zone, missing_ok=True) or 0.0
        return fraction * PRESSURE_CAP_MMHG[zone] / rise if rise else 0.0

    def fraction(self, zone: Zone, *, missing_ok: bool = False) -> float | None:
        """The fraction of ``zone``'s cap this wave presses to (at intensity 5)."""
        if isinstance(self.pressure, dict):
            value = self.pressure.get(zone)
            if value is None and not missing_ok:
                raise KeyError(zone)
            return value
        return self.pressure

    def rise(self, zone: Zone) -> float | None:
        """The ramp limit for ``zone`` in mmHg/s (None: as fast as the pump fills it)."""
        if isinstance(self.rise_mmhg_s, dict):
            return self.rise_mmhg_s.get(zone)
        return self.rise_mmhg_s

    @property
    def peak(self) -> float:
        """The highest cap fraction of this wave."""
        return max(self.fraction(z) or 0.0 for z in self.zones)


def _check_fraction(field: str, fraction: float, zone: Zone) -> None:
    if not fraction == fraction or fraction > 1.0:  # NaN or above the cap
        raise ValueError(
            f"{field} = {fraction} would exceed the {zone} cap: pressure is a fraction of the "
            "zone's cap, at most 1.0"
        )
    if fraction < MIN_PRESSURE_FRACTION:
        raise ValueError(f"{field} = {fraction}: must be at least {MIN_PRESSURE_FRACTION} of the cap")


class Step(_Model):
    """One stretch of a phase: what the rollers and the airbags do for ``duration_s``."""

    duration_s: Seconds = Field(gt=0.0, le=MAX_STEP_S)
    label: str = Field("", max_length=80)
    foot_rollers: RollerMotion | None = None
    calf_rollers: RollerMotion | None = None
    wave: Wave | None = None

    @property
    def peak(self) -> float:
        """The highest cap fraction this step presses to (0 without a wave)."""
        return self.wave.peak if self.wave is not None else 0.0


class Program(_Model):
    """A massage program: warm-up, work and cool-down phases made of steps."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")
    description: str = Field(min_length=1, max_length=600)
    suits: str = Field("", max_length=300)  # whom the program suits, for the docs and the CLI
    fills_timer: bool = True  # True: the work phase repeats to fill the session timer
    warm_up: tuple[Step, ...] = ()
    work: tuple[Step, ...] = ()
    cool_down: tuple[Step, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _phases_present(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for phase in PHASES:
                steps = data.get(phase)
                if not steps:
                    raise ValueError(f"{phase}: the phase has no steps (a phase cannot be zero-length)")
        return data

    @model_validator(mode="after")
    def _shape(self) -> Self:
        work_peak = max(s.peak for s in self.work)
        warm_peak = max(s.peak for s in self.warm_up)
        if warm_peak > work_peak:
            raise ValueError(
                f"warm_up presses to {warm_peak} of the cap, harder than the work phase ({work_peak}): "
                "a program starts gently"
            )
        previous = work_peak
        for i, step in enumerate(self.cool_down):
            if step.peak > previous:
                raise ValueError(
                    f"cool_down.{i}: presses to {step.peak} of the cap after {previous}: the cool-down "
                    "gets lighter step by step, never harder than the work phase"
                )
            previous = step.peak
        warm, work, cool = (self.phase_s(p) for p in PHASES)
        if warm + cool > MAX_PROGRAM_MIN * 60.0 / 2:
            raise ValueError(
                f"warm_up and cool_down last {(warm + cool) / 60:.1f} min together: at most "
                f"{MAX_PROGRAM_MIN / 2:.0f} min"
            )
        if not self.fills_timer and warm + work + cool > MAX_PROGRAM_MIN * 60.0:
            raise ValueError(
                f"the program lasts {(warm + work + cool) / 60:.1f} min: at most {MAX_PROGRAM_MIN:.0f} min"
            )
        return self

    def steps(self, phase: str) -> tuple[Step, ...]:
        """The steps of ``phase`` (warm_up, work or cool_down)."""
        steps: tuple[Step, ...] = getattr(self, phase)
        return steps

    def phase_s(self, phase: str) -> float:
        """How long one pass of ``phase`` lasts, in seconds."""
        return sum(s.duration_s for s in self.steps(phase))

    @property
    def pass_s(self) -> float:
        """One pass through every phase, in seconds."""
        return sum(self.phase_s(p) for p in PHASES)

    def plan(self) -> ProgramPlan:
        """The plain, per-tick-cheap form of this program."""
        return ProgramPlan(
            name=self.name,
            fills_timer=self.fills_timer,
            phases={p: tuple(_plan_step(p, s) for s in self.steps(p)) for p in PHASES},
        )


def parse_program(data: Mapping[str, Any], source: str) -> Program:
    """Validate a program mapping; raises ProgramError naming ``source``, each bad field and the reason."""
    try:
        return Program.model_validate(data)
    except ValidationError as exc:
        raise ProgramError(format_errors(exc, source)) from None


def format_errors(exc: ValidationError, source: str) -> str:
    """One line per problem: source, dotted field path, reason, and the value given."""
    lines: list[str] = []
    for err in exc.errors():
        # drop pydantic's union branch names ("float", "dict[...]") from the field path
        parts = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p in _TYPE_NAMES or "[" in p))]
        loc = ".".join(parts) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/programs.md)"
        given = err.get("input")
        quiet = isinstance(given, dict | list | tuple) or err["type"] == "missing"
        shown = "" if quiet else f" (got {given!r})"
        line = f"{source}: {loc}: {msg}{shown}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


_TYPE_NAMES = frozenset({"float", "int", "str", "bool", "none", "function-after", "function-before"})


# -- plans: what the runner reads on every tick ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RollerPlan:
    """A roller motion in plain numbers."""

    speed: float
    up_s: float
    down_s: float


@dataclass(frozen=True, slots=True)
class WavePlan:
    """A wave in plain numbers: zones in order, cap fraction and ramp per zone."""

    zones: tuple[Zone, ...]
    fraction: Mapping[Zone, float]
    rise_mmhg_s: Mapping[Zone, float | None]
    hold_s: float
    pause_s: float
    short: bool


@dataclass(frozen=True, slots=True)
class StepPlan:
    """A step in plain numbers, with the phase it belongs to."""

    phase: str
    duration_s: float
    foot_rollers: RollerPlan | None
    calf_rollers: RollerPlan | None
    wave: WavePlan | None


@dataclass(frozen=True, slots=True)
class ProgramPlan:
    """A whole program in plain numbers."""

    name: str
    fills_timer: bool
    phases: Mapping[str, tuple[StepPlan, ...]]

    def phase_s(self, phase: str) -> float:
        """How long one pass of ``phase`` lasts, in seconds."""
        return sum(s.duration_s for s in self.phases[phase])


def _plan_roller(motion: RollerMotion | None) -> RollerPlan | None:
    if motion is None:
        return None
    return RollerPlan(speed=motion.speed, up_s=motion.up_s, down_s=motion.down_s)


def _plan_step(phase: str, step: Step) -> StepPlan:
    wave = step.wave
    plan = None
    if wave is not None:
        plan = WavePlan(
            zones=wave.zones,
            fraction={z: float(wave.fraction(z) or 0.0) for z in wave.zones},
            rise_mmhg_s={z: wave.rise(z) for z in wave.zones},
            hold_s=wave.hold_s,
            pause_s=wave.pause_s,
            short=wave.pulse == "short",
        )
    return StepPlan(
        phase=phase,
        duration_s=step.duration_s,
        foot_rollers=_plan_roller(step.foot_rollers),
        calf_rollers=_plan_roller(step.calf_rollers),
        wave=plan,
    )
