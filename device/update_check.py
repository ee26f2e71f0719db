#!/usr/bin/python3
"""The health gate of a new release and its rollback (``massager-update-check``; standard library only).

Installed on the image as /usr/local/sbin/massager-update-check and run with the system's Python, so it
works whatever state the firmware's own venv is in. ``--start`` runs before every start of massager.service
(ExecStartPre=+): it counts the starts of a release still on trial and switches back to the previous
release after MAX_STARTS starts that never became healthy (crash loop, watchdog, failed start). ``--deadline``
runs from massager-update-check.timer: a release still not healthy HEALTH_DEADLINE_S after its last start
is switched back too, and the service restarted. A release the firmware marked good (``good.json``) is
committed: the trial ends and releases older than the previous one are pruned.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("massager-update-check")

MAX_STARTS = 3  # starts of a release on trial without becoming healthy; the unit's StartLimitBurst is 5
HEALTH_DEADLINE_S = 180.0  # from a start to healthy (READY, a passing safety pass, MQTT online)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
SERVICE = "massager.service"
COMPLETE = "COMPLETE"  # in a release folder: the venv is whole (venvs cannot be renamed into place)


@dataclass(frozen=True)
class UpdatePaths:
    """Every file of the update machinery under one root (``/`` on a unit, a temporary folder in tests)."""

    root: Path

    @property
    def opt(self) -> Path:
        """Where the releases live."""
        return self.root / "opt" / "massager"

    @property
    def releases(self) -> Path:
        """One folder per installed version (each with its own venv)."""
        return self.opt / "releases"

    @property
    def current(self) -> Path:
        """The symlink to the release that runs (``releases/<version>``), switched atomically."""
        return self.opt / "current"

    @property
    def keys(self) -> Path:
        """The trusted public keys (``*.pem``)."""
        return self.root / "etc" / "massager" / "update-keys"

    @property
    def state(self) -> Path:
        """Markers, progress and downloads (in the firmware's state folder, so it can read and mark)."""
        return self.root / "var" / "lib" / "massager" / "update"

    @property
    def pending(self) -> Path:
        """A release on trial: its version, the previous release, starts so far."""
        return self.state / "pending.json"

    @property
    def good(self) -> Path:
        """Written by the firmware once it is healthy: ``{"version": ...}``."""
        return self.state / "good.json"

    @property
    def result(self) -> Path:
        """The outcome of the last update: installed, rolled back (and why), refused, failed."""
        return self.state / "result.json"

    @property
    def status(self) -> Path:
        """The installer's progress (step, percent) while it runs."""
        return self.state / "status.json"

    @property
    def request(self) -> Path:
        """An update the firmware was asked for over MQTT, for massager-update.service to carry out."""
        return self.state / "request.json"

    @property
    def downloads(self) -> Path:
        """Partial and finished downloads (resumed with HTTP Range)."""
        return self.state / "downloads"

    def release(self, version: str) -> Path:
        """The folder of one release."""
        return self.releases / version


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and durably (temporary file, fsync, rename, fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    """A JSON file's value, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove(path: Path) -> None:
    """Remove a file durably if it is there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_dir(path.parent)


def current_version(paths: UpdatePaths) -> str | None:
    """The version ``current`` points at, or None without a (valid) link."""
    try:
        target = os.readlink(paths.current)
    except OSError:
        return None
    name = Path(target).name
    return name if is_complete(paths, name) else None


def is_complete(paths: UpdatePaths, version: str) -> bool:
    """Whether a release was installed to the end (its COMPLETE marker is written last, durably)."""
    return (paths.release(version) / COMPLETE).is_file() and (paths.release(version) / "venv" / "bin").is_dir()


def switch_to(paths: UpdatePaths, version: str, *, before_replace: Callable[[], None] | None = None) -> None:
    """Point ``current`` at ``releases/<version>`` atomically: a new link under a temporary name, renamed."""
    tmp = paths.opt / "current.new"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(f"releases/{version}", tmp)
    fsync_dir(paths.opt)
    if before_replace is not None:
        before_replace()
    os.replace(tmp, paths.current)
    fsync_dir(paths.opt)
    log.info("current release is now %s", version)


def releases(paths: UpdatePaths) -> list[str]:
    """Installed complete releases, oldest version first."""
    if not paths.releases.is_dir():
        return []
    names = [p.name for p in paths.releases.iterdir()
             if not p.name.startswith(".") and is_complete(paths, p.name)]
    return sorted(names, key=_version_key)


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return (-1,)


def prune(paths: UpdatePaths, keep: set[str]) -> list[str]:
    """Remove every release but ``keep`` and leftover partial folders; returns what was removed."""
    removed: list[str] = []
    if not paths.releases.is_dir():
        return removed
    for folder in sorted(paths.releases.iterdir()):
        if folder.name in keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    if removed:
        fsync_dir(paths.releases)
        log.info("pruned releases %s", ", ".join(removed))
    return removed


def keep_two(paths: UpdatePaths) -> set[str]:
    """The releases to keep: the current one and the newest other one (the one to roll back to)."""
    current = current_version(paths)
    others = [r for r in releases(paths) if r != current]
    keep = {current} if current else set()
    if others:
        keep.add(others[-1])
    return keep


def boot_id(path: Path = BOOT_ID) -> str:
    """This boot's id (the monotonic clock is comparable between processes only within one boot)."""
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown"


def mark_good(paths: UpdatePaths, version: str) -> None:
    """The firmware's word that ``version`` is healthy (READY, a passing safety pass, MQTT online)."""
    write_json(paths.good, {"version": version, "at": time.time()})


def set_result(paths: UpdatePaths, result: str, version: str | None, message: str, **extra: Any) -> None:
    """Record the outcome of the last update for the firmware to publish."""
    write_json(paths.result, {"result": result, "version": version, "message": message, "at": time.time(),
                              **extra})


def commit(paths: UpdatePaths, pending: dict[str, Any]) -> None:
    """The release on trial is good: end the trial, keep it and the previous release, prune the rest."""
    version = pending.get("version")
    remove(paths.pending)
    set_result(paths, "installed", version, f"version {version} is installed and healthy",
               previous=pending.get("previous"))
    prune(paths, {v for v in (version, pending.get("previous")) if isinstance(v, str)})
    log.info("release %s is healthy: trial over", version)


def rollback(paths: UpdatePaths, pending: dict[str, Any], reason: str) -> str | None:
    """Switch back to the previous release; returns the version now current (None: nothing to go back to)."""
    failed = pending.get("version")
    previous = pending.get("previous")
    if isinstance(previous, str) and is_complete(paths, previous):
        switch_to(paths, previous)
        remove(paths.pending)
        set_result(paths, "rolled_back", previous, f"version {failed} rolled back to {previous}: {reason}",
                   failed=failed, reason=reason)
        prune(paths, {previous})
        log.error("rolled back from %s to %s: %s", failed, previous, reason)
        return previous
    remove(paths.pending)  # nothing to go back to: keep what there is rather than nothing
    set_result(paths, "failed", failed, f"version {failed} is not healthy ({reason}) and there is no "
               "previous release to roll back to", failed=failed, reason=reason)
    log.error("release %s is not healthy (%s) and has no previous release", failed, reason)
    return None


def on_start(paths: UpdatePaths, *, max_starts: int = MAX_STARTS,
             monotonic: Callable[[], float] = time.monotonic, this_boot: Callable[[], str] = boot_id) -> str:
    """Before a start of the firmware: repair, commit, count or roll back; returns what was done."""
    with contextlib.suppress(FileNotFoundError):
        (paths.opt / "current.new").unlink()  # a switch cut short before its rename: the old link stands
    current = current_version(paths)
    if current is None:
        installed = releases(paths)
        if installed:  # never seen by design (the link only ever changes by rename); repair anyway
            switch_to(paths, installed[-1])
            return f"repaired: current had no valid release, now {installed[-1]}"
    pending = read_json(paths.pending)
    if not isinstance(pending, dict):
        remove(paths.pending)
        return "no release on trial"
    version = pending.get("version")
    if version != current:
        remove(paths.pending)
        set_result(paths, "failed", current, f"the install of {version} stopped before the switch "
                   f"(power cut?); {current} still runs", failed=version)
        prune(paths, keep_two(paths))
        return f"interrupted install of {version}: {current} stays"
    good = read_json(paths.good)
    if isinstance(good, dict) and good.get("version") == version:
        commit(paths, pending)
        return f"{version} committed"
    starts = int(pending.get("starts", 0))
    if starts >= max_starts:
        rollback(paths, pending, f"{starts} starts without becoming healthy (crash, watchdog or failed start)")
        return f"rolled back from {version}"
    pending.update(starts=starts + 1, boot_id=this_boot(), started=monotonic())
    write_json(paths.pending, pending)
    return f"{version} on trial: start {starts + 1} of {max_starts}"


def on_deadline(paths: UpdatePaths, *, deadline_s: float = HEALTH_DEADLINE_S,
                monotonic: Callable[[], float] = time.monotonic, this_boot: Callable[[], str] = boot_id,
                restart: Callable[[], None] | None = None) -> str:
    """From the timer: commit a healthy release; roll back one still unhealthy past its deadline."""
    pending = read_json(paths.pending)
    if not isinstance(pending, dict):
        return "no release on trial"
    version = pending.get("version")
    good = read_json(paths.good)
    if isinstance(good, dict) and good.get("version") == version and current_version(paths) == version:
        commit(paths, pending)
        return f"{version} committed"
    started = pending.get("started")
    if pending.get("boot_id") != this_boot() or not isinstance(started, int | float):
        return f"{version} on trial, not started in this boot yet"
    waited = monotonic() - started
    if waited < deadline_s:
        return f"{version} on trial for {waited:.0f} s of {deadline_s:.0f} s"
    rollback(paths, pending, f"not healthy within {deadline_s:.0f} s of starting "
             "(READY, a passing safety pass and MQTT online)")
    (restart or restart_service)()
    return f"rolled back from {version}"


def restart_service() -> None:
    """Restart the firmware (without waiting: this may run from a unit massager.service orders after)."""
    subprocess.run(["systemctl", "restart", "--no-block", SERVICE], check=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of massager-update-check; never fails a start (exit 0 unless the usage is wrong)."""
    parser = argparse.ArgumentParser(prog="massager-update-check", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--start", action="store_true", help="before a start of the firmware (ExecStartPre)")
    mode.add_argument("--deadline", action="store_true", help="from the timer: the health deadline")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("MASSAGER_ROOT") or "/"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="massager-update-check: %(message)s")
    paths = UpdatePaths(args.root)
    try:
        done = on_start(paths) if args.start else on_deadline(paths)
    except Exception:
        log.exception("check failed; leaving the current release as it is")
        return 0
    log.info("%s", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
