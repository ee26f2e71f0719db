"""image/firstboot.sh run against a payload from scripts/build-image, with the system tools stubbed:
offline install by absolute path, its own pin backend, readable programs, and a failure that keeps the hook."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.image_fixtures import (
    BOOT_START,
    REPO,
    SECTOR,
    STOCK_CMDLINE,
    built_image,
)

FIRSTBOOT = REPO / "image" / "firstboot.sh"
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
{body}
"""
STUBS = {
    "dpkg": "",
    "apt-get": '[ -e "{flags}/apt-fails" ] && { echo "E: simulated failure" >&2; exit 100; }; exit 0',
    "systemd-sysusers": "",
    "systemctl": "",
    "getent": "exit 2",
    "python3": 'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; '
    'for t in pip python; do printf \'#!/bin/sh\\necho "%s $*" >> "{calls}"\\n\' "$t" > "$3/bin/$t"; '
    'chmod +x "$3/bin/$t"; done; fi',
}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A massager image with two arm64 debs, built once for the module (each test unpacks its boot files)."""
    tmp = tmp_path_factory.mktemp("image")
    debs = tmp / "debs"
    debs.mkdir()
    (debs / "mosquitto_2.0.11-1.2+deb12u1_arm64.deb").write_bytes(b"!<arch>\nmosquitto")
    (debs / "libcjson1_1.7.15-1+deb12u2_arm64.deb").write_bytes(b"!<arch>\ncjson")
    return built_image(tmp, "--debs", debs)


def device(image: Path, tmp_path: Path) -> dict[str, Path]:
    """The image's boot partition unpacked to a folder, an empty root, and stubbed system tools."""
    boot, root, bin_, flags = (tmp_path / n for n in ("boot", "root", "bin", "flags"))
    for d in (boot, root, bin_, flags, tmp_path / "leds" / "ACT"):
        d.mkdir(parents=True)
    subprocess.run(
        ["mcopy", "-s", "-n", "-i", f"{image}@@{BOOT_START * SECTOR}", "::/*", str(boot)],
        check=True,
        env={**os.environ, "MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1"},
    )
    calls = tmp_path / "calls.log"
    for name, body in STUBS.items():
        stub = bin_ / name
        text = STUB.replace("{body}", body).replace("{calls}", str(calls)).replace("{flags}", str(flags))
        stub.write_text(text)
        stub.chmod(0o755)
    return {"boot": boot, "root": root, "bin": bin_, "flags": flags, "calls": calls, "leds": tmp_path / "leds"}


def first_boot(dev: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    """Run the boot partition's firstboot.sh as the kernel command line would."""
    env = {
        **os.environ,
        "PATH": f"{dev['bin']}:{os.environ['PATH']}",
        "MASSAGER_ROOT": str(dev["root"]),
        "MASSAGER_BOOT": str(dev["boot"]),
        "MASSAGER_CONSOLE": str(dev["boot"].parent / "console.log"),
        "MASSAGER_LEDS": str(dev["leds"]),
    }
    return subprocess.run(
        ["sh", str(dev["boot"] / "massager" / "firstboot.sh")], capture_output=True, text=True, env=env
    )


def calls(dev: dict[str, Path], tool: str) -> list[list[str]]:
    """The argument lists a stubbed tool was called with."""
    text = dev["calls"].read_text() if dev["calls"].exists() else ""
    return [line.split()[1:] for line in text.splitlines() if line.split()[0] == tool]


def test_firstboot_installs_the_debs_offline_by_absolute_path(image: Path, tmp_path: Path) -> None:
    dev = device(image, tmp_path)
    proc = first_boot(dev)
    log = (dev["boot"] / "massager-firstboot.log").read_text()
    assert proc.returncode == 0, log
    (apt,) = calls(dev, "apt-get")
    debs = [a for a in apt if a.endswith(".deb")]
    assert len(debs) == 2
    assert all(os.path.isabs(d) and d.startswith(str(dev["boot"] / "massager" / "debs")) for d in debs)
    assert "--no-download" not in apt  # apt refuses it together with file paths
    assert apt[:2] == ["install", "-y"]
    assert calls(dev, "dpkg") == [["--root=" + str(dev["root"]), "--configure", "-a"]]


def test_firstboot_gives_the_venv_its_own_pin_backend(image: Path, tmp_path: Path) -> None:
    dev = device(image, tmp_path)
    assert first_boot(dev).returncode == 0
    (venv,) = calls(dev, "python3")
    # no --system-site-packages; the release folder field updates switch between (docs/technician.md)
    assert venv == ["-m", "venv", str(dev["root"] / "opt/massager/releases/0.1.0/venv")]
    assert os.readlink(dev["root"] / "opt/massager/current") == "releases/0.1.0"
    assert os.readlink(dev["root"] / "opt/massager/venv") == "current/venv"
    assert (dev["root"] / "opt/massager/releases/0.1.0/COMPLETE").read_text() == "0.1.0\n"
    (pip,) = calls(dev, "pip")
    assert "--no-index" in pip
    assert any(Path(a).name.startswith("lgpio-") and a.endswith("_aarch64.whl") for a in pip)
    assert ["-c", "import", "lgpio,", "gpiozero,", "device.cli"] in calls(dev, "python")


def test_firstboot_makes_the_programs_folder_readable_by_the_firmware(image: Path, tmp_path: Path) -> None:
    dev = device(image, tmp_path)
    (dev["root"] / "etc/massager/programs").mkdir(parents=True, mode=0o700)  # left by an older image
    assert first_boot(dev).returncode == 0
    mode = stat.S_IMODE((dev["root"] / "etc/massager/programs").stat().st_mode)
    assert mode == 0o755


def test_firstboot_removes_its_hook_only_when_everything_is_installed(image: Path, tmp_path: Path) -> None:
    dev = device(image, tmp_path)
    assert first_boot(dev).returncode == 0
    assert (dev["boot"] / "cmdline.txt").read_text() == STOCK_CMDLINE
    assert not (dev["boot"] / "massager").exists()
    assert ["enable", "mosquitto.service", "massager-provision.service", "massager.service"] in [
        c[1:] for c in calls(dev, "systemctl")
    ]
    assert (dev["root"] / "etc/systemd/system/massager.service").is_file()
    assert "done; rebooting into the firmware" in (dev["boot"] / "massager-firstboot.log").read_text()


def test_firstboot_failure_keeps_the_hook_stays_on_and_blinks(image: Path, tmp_path: Path) -> None:
    dev = device(image, tmp_path)
    (dev["flags"] / "apt-fails").touch()
    cmdline = (dev["boot"] / "cmdline.txt").read_text()
    assert "systemd.run_failure_action=none" in cmdline  # systemd's default would power the unit off

    proc = first_boot(dev)
    assert proc.returncode != 0
    log = (dev["boot"] / "massager-firstboot.log").read_text()
    assert "simulated failure" in log and "FAILED" in log
    assert "FAILED" in (tmp_path / "console.log").read_text()
    assert (dev["boot"] / "cmdline.txt").read_text() == cmdline  # the next power-on tries again
    assert (dev["boot"] / "massager" / "firstboot.sh").is_file()
    assert calls(dev, "systemctl") == []  # nothing enabled: never half-installed
    assert (dev["leds"] / "ACT" / "trigger").read_text().strip() == "timer"
    assert (dev["leds"] / "ACT" / "delay_on").read_text().strip() == "100"

    (dev["flags"] / "apt-fails").unlink()  # the next power-on
    assert first_boot(dev).returncode == 0
    assert "systemd.run=" not in (dev["boot"] / "cmdline.txt").read_text()


def test_firstboot_never_powers_off_and_never_uses_no_download() -> None:
    script = FIRSTBOOT.read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "poweroff" not in code and "--no-download" not in code
    assert "--system-site-packages" not in code
    assert "debs/*.deb" not in code.replace('"$PAYLOAD"/debs/*.deb', "")
