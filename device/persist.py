"""Settings and usage counters kept across restarts: written on change only, atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modes import limits

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


class Preferences(BaseModel):
    """What the user chose last: restored at power-on."""

    model_config = ConfigDict(extra="ignore")

    program: str = Field("relax", min_length=1, max_length=40)
    intensity: int = Field(2, ge=limits.INTENSITY_MIN, le=limits.INTENSITY_MAX)
    heat: bool = False
    heat_target_c: float | None = Field(None, ge=limits.HEAT_TARGET_MIN_C, le=limits.HEAT_TARGET_MAX_C)
    timer_min: int = Field(limits.TIMER_DEFAULT_MIN, ge=limits.TIMER_MIN_MIN, le=limits.TIMER_MAX_MIN)
    child_lock: bool = False
    skip_zones: list[limits.Zone] = Field(default_factory=list, max_length=3)


class Usage(BaseModel):
    """Counters for technicians: run time per actuator, sessions, faults."""

    model_config = ConfigDict(extra="ignore")

    run_s: dict[str, float] = Field(default_factory=dict)
    sessions: int = Field(0, ge=0)
    faults: int = Field(0, ge=0)


class LatchedFault(BaseModel):
    """The fault latched when the state was last written (code, message, wall-clock time)."""

    model_config = ConfigDict(extra="ignore")

    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=2000)
    since: float


class StoredState(BaseModel):
    """The whole persistent file."""

    model_config = ConfigDict(extra="ignore")

    version: int = 1
    preferences: Preferences = Field(default_factory=Preferences)
    usage: Usage = Field(default_factory=Usage)
    latched_fault: LatchedFault | None = None  # a fault survives a restart until it is reset




def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a power cut leaves the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)  # make the rename itself durable


def fsync_dir(directory: Path) -> None:
    """Make a created or renamed file's directory entry durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StateStore:
    """The state file under the state directory; ``save`` writes only when something changed."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self._last_written: bytes | None = None
        self.writes = 0

    def load(self) -> StoredState:
        """Read the state; a missing file gives defaults, a corrupt one is reported and replaced."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return StoredState()
        except OSError as exc:
            log.error("cannot read %s (%s); using defaults", self.path, exc)
            return StoredState()
        try:
            data = json.loads(raw.decode("utf-8"))
            state = StoredState.model_validate(data)
        except (UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
            log.error("state file %s is corrupt (%s); using defaults", self.path, _brief(exc))
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_suffix(".corrupt"))
            return _salvage(data) if isinstance(exc, ValidationError) else StoredState()
        self._last_written = raw
        return state

    def save(self, state: StoredState) -> bool:
        """Write ``state`` if it differs from what is on disk; returns True when it wrote."""
        data = json.dumps(state.model_dump(mode="json"), indent=1, sort_keys=True).encode() + b"\n"
        if data == self._last_written:
            return False
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            return False
        self._last_written = data
        self.writes += 1
        return True


def _salvage(data: Any) -> StoredState:
    """Keep each section of a partly invalid file that still validates on its own (e.g. the usage
    counters when only a preference is bad); defaults for the rest."""
    state = StoredState()
    if isinstance(data, dict):
        for name, model in (("preferences", Preferences), ("usage", Usage)):
            with contextlib.suppress(ValidationError):
                setattr(state, name, model.model_validate(data.get(name, {})))
        if data.get("latched_fault") is not None:  # a fault must never be lost with a bad preference
            try:
                state.latched_fault = LatchedFault.model_validate(data["latched_fault"])
            except ValidationError:
                state.latched_fault = LatchedFault(code="UNKNOWN", message="a fault was latched "
                                                   "(its record is unreadable)", since=0.0)
    return state


def _brief(exc: Exception) -> Any:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."
