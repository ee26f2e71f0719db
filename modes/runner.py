"""The program runner: which step of which phase runs now, and the outputs for this tick."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

from modes.airbags import AirbagControl
from modes.heat import HeatControl
from modes.limits import INTENSITY_MAX, INTENSITY_MIN, VENTED_MMHG, ZONES, Zone
from modes.program import PHASES, ProgramPlan, StepPlan
from modes.rollers import RollerDrive
from modes.signals import Command, Sample

# Intensity 1-5 scales pressure and roller speed; 5 presses to the fractions the program names.
INTENSITY_SCALE: Mapping[int, float] = {1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9, 5: 1.0}
WARM_COOL_SHARE = 0.5  # warm-up and cool-down shrink so they take at most half of a short session

assert set(INTENSITY_SCALE) == set(range(INTENSITY_MIN, INTENSITY_MAX + 1))


@dataclass(frozen=True, slots=True)
class Segment:
    """A program laid out over session run time: warm-up, repeated work, cool-down."""

    plan: ProgramPlan
    start_s: float
    end_s: float
    shrink: float  # factor applied to warm-up and cool-down step durations
    warm_s: float
    cool_s: float
    work_s: float  # one pass of the work phase
    ends: Mapping[str, tuple[float, ...]]  # cumulative step end times per phase (unshrunk)

    @classmethod
    def lay_out(cls, plan: ProgramPlan, start_s: float, available_s: float) -> Segment:
        """Lay ``plan`` out from ``start_s`` over at most ``available_s`` seconds of run time."""
        warm, work, cool = (plan.phase_s(p) for p in PHASES)
        length = available_s if plan.fills_timer else min(available_s, warm + work + cool)
        shrink = min(1.0, WARM_COOL_SHARE * length / (warm + cool))
        ends = {}
        for phase in PHASES:
            total, cumulative = 0.0, []
            for step in plan.phases[phase]:
                total += step.duration_s
                cumulative.append(total)
            ends[phase] = tuple(cumulative)
        return cls(plan, start_s, start_s + length, shrink, warm * shrink, cool * shrink, work, ends)

    def locate(self, run_s: float) -> StepPlan:
        """The step that runs at session run time ``run_s``."""
        remaining = self.end_s - run_s
        if remaining <= self.cool_s:
            phase, pos = "cool_down", (self.cool_s - remaining) / self.shrink
        elif run_s - self.start_s < self.warm_s:
            phase, pos = "warm_up", (run_s - self.start_s) / self.shrink
        else:
            phase, pos = "work", (run_s - self.start_s - self.warm_s) % self.work_s
        ends = self.ends[phase]
        index = min(bisect.bisect_right(ends, pos), len(ends) - 1)
        return self.plan.phases[phase][index]


class ProgramRunner:
    """Turns the current step, the sensors and the user's settings into one Command per tick."""

    def __init__(
        self, *, caps_mmhg: Mapping[Zone, float], heater_max_duty: float = 1.0, roller_max_speed: float = 1.0
    ) -> None:
        if not 0.0 < roller_max_speed <= 1.0:
            raise ValueError(f"roller_max_speed must be in (0, 1], got {roller_max_speed}")
        self.airbags = AirbagControl(caps_mmhg)
        self.heat = HeatControl(max_duty=heater_max_duty)
        self.foot_rollers = RollerDrive()
        self.calf_rollers = RollerDrive()
        self.roller_max_speed = roller_max_speed
        self.step_plan: StepPlan | None = None

    def restart(self, now: float) -> None:
        """Start from a clean slate (session start, resume): zones vented, rollers from rest, upward."""
        self.airbags.vent_all(now)
        self.foot_rollers.reset(now)
        self.calf_rollers.reset(now)
        self.heat.reset()

    def run(
        self,
        now: float,
        sample: Sample,
        step: StepPlan,
        *,
        intensity: int,
        skip: frozenset[Zone],
        heat_target_c: float | None,
    ) -> Command:
        """Outputs for a running session at ``step``."""
        self.step_plan = step
        scale = INTENSITY_SCALE[intensity]
        self.airbags.step(now, sample.pressure_mmhg, step.wave, scale, skip)
        roller_scale = scale * self.roller_max_speed
        heater = 0.0
        if heat_target_c is not None:
            heater = self.heat.step(now, sample.temperature_c, heat_target_c)
        elif self.heat.duty:
            self.heat.reset()
        return Command(
            foot_rollers=self.foot_rollers.step(now, step.foot_rollers, roller_scale),
            calf_rollers=self.calf_rollers.step(now, step.calf_rollers, roller_scale),
            pump=self.airbags.pump,
            connected=self.airbags.connected,
            heater=heater,
            relay=True,
        )

    def wind_down(self, now: float) -> Command:
        """Outputs while pausing or finishing: every zone vents, rollers ramp to a stop, heat off."""
        if self.airbags.connected or self.airbags.in_wave:
            self.airbags.vent_all(now)
        self.heat.reset()
        self.step_plan = None
        return Command(
            foot_rollers=self.foot_rollers.stop(now),
            calf_rollers=self.calf_rollers.stop(now),
            relay=True,
        )

    @property
    def rollers_stopped(self) -> bool:
        """True once both roller motors stand still."""
        return self.foot_rollers.speed == 0.0 and self.calf_rollers.speed == 0.0

    @staticmethod
    def vented(sample: Sample) -> bool:
        """True when every zone reads below the vented level."""
        pressure = sample.pressure_mmhg
        return all((p := pressure.get(z)) is not None and p < VENTED_MMHG for z in ZONES)
