"""Installing a verified bundle side by side and switching to it (``massager update FILE|URL``).

Order of the steps, and what a power cut at each leaves (the start picks old or new, never neither):
fetch, verify (nothing written but the download), unpack / venv / pip / smoke (a new release folder without
its COMPLETE marker: ignored, removed next time), release (the marker written last), pending (the trial
marker: the start check drops it while ``current`` still points at the old release), switch (``current``
replaced by one rename: old or new), restart. After the switch the new release is on trial until the
firmware marks it good; massager-update-check rolls it back otherwise (device/update_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from device import __version__
from device.config import Config
from device.update_bundle import (
    UpdateRefused,
    VerifiedBundle,
    canonical,
    copy_checked,
    iter_members,
    open_bundle,
    read_manifest,
    trusted_keys,
    verify_bundle,
)
from device.update_check import (
    COMPLETE,
    UpdatePaths,
    current_version,
    fsync_dir,
    is_complete,
    read_json,
    remove,
    set_result,
    switch_to,
    write_json,
)
from device.update_fetch import FreeBytes, disk_free, download, is_url

log = logging.getLogger(__name__)

STEPS = ("fetch", "verify", "unpack", "venv", "pip", "smoke", "release", "pending", "switch",
         "switch-rename", "restart", "done")
KILL_ENV = "MASSAGER_UPDATE_KILL_AT"  # tests: the installer kills itself (SIGKILL) as this step begins
PIN_BACKENDS = ("lgpio",)  # a bundled pin backend must import in the new release before it is switched to
INSTALL_FACTOR = 4  # an installed venv takes about this many times its wheels' size
SPARE_BYTES = 16 << 20
PIP_TIMEOUT_S = 600.0
ACTIVITY = Path("run/massager/activity.json")  # written by the running firmware (device/update_agent.py)
STATE_FILE = Path("var/lib/massager/state.json")
LOCK_NAME = "install.lock"  # held (flock) while an installer runs
Busy = Callable[[], str | None]


def firmware_busy(root: Path) -> str | None:
    """Why the firmware must not be replaced now (a session runs, a fault is latched), else None."""
    activity = read_json(root / ACTIVITY)
    if isinstance(activity, dict):
        if activity.get("fault"):
            return f"fault {activity['fault']} is latched; reset it first"
        if activity.get("status") in ("running", "paused", "finishing"):
            return f"a session is {activity['status']}; stop it first"
        return None
    with contextlib.suppress(Exception):  # the firmware is not running: its stored latched fault
        from device.persist import decode_state

        stored = decode_state((root / STATE_FILE).read_bytes()).state
        if stored.latched_fault is not None:
            return f"fault {stored.latched_fault.code} is latched (stored); reset it first"
    return None


def installer_running(paths: UpdatePaths) -> bool:
    """Whether an installer holds the install lock now (its progress file may outlive a killed one)."""
    try:
        with open(paths.state / LOCK_NAME) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def restart_firmware() -> None:
    """Restart the firmware on the unit so the switched release runs."""
    subprocess.run(["systemctl", "restart", "--no-block", "massager.service"], check=False)


class Installer:
    """One install: every check first, then a release beside the running one, then one atomic switch."""

    def __init__(
        self,
        paths: UpdatePaths,
        *,
        force: bool = False,
        architecture: str | None = None,
        python: str | None = None,
        free_bytes: FreeBytes = disk_free,
        busy: Busy | None = None,
        restart: Callable[[], None] | None = None,
        base_python: str | None = None,
        fast_venv: bool = False,
    ) -> None:
        """``fast_venv``: a venv without pip, filled by this interpreter's pip (tests; units use their own)."""
        self.paths = paths
        self.force = force
        self.architecture = architecture
        self.python = python
        self.free_bytes = free_bytes
        self.busy = busy or (lambda: firmware_busy(paths.root))
        self.restart = restart or (restart_firmware if paths.root == Path("/") else (lambda: None))
        self.base_python = base_python or (sys.executable if fast_venv else _base_python())
        self.fast_venv = fast_venv
        self.version: str | None = None

    # -- progress -------------------------------------------------------------------------------

    def step(self, name: str, progress: int | None = None, message: str | None = None) -> None:
        """Report a step (status.json, the log); a test may have the installer killed as it begins."""
        if os.environ.get(KILL_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)
        self._status(name, progress, message)
        log.info("update: %s%s", name, f" ({message})" if message else "")

    def _status(self, state: str, progress: int | None = None, message: str | None = None) -> None:
        with contextlib.suppress(OSError):
            write_json(self.paths.status, {"state": state, "version": self.version, "progress": progress,
                                           "message": message})

    # -- the install ----------------------------------------------------------------------------

    def install(self, source: str, *, expected_size: int | None = None) -> str:
        """Install ``source`` (a file or an http(s) URL); returns the new version. Raises UpdateRefused."""
        self.paths.state.mkdir(parents=True, exist_ok=True)
        with self._lock():
            try:
                return self._install(source, expected_size)
            except UpdateRefused as exc:
                log.error("update refused: %s", exc.message)
                set_result(self.paths, "refused", self.version, exc.message, code=exc.code)
                self._status("idle", None, exc.message)
                raise

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.paths.state / LOCK_NAME, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpdateRefused("busy", "another update is being installed") from None
            yield

    def _install(self, source: str, expected_size: int | None) -> str:
        paths = self.paths
        installed = current_version(paths) or __version__
        self._refuse_if_busy()
        on_trial = read_json(paths.pending)
        if isinstance(on_trial, dict) and on_trial.get("version") == current_version(paths):
            raise UpdateRefused("busy", f"version {on_trial.get('version')} is still on trial; wait until it "
                                "is healthy or rolled back")
        self.step("fetch", 0, source)
        downloaded = is_url(source)
        if downloaded:
            bundle = download(source, paths.downloads, expected_size=expected_size, free_bytes=self.free_bytes,
                              progress=self._download_progress)
        else:
            bundle = Path(source)
        try:
            self.step("verify", None, str(bundle.name))
            verified = verify_bundle(bundle, keys_dir=paths.keys, installed=installed,
                                     architecture=self.architecture, python=self.python, force=self.force)
            self.version = version = verified.manifest.version
            log.info("update: %s %s signed by key %s verified", bundle.name, version, verified.key_id)
            if version == current_version(paths) or (is_complete(paths, version) and version == installed):
                raise UpdateRefused("downgrade", f"version {version} is the one running")
            self._check_space(verified)
            self._build_release(verified)
        finally:
            if downloaded:
                bundle.unlink(missing_ok=True)
        self._switch(version, installed)
        return version

    def _refuse_if_busy(self) -> None:
        reason = self.busy()
        if reason is not None:
            raise UpdateRefused("busy", f"not now: {reason}")

    def _download_progress(self, got: int, total: int | None) -> None:
        if total:
            self._status("fetch", min(99, got * 100 // total))

    def _check_space(self, verified: VerifiedBundle) -> None:
        self.paths.releases.mkdir(parents=True, exist_ok=True)
        needed = verified.manifest.payload_size * INSTALL_FACTOR + SPARE_BYTES
        free = self.free_bytes(self.paths.releases)
        if free < needed:
            raise UpdateRefused("disk", f"not enough space to install {verified.manifest.version}: {free} "
                                f"bytes free, {needed} needed ({self.paths.releases})")

    def _build_release(self, verified: VerifiedBundle) -> None:
        """The new release in its own folder, COMPLETE written last; removed again on any failure."""
        version = verified.manifest.version
        folder = self.paths.release(version)
        shutil.rmtree(folder, ignore_errors=True)  # a partial folder from an interrupted attempt
        try:
            self.step("unpack", None, f"{len(verified.manifest.files)} files")
            wheels = folder / "wheels"
            wheels.mkdir(parents=True)
            self._unpack(verified, folder)
            self.step("venv")
            venv = folder / "venv"
            if self.fast_venv:
                self._run([self.base_python, "-m", "venv", "--without-pip", str(venv)], "creating the venv")
                runner = _pip_runner()
                pip = ([str(venv / "bin" / "python"), runner] if runner is not None
                       else [self.base_python, "-m", "pip", "--python", str(venv / "bin" / "python")])
            else:
                self._run([self.base_python, "-m", "venv", str(venv)], "creating the venv")
                pip = [str(venv / "bin" / "python"), "-m", "pip"]
            self.step("pip")
            # Every wheel of the bundle, as the first boot installs the image's: the pin backend (lgpio) is
            # no dependency of the firmware's, and a release without it cannot drive the pins.
            bundled = sorted(str(w) for w in wheels.glob("*.whl") if not w.name.startswith("massager-"))
            self._run([*pip, "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
                       "--find-links", str(wheels), f"massager=={version}", *bundled], "pip install")
            self.step("smoke")
            out = self._run([str(venv / "bin" / "massager"), "--version"], "massager --version")
            if version not in out.split():
                raise UpdateRefused("smoke", f"the new release says {out.strip()!r}, not version {version}")
            for module in _bundled_backends(wheels):
                # lgpio makes its notification pipes (FIFOs) in LG_WD, by default the current folder: a
                # throw-away one, never the release (a FIFO there would hold the fsync of the release)
                with tempfile.TemporaryDirectory(prefix="massager-smoke-") as scratch:
                    self._run([str(venv / "bin" / "python"), "-c", f"import {module}"],
                              f"importing {module}", env={"LG_WD": scratch}, cwd=scratch)
            self.step("release")
            _fsync_tree(folder)
            marker = folder / COMPLETE
            with open(marker, "w") as f:
                f.write(version + "\n")
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _unpack(self, verified: VerifiedBundle, folder: Path) -> None:
        """Extract the listed files, checking each one's size and checksum again as it is written."""
        manifest = verified.manifest
        (folder / "manifest.json").write_bytes(canonical(manifest.as_dict()))
        with open_bundle(verified.path) as tar:
            read_manifest(tar, trusted_keys(self.paths.keys), self.paths.keys)  # the same bundle, again
            for name, member in iter_members(tar, manifest):
                with open(folder / name, "wb") as out:
                    copy_checked(tar, member, manifest.files[name], out)

    def _run(self, command: list[str], what: str, env: dict[str, str] | None = None,
             cwd: str | None = None) -> str:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                                  env={**os.environ, "PIP_NO_INPUT": "1", **(env or {})}, cwd=cwd)
        except (OSError, subprocess.SubprocessError) as exc:
            raise UpdateRefused("install", f"{what} failed: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise UpdateRefused("install", f"{what} failed (exit {proc.returncode}): {' / '.join(tail)}")
        return proc.stdout

    def _switch(self, version: str, previous: str) -> None:
        """Trial marker, then the one atomic switch, then the restart."""
        paths = self.paths
        try:
            self._refuse_if_busy()  # a session may have started during the install
        except UpdateRefused:
            shutil.rmtree(paths.release(version), ignore_errors=True)
            raise
        self.step("pending")
        remove(paths.good)  # a good mark of an earlier try of this version must not pass the new one
        write_json(paths.pending, {"version": version, "previous": previous, "starts": 0})
        self.step("switch")
        switch_to(paths, version, before_replace=lambda: self.step("switch-rename"))
        self.step("restart")
        set_result(paths, "switched", version, f"version {version} installed; on trial until healthy",
                   previous=previous)
        self.restart()
        self.step("done")
        self._status("idle", 100, f"version {version} switched; on trial until healthy")


def _bundled_backends(wheels: Path) -> list[str]:
    """The pin backends among the bundle's wheels: each must import in the new release."""
    names = {w.name.split("-", 1)[0].lower() for w in wheels.glob("*.whl")}
    return [module for module in PIN_BACKENDS if module in names]


def _pip_runner() -> str | None:
    """This interpreter's pip as a script another interpreter runs (what ``pip --python`` starts in the
    target venv: one process instead of two), or None when this pip has none."""
    spec = importlib.util.find_spec("pip")
    if spec is None or spec.origin is None:
        return None
    runner = Path(spec.origin).parent / "__pip-runner__.py"
    return str(runner) if runner.is_file() else None


def _base_python() -> str:
    """The interpreter new venvs are made from: the system's (releases must not chain venvs)."""
    for candidate in ("/usr/bin/python3", getattr(sys, "_base_executable", ""), sys.executable):
        if candidate and Path(candidate).exists():
            return candidate
    return sys.executable


def _fsync_tree(folder: Path) -> None:
    """Flush every regular file and folder below ``folder`` to the card (never opens a FIFO: that blocks)."""
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        with contextlib.suppress(OSError):
            fsync_dir(Path(dirpath))


def take_request(paths: UpdatePaths) -> dict[str, Any] | None:
    """The firmware's request (from MQTT), removed so it runs once; None without one."""
    request = read_json(paths.request)
    remove(paths.request)
    return request if isinstance(request, dict) else None


def update_main(args: argparse.Namespace, config: Config) -> int:
    """``massager update FILE|URL`` (or ``--request``: what the firmware was asked over MQTT)."""
    paths = UpdatePaths(args.root)
    expected_size = None
    source = args.source
    if args.request:
        request = take_request(paths)
        if request is None:
            print("massager update: no update request", file=sys.stderr)
            return 0
        source, expected_size = request.get("url"), request.get("bundle_size")
        if not isinstance(source, str) or not isinstance(expected_size, int | None):
            print("massager update: the request names no URL", file=sys.stderr)
            return 1
        args.force = False  # only a technician on the command line forces a downgrade
    if source is None:
        print("massager update: give a bundle FILE or URL", file=sys.stderr)
        return 2
    installer = Installer(paths, force=args.force, restart=(lambda: None) if args.no_restart else None)
    try:
        version = installer.install(source, expected_size=expected_size)
    except UpdateRefused as exc:
        print(f"massager update: refused ({exc.code}): {exc.message}", file=sys.stderr)
        return 1
    except (OSError, tarfile.TarError) as exc:
        set_result(paths, "failed", installer.version, f"install failed: {exc}")
        installer._status("idle", None, str(exc))
        print(f"massager update: failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"installed": version, "on_trial": True}))
    return 0
