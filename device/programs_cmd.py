"""``massager programs [--json]``: list built-in and user programs with their duration and phases."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any, TextIO

from device.config import Config
from modes.library import ProgramLibrary, load_library
from modes.program import PHASES, Program, Step


def _step_summary(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"duration_s": step.duration_s}
    if step.label:
        out["label"] = step.label
    for motor in ("foot_rollers", "calf_rollers"):
        motion = getattr(step, motor)
        if motion is not None:
            out[motor] = motion.model_dump()
    if step.wave is not None:
        out["wave"] = step.wave.model_dump()
    return out


def describe(program: Program, *, source: str, timer_default_min: int) -> dict[str, Any]:
    """A JSON-ready description: name, source, description, duration and phases."""
    pass_min = round(program.pass_s / 60.0, 2)
    return {
        "name": program.name,
        "source": source,
        "description": program.description,
        "suits": program.suits,
        "fills_timer": program.fills_timer,
        "duration_min": timer_default_min if program.fills_timer else pass_min,
        "phases": {
            phase: {
                "duration_s": program.phase_s(phase),
                "repeats": phase == "work" and program.fills_timer,
                "steps": [_step_summary(s) for s in program.steps(phase)],
            }
            for phase in PHASES
        },
    }


def _duration_text(program: Program, timer_default_min: int) -> str:
    if program.fills_timer:
        return f"{timer_default_min} min by default (fills the session timer)"
    return f"{program.pass_s / 60.0:g} min (ends by itself)"


def _phase_text(program: Program, phase: str) -> str:
    steps = program.steps(phase)
    labels = ", ".join(s.label or f"step {i + 1}" for i, s in enumerate(steps))
    repeat = " (repeats)" if phase == "work" and program.fills_timer else ""
    return f"{phase.replace('_', '-')} {program.phase_s(phase) / 60.0:g} min{repeat}: {labels}"


def print_programs(
    library: ProgramLibrary,
    problems: list[str],
    *,
    as_json: bool,
    timer_default_min: int,
    out: TextIO,
    err: TextIO,
) -> None:
    """Write the program list as text or JSON (text: skipped user programs go to ``err``)."""
    entries = [
        describe(
            library.get(name),
            source="built-in" if library.is_builtin(name) else "user",
            timer_default_min=timer_default_min,
        )
        for name in library.names()
    ]
    if as_json:
        json.dump({"programs": entries, "problems": problems}, out, indent=2)
        out.write("\n")
        return
    for name in library.names():
        program = library.get(name)
        kind = "built-in" if library.is_builtin(name) else "user"
        out.write(f"{name} ({kind}) - {_duration_text(program, timer_default_min)}\n")
        out.write(textwrap.fill(program.description, 100, initial_indent="  ", subsequent_indent="  ") + "\n")
        if program.suits:
            out.write(textwrap.fill(f"Suits: {program.suits}", 100, initial_indent="  ",
                                    subsequent_indent="    ") + "\n")
        for phase in PHASES:
            out.write(f"  {_phase_text(program, phase)}\n")
        out.write("\n")
    for problem in problems:
        err.write(f"skipped user program: {problem}\n")


def programs_main(args: argparse.Namespace, config: Config) -> int:
    """List the programs; exit 1 when a user program was invalid (it is listed as skipped)."""
    library, problems = load_library(config.programs_dir)
    print_programs(
        library,
        problems,
        as_json=bool(getattr(args, "json", False)),
        timer_default_min=config.session.timer_default_min,
        out=sys.stdout,
        err=sys.stderr,
    )
    return 1 if problems else 0
