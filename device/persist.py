"""Settings, usage counters and the latched fault kept across restarts.

The state is kept in two copies (``state.json`` and ``state-copy.json``), each a whole JSON document with a
generation number and a SHA-256 of its content, each replaced atomically; every save writes both, one after
the other, so one damaged copy loses nothing. A copy that cannot be read or does not check out is kept
aside (renamed, never deleted) and reported; when no copy can be read the device comes up latched
(``STORAGE_FAULT``): any doubt about a stored latched fault is a fault. Writes run on one worker thread
(the bytes are encoded on the caller's thread), so a slow SD card never holds the event loop. A reserve
file keeps room for a fault record on a full disk: it is released only to write one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modes import limits

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_COPY = "state-copy.json"
RESERVE_FILE = "state.reserve"
RESERVE_BYTES = 64 * 1024  # room for a fault log line and both state copies (with their temp files)
STORAGE_FAULT = "STORAGE_FAULT"  # the latched fault when no copy of the state can be read
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class Preferences(BaseModel):
    """What the user chose last: restored at power-on."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    program: str = Field("relax", min_length=1, max_length=40)
    intensity: int = Field(2, ge=limits.INTENSITY_MIN, le=limits.INTENSITY_MAX)
    heat: bool = False
    heat_target_c: float | None = Field(None, ge=limits.HEAT_TARGET_MIN_C, le=limits.HEAT_TARGET_MAX_C)
    timer_min: int = Field(limits.TIMER_DEFAULT_MIN, ge=limits.TIMER_MIN_MIN, le=limits.TIMER_MAX_MIN)
    child_lock: bool = False
    skip_zones: list[limits.Zone] = Field(default_factory=list, max_length=3)


class Usage(BaseModel):
    """Counters for technicians: run time per actuator, sessions, faults."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    run_s: dict[str, float] = Field(default_factory=dict)
    sessions: int = Field(0, ge=0)
    faults: int = Field(0, ge=0)
    last_fault: str | None = Field(None, max_length=64)  # the code of the newest fault latched


class LatchedFault(BaseModel):
    """The fault latched when the state was last written (code, message, wall-clock time)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=2000)
    since: float


class StoredState(BaseModel):
    """The whole persistent file."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

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


class FileLayer:
    """The file operations of the state store (tests put a failing layer in its place)."""

    def read_bytes(self, path: Path) -> bytes:
        """The whole file."""
        return path.read_bytes()

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically and durably."""
        atomic_write(path, data)

    def rename(self, path: Path, target: Path) -> None:
        """Rename ``path`` (a file or a directory) to ``target``."""
        os.rename(path, target)
        fsync_dir(path.parent)

    def unlink(self, path: Path) -> None:
        """Remove a file."""
        path.unlink()

    def write_reserve(self, path: Path, size: int) -> None:
        """Create ``path`` holding ``size`` bytes of real blocks (zeros, written and synced)."""
        atomic_write(path, bytes(size))


def canonical(data: dict[str, Any]) -> bytes:
    """The bytes a state's checksum covers: sorted keys, no whitespace, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_state(state: StoredState, generation: int) -> bytes:
    """One copy of ``state`` as written: its fields, ``generation`` and the SHA-256 of both."""
    data = state.model_dump(mode="json")
    data["generation"] = generation
    data["sha256"] = hashlib.sha256(canonical(data)).hexdigest()
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=False).encode() + b"\n"


class Damaged(ValueError):
    """A copy of the state that cannot be taken as it is (the reason is the message)."""


@dataclass(frozen=True)
class Decoded:
    """A copy that checked out (or a legacy file without a checksum that parsed)."""

    state: StoredState
    generation: int
    salvaged: str | None  # why some sections fell back to defaults (values outside today's bounds)


def decode_state(raw: bytes) -> Decoded:
    """Check and parse one copy; raises Damaged naming what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Damaged(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise Damaged(f"not valid JSON ({_brief(exc)}; {len(raw)} bytes)") from None
    if not isinstance(data, dict):
        raise Damaged(f"not a JSON object but {type(data).__name__}")
    checksum = data.pop("sha256", None)
    generation = 0
    if checksum is not None or "generation" in data:  # not a legacy (version 1, unchecked) file
        try:
            expected = hashlib.sha256(canonical(data)).hexdigest()
        except ValueError:
            expected = None
        if not isinstance(checksum, str) or checksum != expected:
            raise Damaged("its checksum does not match its content")
        stored = data.get("generation")
        if isinstance(stored, bool) or not isinstance(stored, int) or stored < 0:
            raise Damaged(f"bad generation {stored!r}")
        generation = stored
    try:
        return Decoded(StoredState.model_validate(data), generation, None)
    except ValidationError as exc:
        return Decoded(_salvage(data), generation, _brief(exc))


class StateStore:
    """The state's two copies under the state directory; ``submit`` writes them on a worker thread."""

    def __init__(self, state_dir: Path, *, files: FileLayer | None = None,
                 reserve_bytes: int = RESERVE_BYTES) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self.copy_path = state_dir / STATE_COPY
        self.reserve_path = state_dir / RESERVE_FILE
        self.files = files or FileLayer()
        self.reserve_bytes = reserve_bytes
        self.generation = 0
        self.writes = 0  # successful saves (both copies written)
        self.error: str | None = None  # why the last write did not keep everything (None: all is kept)
        self.kept_aside: list[Path] = []  # copies that could not be used, renamed for a technician
        self.on_result: Callable[[], None] | None = None  # called from the worker after every write
        self._lock = threading.Lock()
        self._last_key: bytes | None = None
        self._last_future: Future[None] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-writer")

    def exists(self) -> bool:
        """Whether any copy exists (else this is the unit's first start)."""
        return any(os.path.lexists(p) for p in (self.path, self.copy_path))

    # -- reading --------------------------------------------------------------------------------

    def load(self) -> StoredState:
        """The newest copy that checks out; damaged ones kept aside; none readable: latched STORAGE_FAULT."""
        good: list[tuple[Path, Decoded]] = []
        bad: list[tuple[Path, str]] = []
        for path in (self.path, self.copy_path):
            try:
                raw = self.files.read_bytes(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                bad.append((path, f"cannot read it: {exc.strerror or exc}"))
                continue
            try:
                good.append((path, decode_state(raw)))
            except Damaged as exc:
                bad.append((path, f"it is damaged: {exc}"))
        for path, problem in bad:
            aside = self._keep_aside(path)
            log.error("state file %s: %s; %s", path, problem,
                      f"kept aside as {aside.name}" if aside else "it could not be moved aside")
        for path, decoded in good:
            if decoded.salvaged is not None:
                log.error("state file %s holds values this firmware refuses (%s); the sections that "
                          "validate are kept, defaults for the rest", path, decoded.salvaged)
        self._ensure_reserve()
        if good:
            path, best = max(good, key=lambda item: item[1].generation)
            self.generation = best.generation
            if not bad and len(good) == 2 and good[0][1] == good[1][1] and best.salvaged is None:
                self._last_key = canonical(best.state.model_dump(mode="json"))
                self._last_future = _done()
            return best.state
        if not bad:
            return StoredState()  # no copy at all: the first start
        state = StoredState()
        problems = "; ".join(f"{p.name}: {why}" for p, why in bad)
        state.latched_fault = LatchedFault(
            code=STORAGE_FAULT, since=time.time(),
            message=f"the stored state could not be read ({problems}); a latched fault may have been lost: "
                    "check the unit, then reset",
        )
        self.error = f"no readable copy of the state ({problems})"
        return state

    def _keep_aside(self, path: Path) -> Path | None:
        """Rename an unusable copy to ``<name>.damaged-<time>[-n]``; None when it cannot be moved."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for n in itertools.count():
            target = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
            if os.path.lexists(target):
                continue
            try:
                self.files.rename(path, target)
            except OSError as exc:
                log.error("cannot move %s aside: %s", path, exc.strerror or exc)
                return None
            self.kept_aside.append(target)
            return target
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writing --------------------------------------------------------------------------------

    def submit(self, state: StoredState, *, critical: bool = False) -> Future[None]:
        """Encode now, write it on the worker (``critical``: may use the reserve); fails if not kept."""
        key = canonical(state.model_dump(mode="json"))
        with self._lock:
            last = self._last_future
            if key == self._last_key and last is not None and not _failed(last):
                return last
            self.generation += 1
            data = encode_state(state, self.generation)
            future = self._worker.submit(self._write, data, critical)
            self._last_key, self._last_future = key, future
        return future

    def save(self, state: StoredState, *, critical: bool = False) -> bool:
        """Write ``state`` and wait; True when it wrote, False when unchanged or not kept (see ``error``)."""
        before = self._last_future
        future = self.submit(state, critical=critical)
        try:
            future.result()
        except OSError:
            return False
        return future is not before

    def run_critical(self, work: Callable[[], None]) -> Future[None]:
        """Run ``work`` (a fault log append) on the worker in order, using the reserve on a full disk."""
        return self._worker.submit(self._with_reserve, work, True)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every write submitted so far is done (tests, tools; blocks the caller)."""
        self._worker.submit(lambda: None).result(timeout)

    def close(self) -> None:
        """Finish the writes already submitted, then stop the worker."""
        self._worker.shutdown(wait=True)

    def _write(self, data: bytes, critical: bool) -> None:
        def both() -> None:
            self.files.write_atomic(self.path, data)
            self.files.write_atomic(self.copy_path, data)

        try:
            self._with_reserve(both, critical)
        except OSError as exc:
            self.error = f"cannot write the state: {exc.strerror or exc}"
            log.error("cannot write %s: %s", self.path, exc.strerror or exc)
            self._notify()
            raise
        self.writes += 1
        self.error = None
        self._ensure_reserve()
        self._notify()

    def _with_reserve(self, work: Callable[[], None], critical: bool) -> None:
        """Run ``work``; on a full disk release the reserve and try once more if ``critical``."""
        try:
            work()
        except OSError as exc:
            if not (critical and exc.errno in FULL and self._release_reserve()):
                raise
            log.error("storage full: released the reserve to keep a fault record")
            work()

    def _release_reserve(self) -> bool:
        try:
            self.files.unlink(self.reserve_path)
        except OSError:
            return False
        return True

    def _ensure_reserve(self) -> None:
        """(Re)create the reserve when missing; report when there is no room for it."""
        try:
            if os.path.getsize(self.reserve_path) >= self.reserve_bytes:
                return
        except OSError:
            pass
        try:
            self.files.write_reserve(self.reserve_path, self.reserve_bytes)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.files.unlink(self.reserve_path)
            self.error = (f"no room for the fault-record reserve ({exc.strerror or exc}): "
                          "free space on the state partition")
            log.error("storage: %s", self.error)

    def _notify(self) -> None:
        if self.on_result is not None:
            try:
                self.on_result()
            except Exception:
                log.exception("state store listener failed")


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


def _failed(future: Future[None]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


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
