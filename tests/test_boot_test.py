"""The QEMU boot test's wiring, checked fast: make-base builds one lean initramfs and the Pi layout,
boot-test's emulator-only changes stay out of the product, CI runs it after the unit suite."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from types import ModuleType

from device.update_bundle import parse_version
from tests.image_fixtures import REPO, SCRIPTS

MAKE_BASE = (SCRIPTS / "make-base").read_text()
BOOT_TEST = (SCRIPTS / "boot-test").read_text()


def test_make_base_builds_one_initramfs() -> None:
    # update-initramfs is a stub while packages install (kernel, initramfs-tools and raspi-firmware would
    # each run it), and runs for real once, in the customize hook.
    assert "dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs" in MAKE_BASE
    assert "dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs" in MAKE_BASE
    assert len(re.findall(r"chroot \"\$root\" update-initramfs", MAKE_BASE)) == 1
    assert "MODULES=list" in MAKE_BASE


def test_make_base_has_raspberry_pi_os_layout() -> None:
    for needle in (
        "/boot/firmware  vfat",
        "-L rootfs",
        "-n BOOTFS",
        "config.txt",
        "cmdline.txt",
        "linux-image-arm64",
        "raspi-firmware",
        "python3-venv",
        "--arch=arm64",
    ):
        assert needle in MAKE_BASE, needle
    assert "MASSAGER_BASE_CACHE" in MAKE_BASE  # cached by its inputs


def test_make_base_and_bootstrap_parse() -> None:
    for script in ("make-base", "bootstrap", "_binfmt.sh"):
        proc = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_boot_test_changes_only_its_own_copy_for_the_emulator() -> None:
    # The --sim drop-in and the serial autologin are written into the test's image only, never shipped.
    assert "massager.service.d/boot-test.conf" in BOOT_TEST
    for path in (REPO / "systemd").iterdir():
        assert "--sim" not in path.read_text(), path
        assert "autologin" not in path.read_text(), path
    assert "--sim" not in (REPO / "image" / "firstboot.sh").read_text()


def test_boot_test_help() -> None:
    proc = subprocess.run(["python3", str(SCRIPTS / "boot-test"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--power-cut-after" in proc.stdout
    assert "--update-checks" in proc.stdout and "--update-timeout" in proc.stdout


def _boot_test_module() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("boot_test_script", str(SCRIPTS / "boot-test"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


def test_boot_test_update_bundles_are_higher_versions_and_the_broken_one_breaks_run() -> None:
    bt = _boot_test_module()
    version = bt.project_version()
    good, broken = bt.bumped(version, 1), bt.bumped(version, 2)
    assert parse_version(version) < parse_version(good) < parse_version(broken)
    # the broken bundle raises at the top of `massager run`: the line it patches must exist
    assert bt.BROKEN_MARKER in (REPO / "device" / "app.py").read_text()


def test_ci_runs_the_unit_suite_first_then_the_boot_test() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    unit, boot = ci.index("bash scripts/test -q"), ci.index("scripts/boot-test")
    assert unit < boot
    assert "bootstrap --image" in ci
    assert "FAILED" in ci  # a clear message on failure
