"""The program library: built-in programs shipped as TOML, plus validated user programs from a directory."""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from modes.program import Program, ProgramError, ProgramPlan, parse_program

# The order the panel's program button cycles through.
BUILTIN_ORDER: tuple[str, ...] = (
    "relax",
    "circulation",
    "quick_boost",
    "recovery",
    "lymphatic",
    "percussion",
    "sensitive",
)
USER_SUFFIXES = (".toml", ".json")
MAX_USER_FILE_BYTES = 256 * 1024


class UnknownProgram(KeyError):
    """No program has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown program"


class ProgramLibrary:
    """Built-in and user programs by name; built-ins come first and cannot be replaced."""

    def __init__(self, builtin: Mapping[str, Program], user: Mapping[str, Program] | None = None) -> None:
        clash = sorted(set(builtin) & set(user or {}))
        if clash:
            raise ValueError(f"user programs may not reuse built-in names: {', '.join(clash)}")
        self.builtin: dict[str, Program] = dict(builtin)
        self.user: dict[str, Program] = dict(user or {})
        self._plans: dict[str, ProgramPlan] = {}

    def names(self) -> list[str]:
        """Every program name: built-ins in panel order, then user programs alphabetically."""
        return [*self.builtin, *sorted(self.user)]

    def __contains__(self, name: object) -> bool:
        return name in self.builtin or name in self.user

    def get(self, name: str) -> Program:
        """The program called ``name``; raises UnknownProgram naming the known ones."""
        program = self.builtin.get(name) or self.user.get(name)
        if program is None:
            raise UnknownProgram(f"unknown program {name!r}; known: {', '.join(self.names())}")
        return program

    def plan(self, name: str) -> ProgramPlan:
        """The runner's plan of ``name`` (built once, then cached)."""
        plan = self._plans.get(name)
        if plan is None:
            plan = self._plans[name] = self.get(name).plan()
        return plan

    def is_builtin(self, name: str) -> bool:
        """True for a program shipped with the firmware."""
        return name in self.builtin


def load_builtin() -> dict[str, Program]:
    """The built-in programs from the package's ``programs/*.toml``; an invalid one is a bug and raises."""
    return dict(_builtin_programs())


@functools.cache
def _builtin_programs() -> tuple[tuple[str, Program], ...]:
    """The built-ins in panel order, parsed once per process (package data; the programs are frozen)."""
    folder = resources.files("modes").joinpath("programs")
    found: dict[str, Program] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        program = parse_program(data, f"built-in {entry.name}")
        found[program.name] = program
    missing = [n for n in BUILTIN_ORDER if n not in found]
    if missing:
        raise ProgramError(f"built-in programs missing from the package: {', '.join(missing)}")
    ordered = {n: found.pop(n) for n in BUILTIN_ORDER}
    ordered.update(sorted(found.items()))
    return tuple(ordered.items())


def read_program_file(path: Path) -> Program:
    """Read and validate one user program file (TOML or JSON); raises ProgramError naming file and field."""
    try:
        size = path.stat().st_size
        if size > MAX_USER_FILE_BYTES:
            raise ProgramError(f"{path}: file is {size} bytes, more than {MAX_USER_FILE_BYTES}")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ProgramError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ProgramError(f"{path}: not UTF-8 text: {exc}") from None
    data: Any
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ProgramError(f"{path}: bad {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ProgramError(f"{path}: a program file must hold one table/object, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return parse_program(data, str(path))


def load_library(user_dir: Path | None) -> tuple[ProgramLibrary, list[str]]:
    """Built-ins plus every valid user program in ``user_dir``; problems name the file, field and reason.

    A missing or absent directory means no user programs. Invalid user programs are skipped, never run.
    """
    builtin = load_builtin()
    user: dict[str, Program] = {}
    problems: list[str] = []
    if user_dir is None or not user_dir.is_dir():
        if user_dir is not None and user_dir.exists():
            problems.append(f"{user_dir}: programs_dir is not a directory")
        return ProgramLibrary(builtin), problems
    try:
        files = sorted(p for p in user_dir.iterdir() if p.suffix in USER_SUFFIXES and p.is_file())
    except OSError as exc:
        return ProgramLibrary(builtin), [f"{user_dir}: cannot list programs_dir: {exc.strerror or exc}"]
    sources: dict[str, Path] = {}
    for path in files:
        try:
            program = read_program_file(path)
        except ProgramError as exc:
            problems.append(str(exc))
            continue
        if program.name in builtin:
            problems.append(f"{path}: name: {program.name!r} is a built-in program; choose another name")
        elif program.name in user:
            problems.append(f"{path}: name: {program.name!r} is already defined by {sources[program.name]}")
        else:
            user[program.name] = program
            sources[program.name] = path
    return ProgramLibrary(builtin, user), problems
