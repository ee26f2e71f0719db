"""scripts/build-image on a synthetic Raspberry Pi OS image: contents, reproducibility, clear errors."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
from pathlib import Path

import pytest

from tests.image_fixtures import (
    BOOT_START,
    DEFAULT_TOML,
    REPO,
    SECTOR,
    STOCK_CMDLINE,
    fat_list,
    fat_read,
    make_base_image,
    make_wheelhouse,
    run_script,
    sha256,
)

EXPECTED_FILES = {  # destination on the Pi -> (mode, source in the repository)
    "/etc/systemd/system/massager.service": ("0644", "systemd/massager.service"),
    "/etc/systemd/system/massager-provision.service": ("0644", "systemd/massager-provision.service"),
    "/etc/sysusers.d/massager.conf": ("0644", "systemd/massager.sysusers"),
    "/etc/systemd/system.conf.d/massager-watchdog.conf": ("0644", "image/watchdog.conf"),
    "/etc/mosquitto/conf.d/massager.conf": ("0644", "image/mosquitto/massager.conf"),
    "/usr/local/sbin/massager-apply-provision": ("0755", "image/massager-apply-provision"),
    "/etc/systemd/system/massager-remote.service": ("0644", "systemd/massager-remote.service"),
    "/etc/systemd/system/massager-update.service": ("0644", "systemd/massager-update.service"),
    "/etc/systemd/system/massager-update.path": ("0644", "systemd/massager-update.path"),
    "/etc/systemd/system/massager-update-check.service": ("0644", "systemd/massager-update-check.service"),
    "/etc/systemd/system/massager-update-check.timer": ("0644", "systemd/massager-update-check.timer"),
    "/usr/local/sbin/massager-update-check": ("0755", "device/update_check.py"),
}
REMOTE_FILES = {  # the phone remote's page, file by file
    f"/usr/share/massager/remote/{p.relative_to(REPO / 'remote').as_posix()}": p
    for p in sorted((REPO / "remote").rglob("*"))
    if p.is_file()
}


def build(
    tmp_path: Path, base: Path, out_name: str = "out.img", *extra: str | Path, env: dict[str, str] | None = None
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Run build-image with the synthetic wheelhouse."""
    house = tmp_path / "wheelhouse"
    if not house.exists():
        make_wheelhouse(tmp_path)
    out = tmp_path / out_name
    return out, run_script("build-image", base, out, "--wheelhouse", house, *extra, env=env)


def test_build_image_configures_the_phone_remote_for_the_device(tmp_path: Path) -> None:
    out, proc = build(tmp_path, make_base_image(tmp_path))
    assert proc.returncode == 0, proc.stderr
    conf = (fat_read(out, "massager/files/etc/massager/remote/lighttpd.conf") or b"").decode()
    assert "@" not in conf.replace("# Marked values (@...@)", "")  # every marked value filled in
    for line in ("server.port = 80", 'server.document-root = "/usr/share/massager/remote"',
                 'alias.url = ("/device.json" => "/etc/massager/remote.json")',
                 'deflate.cache-dir = "/var/cache/massager-remote"', '$SERVER["socket"] == "[::]:80" { }',
                 'include "/etc/massager/remote/tls.conf"'):
        assert line in conf, line
    # HTTPS comes with the certificate (scripts/provision); until then the included file sets nothing.
    no_tls = (fat_read(out, "massager/files/etc/massager/remote/tls.conf") or b"").decode()
    assert no_tls and all(ln.startswith("#") for ln in no_tls.splitlines()), no_tls
    placeholder = json.loads(fat_read(out, "massager/files/etc/massager/remote.json") or b"")
    assert placeholder["websocket_port"] is None and placeholder["device_id"] is None  # no certificate yet
    # Like every network listener, the WebSockets one exists only with TLS: provisioning installs it.
    assert fat_read(out, "massager/files/etc/mosquitto/conf.d/massager-websockets.conf") is None


def test_build_image_writes_every_file_with_its_content(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    out, proc = build(tmp_path, base)
    assert proc.returncode == 0, proc.stderr

    for dest, (_mode, source) in EXPECTED_FILES.items():
        assert fat_read(out, f"massager/files{dest}") == (REPO / source).read_bytes(), dest
    assert fat_read(out, "massager/files/etc/massager/massager.toml") == DEFAULT_TOML
    assert fat_read(out, "massager/firstboot.sh") == (REPO / "image/firstboot.sh").read_bytes()
    for wheel in sorted((tmp_path / "wheelhouse").iterdir()):
        assert fat_read(out, f"massager/wheels/{wheel.name}") == wheel.read_bytes()

    listed = {}
    for line in (fat_read(out, "massager/install.list") or b"").decode().splitlines():
        mode, group, dest = line.split()
        listed[dest] = (mode, group)
    assert listed == {
        **{dest: (mode, "root") for dest, (mode, _src) in EXPECTED_FILES.items()},
        "/etc/massager/massager.toml": ("0640", "massager"),
        **dict.fromkeys(REMOTE_FILES, ("0644", "root")),
        "/etc/massager/remote/lighttpd.conf": ("0644", "root"),
        "/etc/massager/remote/tls.conf": ("0644", "root"),
        "/etc/massager/remote.json": ("0644", "root"),
    }
    for dest, source in REMOTE_FILES.items():
        assert fat_read(out, f"massager/files{dest}") == source.read_bytes(), dest

    config_txt = (fat_read(out, "config.txt") or b"").decode()
    assert config_txt.startswith("# For more options")  # the stock settings stay
    tail = config_txt.rsplit("[all]", 1)[1].split()
    assert tail == ["dtparam=i2c_arm=on", "dtparam=strict_gpiod", "dtparam=watchdog=on"]
    assert (fat_read(out, "cmdline.txt") or b"").decode() == (
        STOCK_CMDLINE.strip() + " systemd.run=/boot/firmware/massager/firstboot.sh "
        "systemd.run_success_action=reboot systemd.run_failure_action=none "
        "systemd.unit=kernel-command-line.target\n"
    )
    assert sha256(base) != sha256(out)
    assert "already" not in proc.stderr


def test_build_image_payload_passes_the_devices_checksum_check(tmp_path: Path) -> None:
    out, proc = build(tmp_path, make_base_image(tmp_path))
    assert proc.returncode == 0, proc.stderr
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(
        ["mcopy", "-s", "-n", "-i", f"{out}@@{BOOT_START * SECTOR}", "::/massager", str(extracted)],
        check=True,
        capture_output=True,
        env={**os.environ, "MTOOLSRC": "/dev/null"},
    )
    check = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"],
        cwd=extracted / "massager",
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {ln.split("  ", 1)[1] for ln in (extracted / "massager/SHA256SUMS").read_text().splitlines()}
    on_fat = {p.removeprefix("massager/") for p in fat_list(out, "massager")} - {"SHA256SUMS"}
    assert listed == on_fat


def test_build_image_is_reproducible_and_uses_fixed_timestamps(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    first, proc1 = build(tmp_path, base, "first.img")
    second, proc2 = build(tmp_path, base, "second.img", env={"TZ": "America/New_York"})
    assert proc1.returncode == 0 and proc2.returncode == 0, proc1.stderr + proc2.stderr
    assert sha256(first) == sha256(second)

    listing = subprocess.run(
        ["mdir", "-i", f"{first}@@{BOOT_START * SECTOR}", "::/massager/wheels"],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        check=True,
    )
    entries = [line for line in listing.stdout.splitlines() if "WHL" in line or "<DIR>" in line]
    assert len(entries) == 6  # . and .. and four wheels
    assert all("2024-01-01   0:00" in line for line in entries), listing.stdout  # the default fixed date

    third, proc3 = build(tmp_path, base, "third.img", env={"SOURCE_DATE_EPOCH": "1735689600"})
    assert proc3.returncode == 0, proc3.stderr
    assert sha256(third) != sha256(first)  # the timestamps do come from SOURCE_DATE_EPOCH


def test_build_image_reads_xz_base_images(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    packed = tmp_path / "base.img.xz"
    packed.write_bytes(lzma.compress(base.read_bytes(), preset=0))
    plain, proc1 = build(tmp_path, base, "plain.img")
    from_xz, proc2 = build(tmp_path, packed, "from-xz.img")
    assert proc1.returncode == 0 and proc2.returncode == 0, proc2.stderr
    assert sha256(plain) == sha256(from_xz)


def test_build_image_uses_cloud_init_when_the_base_image_does(tmp_path: Path) -> None:
    base = make_base_image(tmp_path, cloud_init=True)
    out, proc = build(tmp_path, base)
    assert proc.returncode == 0, proc.stderr
    assert (fat_read(out, "cmdline.txt") or b"").decode() == STOCK_CMDLINE
    user_data = (fat_read(out, "user-data") or b"").decode()
    assert user_data.startswith("#cloud-config\n")
    assert "  - [sh, /boot/firmware/massager/firstboot.sh, --cloud-init]\n" in user_data
    assert "power_state:\n  mode: reboot\n" in user_data
    # Only a first boot that removed its payload reboots; a failed one leaves the unit on.
    assert "  condition: [sh, -c, 'test ! -e /boot/firmware/massager/firstboot.sh']\n" in user_data
    assert "condition: true" not in user_data


def test_build_image_refuses_a_missing_base_image(tmp_path: Path) -> None:
    out, proc = build(tmp_path, tmp_path / "nope.img")
    assert proc.returncode == 1
    assert "nope.img: base image not found" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\0" * (2 << 20), "bogus.img: does not contain a recognized partition table"),
        (b"hello", "bogus.img: only 5 bytes, too small to be a Raspberry Pi OS image"),
    ],
)
def test_build_image_refuses_what_is_not_a_pi_image(tmp_path: Path, content: bytes, message: str) -> None:
    bogus = tmp_path / "bogus.img"
    bogus.write_bytes(content)
    out, proc = build(tmp_path, bogus)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "out.img.partial").exists()


def test_build_image_refuses_an_image_without_a_boot_partition(tmp_path: Path) -> None:
    disk = tmp_path / "data.img"
    with disk.open("wb") as f:
        f.truncate(4 << 20)
    subprocess.run(
        ["sfdisk", "-q", str(disk)], input=b"label: dos\n2048,,83\n", check=True, capture_output=True
    )
    _out, proc = build(tmp_path, disk)
    assert proc.returncode == 1
    assert "data.img: expected a FAT boot partition and a Linux root partition, found 1: type 83" in proc.stderr


def test_build_image_refuses_a_corrupt_xz(tmp_path: Path) -> None:
    bogus = tmp_path / "base.img.xz"
    bogus.write_bytes(b"not xz at all" * 100)
    out, proc = build(tmp_path, bogus)
    assert proc.returncode == 1
    assert "base.img.xz: not a valid .xz file" in proc.stderr
    assert not out.exists()


def test_build_image_refuses_a_base_image_with_an_old_python(tmp_path: Path) -> None:
    out, proc = build(tmp_path, make_base_image(tmp_path, python="python3.9"))
    assert proc.returncode == 1
    assert "has Python 3.9; the firmware needs 3.11 or newer" in proc.stderr
    assert not out.exists()


def test_build_image_refuses_an_image_it_already_built(tmp_path: Path) -> None:
    first, proc = build(tmp_path, make_base_image(tmp_path))
    assert proc.returncode == 0, proc.stderr
    _again, proc2 = build(tmp_path, first, "again.img")
    assert proc2.returncode == 1
    assert "already holds a massager payload" in proc2.stderr


def test_build_image_refuses_wheels_that_do_not_fit_the_pi(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    house = make_wheelhouse(tmp_path)
    wrong = "pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    (house / wrong).write_bytes((house / "smbus2-0.5.0-py2.py3-none-any.whl").read_bytes())
    too_new = "rich_ext-1.0-cp313-cp313-manylinux_2_17_aarch64.whl"
    (house / too_new).write_bytes(b"")
    out, proc = build(tmp_path, base)
    assert proc.returncode == 1
    assert "do not install on Python 3.11 aarch64" in proc.stderr
    assert wrong in proc.stderr and too_new in proc.stderr
    assert "smbus2" not in proc.stderr.split("aarch64", 1)[1].split(":", 1)[1]
    assert not out.exists()


def test_build_image_refuses_a_wheelhouse_without_the_firmware(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    house = make_wheelhouse(tmp_path)
    (house / "massager-0.1.0-py3-none-any.whl").unlink()
    _out, proc = build(tmp_path, base)
    assert proc.returncode == 1
    assert "needs exactly one massager-*.whl (the firmware), found 0" in proc.stderr


def test_build_image_refuses_a_firmware_wheel_without_its_example_config(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    make_wheelhouse(tmp_path, default_toml=None)
    _out, proc = build(tmp_path, base)
    assert proc.returncode == 1
    assert "massager-0.1.0-py3-none-any.whl: has no device/default.toml" in proc.stderr


def test_build_image_carries_arm64_debs_and_refuses_other_architectures(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    debs = tmp_path / "debs"
    debs.mkdir()
    (debs / "mosquitto_2.0.11-1.2+deb12u1_arm64.deb").write_bytes(b"!<arch>\nmosquitto")
    out, proc = build(tmp_path, base, "out.img", "--debs", debs)
    assert proc.returncode == 0, proc.stderr
    assert fat_read(out, "massager/debs/mosquitto_2.0.11-1.2+deb12u1_arm64.deb") == b"!<arch>\nmosquitto"

    (debs / "mosquitto_2.0.11-1.2+deb12u1_amd64.deb").write_bytes(b"!<arch>\n")
    _out2, proc2 = build(tmp_path, base, "out2.img", "--debs", debs)
    assert proc2.returncode == 1
    assert "not arm64 packages: mosquitto_2.0.11-1.2+deb12u1_amd64.deb" in proc2.stderr


def test_build_image_help_and_usage_errors() -> None:
    shown = run_script("build-image", "--help")
    assert shown.returncode == 0 and "--wheelhouse" in shown.stdout
    missing = run_script("build-image")
    assert missing.returncode == 2 and "BASE.img" in missing.stderr


def test_build_image_refuses_a_wheelhouse_without_the_pin_backend(tmp_path: Path) -> None:
    base = make_base_image(tmp_path)
    house = make_wheelhouse(tmp_path)
    (house / "lgpio-0.2.2.0-cp311-cp311-manylinux_2_34_aarch64.whl").unlink()
    out, proc = build(tmp_path, base)
    assert proc.returncode == 1
    assert "has no lgpio-*.whl, the pin backend" in proc.stderr
    assert not out.exists()


def test_build_image_ships_the_pin_backend_and_never_powers_off_a_failed_first_boot(tmp_path: Path) -> None:
    out, proc = build(tmp_path, make_base_image(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert fat_read(out, "massager/wheels/lgpio-0.2.2.0-cp311-cp311-manylinux_2_34_aarch64.whl") is not None
    cmdline = (fat_read(out, "cmdline.txt") or b"").decode()
    assert "systemd.run_failure_action=none" in cmdline and "poweroff" not in cmdline


def test_build_image_carries_the_update_keys_and_refuses_a_private_key(tmp_path: Path) -> None:
    from device.update_bundle import generate_key

    keys = tmp_path / "keys"
    keys.mkdir()
    generate_key(tmp_path / "release.key", keys / "release-2026.pem")
    base = make_base_image(tmp_path)
    out, proc = build(tmp_path, base, "out.img", "--update-keys", keys)
    assert proc.returncode == 0, proc.stderr
    assert fat_read(out, "massager/files/etc/massager/update-keys/release-2026.pem") == \
        (keys / "release-2026.pem").read_bytes()
    assert "0644 root /etc/massager/update-keys/release-2026.pem" in \
        (fat_read(out, "massager/install.list") or b"").decode()
    (keys / "oops.pem").write_bytes((tmp_path / "release.key").read_bytes())  # a private key, named .pem
    out, proc = build(tmp_path, base, "out2.img", "--update-keys", keys)
    assert proc.returncode == 1 and "not a public key" in proc.stderr and not out.exists()
