"""The persistent fault log: one JSON object per line under the state directory, size-bounded with rotation.

Each append is written, flushed and fsynced before it returns. A power cut can at worst leave a torn
last line; it never touches earlier lines, the next append starts on a fresh line, and readers skip
the torn fragment with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.commands import printable
from device.config import Config
from device.persist import fsync_dir

log = logging.getLogger(__name__)

FAULT_LOG_NAME = "faults.jsonl"
MAX_BYTES = 256 * 1024
BACKUPS = 3
NO_TIME = "????-??-?? ??:??:??"


@dataclass(frozen=True)
class BadLine:
    """A line of the fault log that is torn or not a fault entry: shown as bad, never skipped silently."""

    path: Path
    number: int
    problem: str

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {"bad_line": self.number, "file": str(self.path), "problem": self.problem}


class FaultLog:
    """Appends fault entries to ``path`` (JSON lines), rotating to ``path.1`` .. ``path.N`` when full."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        if max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, got {max_bytes}")
        if not 0 <= backups <= 20:
            raise ValueError(f"backups must be 0-20, got {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        """The log files that exist, oldest first."""
        candidates = [self._backup(i) for i in range(self.backups, 0, -1)] + [self.path]
        return [p for p in candidates if p.exists()]

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def append(self, entry: dict[str, Any]) -> None:
        """Append one entry as a JSON line, durably (write, flush, fsync); raises OSError on failure."""
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(line) > self.max_bytes:
                self._rotate()
                size = 0
            created = size == 0 and not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if size and not _ends_with_newline(fd, size):
                    line = b"\n" + line  # a torn last line from a power cut stays its own (skipped) line
                _write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.path.parent)

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                if self._backup(index).exists():
                    os.replace(self._backup(index), self._backup(index + 1))
            os.replace(self.path, self._backup(1))
        fsync_dir(self.path.parent)
        log.info("fault log rotated (%s)", self.path)

    def entries(self) -> list[dict[str, Any]]:
        """Every readable entry, oldest first across rotated files; torn or bad lines are left out."""
        return [r for r in self.records() if isinstance(r, dict)]

    def records(self) -> list[dict[str, Any] | BadLine]:
        """Every line, oldest first across rotated files: an entry, or a BadLine saying what is wrong."""
        found: list[dict[str, Any] | BadLine] = []
        for path in self.files():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # rotated away while we looked
            for number, raw in enumerate(data.splitlines(), start=1):
                if not raw.strip():
                    continue
                try:
                    entry = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                    found.append(BadLine(path, number, f"torn or corrupt: {printable(str(exc), 200)}"))
                    log.warning("%s line %d is torn or corrupt: %s", path, number, printable(str(exc), 200))
                    continue
                if not isinstance(entry, dict):
                    found.append(BadLine(path, number, f"not a JSON object but {type(entry).__name__}"))
                    log.warning("%s line %d is not a JSON object", path, number)
                    continue
                found.append(entry)
        return found


def _ends_with_newline(fd: int, size: int) -> bool:
    return os.pread(fd, 1, size - 1) == b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def format_entry(entry: dict[str, Any] | BadLine) -> str:
    """One human line: local time, code, message (escaped); a bad line or a bad time says so."""
    if isinstance(entry, BadLine):
        return f"{NO_TIME}  BAD LINE  {printable(entry.path.name)} line {entry.number}: {entry.problem}"
    since = entry.get("since")
    when = NO_TIME
    if isinstance(since, int | float) and not isinstance(since, bool):
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        except (OverflowError, OSError, ValueError):
            when = f"BAD TIME {printable(repr(since), 40)}"
    code = printable(str(entry.get("code", "?")), 80)
    return f"{when}  {code}  {printable(str(entry.get('message', '')))}"


def faults_main(args: argparse.Namespace, config: Config) -> int:
    """``massager faults [--json]``: print the persistent fault log, oldest first."""
    fault_log = FaultLog(config.state_dir / FAULT_LOG_NAME)
    try:
        entries = fault_log.records()
    except OSError as exc:
        print(f"cannot read the fault log in {config.state_dir}: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        shown = [e.as_dict() if isinstance(e, BadLine) else e for e in entries]
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    elif not entries:
        print("no faults recorded")
    else:
        for entry in entries:
            print(format_entry(entry))
    return 0
