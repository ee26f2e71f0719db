"""The firmware's side of field updates: the health gate, the ``update`` command, ``updates/latest``.

The firmware never installs anything itself (it runs unprivileged, with only loopback network): an
``update`` command is checked here (no session, no latched fault) and handed to massager-update.service
through a request file; that service reports its progress in files this agent reads back into the
state. A release on trial is marked good here once it reached READY, a passing safety pass and (when
MQTT is enabled) the broker; device/update_check.py rolls it back otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device import __version__
from device.commands import CommandError
from device.update_bundle import Manifest, UpdateRefused, parse_version, trusted_keys, verify_signature
from device.update_check import UpdatePaths, mark_good, read_json, write_json
from device.update_install import ACTIVITY, installer_running
from modes.session import Status

if TYPE_CHECKING:
    from device.app import App

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often progress files, activity and health are looked at
MAX_ANNOUNCEMENT_BYTES = 64 << 10
BUSY = (Status.RUNNING, Status.PAUSED, Status.FINISHING)
IN_PROGRESS = frozenset({"requested", "fetch", "verify", "unpack", "venv", "pip", "smoke", "release",
                         "pending", "switch", "switch-rename", "restart"})


def unit_root() -> Path:
    """The root the update files live under (``/``; tests move it with MASSAGER_ROOT)."""
    return Path(os.environ.get("MASSAGER_ROOT") or "/")


class UpdateAgent:
    """Health gate, update requests and the newest announced version, for one running firmware."""

    def __init__(self, app: App, *, paths: UpdatePaths | None = None, version: str = __version__) -> None:
        self.app = app
        self.paths = paths or UpdatePaths(unit_root())
        self.version = version
        self.mqtt_online = False
        self.marked_good = False
        self.latest: dict[str, Any] | None = None  # the verified announcement
        self.requested = False
        self._activity: dict[str, Any] | None = None
        self._files: tuple[Any, Any] = (None, None)

    # -- health gate --------------------------------------------------------------------------

    def on_mqtt_online(self) -> None:
        """The bridge connected, subscribed and said ``online``."""
        self.mqtt_online = True

    def healthy(self) -> bool:
        """READY, a passing safety pass since, and MQTT online when it is enabled."""
        app = self.app
        sample = app.controller.last_sample
        passed = sample is not None and sample.ok and app.supervisor.latched is None
        mqtt = self.mqtt_online or not app.config.mqtt.enabled
        return app.ready.is_set() and passed and mqtt

    def check_health(self) -> bool:
        """Mark this release good when it is on trial and healthy; returns whether it was marked now."""
        if self.marked_good:
            return False
        pending = read_json(self.paths.pending)
        if not isinstance(pending, dict) or pending.get("version") != self.version or not self.healthy():
            return False
        try:
            mark_good(self.paths, self.version)
        except OSError as exc:
            log.error("cannot mark release %s good: %s", self.version, exc)
            return False
        self.marked_good = True
        log.info("release %s is healthy (READY, safety pass, MQTT): marked good", self.version)
        return True

    # -- the update command -------------------------------------------------------------------

    def request(self, url: str | None) -> None:
        """Hand an update to massager-update.service; raises CommandError (and changes nothing) if not now."""
        session = self.app.session.status
        if session in BUSY:
            raise CommandError("action", f"update refused: a session is {session}; stop it first")
        if self.in_progress():
            raise CommandError("action", "update refused: an update is already in progress")
        size = None
        if url is None:
            if self.latest is None or not self.latest.get("url"):
                raise CommandError("url", "missing, and no update with a URL was announced")
            if not self.newer_available():
                raise CommandError("action", f"update refused: {self.version} is already the newest")
            url, size = self.latest["url"], self.latest.get("bundle_size")
        if not url.startswith(("http://", "https://")):
            raise CommandError("url", "must be an http:// or https:// URL")
        try:
            write_json(self.paths.request, {"url": url, "bundle_size": size, "at": time.time()})
        except OSError as exc:
            raise CommandError("action", f"update refused: cannot hand it to the installer "
                               f"({exc.strerror or exc})") from None
        self.requested = True
        log.info("update requested: %s", url)

    def in_progress(self) -> bool:
        """Whether an update is requested or being installed."""
        return (self.requested and self.paths.request.exists()) or self._step() in IN_PROGRESS

    def _step(self) -> str | None:
        """The installer's step while one runs (a killed installer's last step is not progress)."""
        status = read_json(self.paths.status)
        step = status.get("state") if isinstance(status, dict) else None
        return step if step in IN_PROGRESS and installer_running(self.paths) else None

    # -- announcements ------------------------------------------------------------------------

    def on_announcement(self, payload: bytes) -> str | None:
        """A retained ``updates/latest`` message; returns why it was ignored, else None."""
        if not payload:
            self.latest = None
            return None
        try:
            if len(payload) > MAX_ANNOUNCEMENT_BYTES:
                raise UpdateRefused("size", f"{len(payload)} bytes")
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise UpdateRefused("format", "not a JSON object")
            verify_signature(data.get("manifest") or {}, data.get("signature"), trusted_keys(self.paths.keys),
                             self.paths.keys)
            manifest = Manifest.from_dict(data.get("manifest"))
        except (UpdateRefused, ValueError, RecursionError) as exc:
            log.warning("updates/latest ignored: %s", exc)
            return str(exc)
        url, size = data.get("url"), data.get("bundle_size")
        self.latest = {"version": manifest.version, "min_version": manifest.min_version,
                       "architecture": manifest.architecture,
                       "url": url if isinstance(url, str) else None,
                       "bundle_size": size if isinstance(size, int) else None}
        log.info("announced update: %s (running %s)", manifest.version, self.version)
        return None

    def newer_available(self) -> bool:
        """Whether the announced version is newer than this one."""
        return self.latest is not None and parse_version(self.latest["version"]) > parse_version(self.version)

    # -- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The state's ``update`` field."""
        status, result = self._files
        step = status.get("state") if isinstance(status, dict) else None
        if step in IN_PROGRESS and not installer_running(self.paths):
            step = "interrupted"  # an installer that was killed or lost its power; nothing runs now
        if self.requested and self.paths.request.exists():
            step = "requested"
        return {
            "installed": self.version,
            "latest": self.latest["version"] if self.latest else self.version,
            "latest_url": self.latest["url"] if self.latest else None,
            "state": step or "idle",
            "in_progress": step in IN_PROGRESS,
            "progress": status.get("progress") if isinstance(status, dict) else None,
            "on_trial": not self.marked_good and isinstance(read_json(self.paths.pending), dict),
            "last_result": result if isinstance(result, dict) else None,
        }

    def refresh(self) -> bool:
        """Re-read the installer's files and write the activity file; returns whether anything changed."""
        files = (read_json(self.paths.status), read_json(self.paths.result))
        changed = files != self._files
        self._files = files
        if self.requested and not self.paths.request.exists() and self._step() not in IN_PROGRESS:
            self.requested = False
            changed = True
        fault = self.app.supervisor.latched
        activity = {"status": str(self.app.session.status), "fault": str(fault.code) if fault else None}
        if activity != self._activity:
            with contextlib.suppress(OSError):
                write_json(self.paths.root / ACTIVITY, activity)
            self._activity = activity
        return changed

    def log_last_result(self) -> None:
        """At start-up: say what the last update did (a rollback, with its reason, as a warning)."""
        result = read_json(self.paths.result)
        if isinstance(result, dict) and isinstance(result.get("message"), str):
            level = logging.WARNING if result.get("result") in ("rolled_back", "failed") else logging.INFO
            log.log(level, "last update: %s", result["message"])

    def forget_activity(self) -> None:
        """At shutdown: the firmware no longer runs, so nothing is busy."""
        with contextlib.suppress(OSError):
            (self.paths.root / ACTIVITY).unlink()


async def update_task(app: App) -> None:
    """Polls the health gate and the installer's progress while the firmware runs."""
    agent = app.device.updates
    if agent is None:
        return
    with contextlib.suppress(OSError):
        agent.paths.state.mkdir(parents=True, exist_ok=True)
    agent.log_last_result()
    try:
        while not app.stop_event.is_set():
            changed = agent.refresh()
            if agent.check_health() or changed:
                app.device.notify("update")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await app.stop_event.wait()
    finally:
        agent.forget_activity()
