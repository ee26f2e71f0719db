"""scripts/flash-sd: writes and verifies, catches a corrupted write, refuses unsafe targets with the reason.

Block devices are faked under --sysroot: /sys/class/block entries (symlinks into /sys/devices like the
kernel's), /proc/mounts, and a regular file at /dev/<name> standing in for the disk.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.image_fixtures import SCRIPTS, fat_list, make_base_image, make_wheelhouse, run_script, sha256

GB = 10**9
ROOT_MOUNTS = "/dev/sda2 / ext4 rw,relatime 0 0\n/dev/sda1 /boot/efi vfat rw 0 0\nproc /proc proc rw 0 0\n"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A massager image built from the synthetic base."""
    tmp = tmp_path_factory.mktemp("image")
    out = tmp / "massager.img"
    proc = run_script("build-image", make_base_image(tmp), out, "--wheelhouse", make_wheelhouse(tmp))
    assert proc.returncode == 0, proc.stderr
    return out


def add_disk(
    root: Path,
    name: str,
    *,
    size: int,
    removable: bool,
    bus: str = "pci0000:00/0000:00:14.0/usb1/1-1",
    partitions: int = 2,
    model: str = "SD Reader",
) -> Path:
    """A disk as the kernel shows it in /sys, and a regular file standing in for /dev/<name>."""
    device_dir = root / "sys/devices" / bus / "block" / name
    (device_dir / "device").mkdir(parents=True)
    (device_dir / "size").write_text(f"{size // 512}\n")
    (device_dir / "removable").write_text("1\n" if removable else "0\n")
    (device_dir / "device/vendor").write_text("Generic \n")
    (device_dir / "device/model").write_text(f"{model}\n")
    (device_dir / "holders").mkdir()
    links = root / "sys/class/block"
    links.mkdir(parents=True, exist_ok=True)
    (links / name).symlink_to(device_dir)
    sep = "p" if name[-1].isdigit() else ""
    for n in range(1, partitions + 1):
        part = device_dir / f"{name}{sep}{n}"
        (part / "holders").mkdir(parents=True)
        (part / "partition").write_text(f"{n}\n")
        (links / part.name).symlink_to(part)
    dev = root / "dev" / name
    dev.parent.mkdir(exist_ok=True)
    dev.write_bytes(b"\xee" * 4096)  # old contents
    return dev


@pytest.fixture
def sysroot(tmp_path: Path) -> Path:
    """A laptop: system on sda, an NVMe data disk, three card readers (one card mounted, one too small)."""
    root = tmp_path / "host"
    add_disk(root, "sda", size=500 * GB, removable=False, bus="pci0000:00/0000:00:17.0/ata1", model="SSD")
    add_disk(
        root, "nvme0n1", size=1000 * GB, removable=False, bus="pci0000:00/0000:00:1d.0/nvme0", model="NVMe"
    )
    add_disk(root, "sdb", size=16 * GB, removable=True)
    add_disk(root, "sdc", size=32 * GB, removable=False, bus="pci0000:00/0000:00:14.0/usb2/2-1")  # USB, RM=0
    add_disk(root, "mmcblk0", size=8 << 20, removable=False, bus="platform/mmc0/mmc0:0001")
    (root / "proc").mkdir()
    (root / "proc/mounts").write_text(ROOT_MOUNTS + "/dev/sdc1 /media/tech/bootfs vfat rw,nosuid 0 0\n")
    return root


def flash(image: Path, device: str | Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run flash-sd."""
    return run_script("flash-sd", image, device, *args)


def load_flash_sd(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/flash-sd as a module (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("flash_sd", str(SCRIPTS / "flash-sd"))
    spec = importlib.util.spec_from_loader("flash_sd", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "flash_sd", module)  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_flash_sd_writes_a_file_target_and_verifies_it(image: Path, tmp_path: Path) -> None:
    target = tmp_path / "card.img"
    target.write_bytes(b"\xff" * (64 << 20))  # longer than the image: only the image's bytes are compared
    proc = flash(image, target, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert f"verified: {target} holds massager.img (sha256 {sha256(image)})" in proc.stderr
    assert "writing: 100 %" in proc.stderr and "verifying: 100 %" in proc.stderr
    assert target.read_bytes() == image.read_bytes()  # a file target is truncated to the image


def test_flash_sd_writes_a_removable_disk(image: Path, sysroot: Path) -> None:
    proc = flash(image, "/dev/sdb", "--yes", "--sysroot", sysroot)
    assert proc.returncode == 0, proc.stderr
    assert "to /dev/sdb (Generic SD Reader, 16.0 GB)" in proc.stderr
    assert (sysroot / "dev/sdb").read_bytes() == image.read_bytes()


def test_flash_sd_accepts_an_sd_slot_and_a_usb_reader_without_the_removable_flag(
    image: Path, sysroot: Path
) -> None:
    (sysroot / "proc/mounts").write_text(ROOT_MOUNTS)
    assert flash(image, "/dev/sdc", "--yes", "--sysroot", sysroot).returncode == 0
    (sysroot / "sys/devices/platform/mmc0/mmc0:0001/block/mmcblk0/size").write_text(f"{16 * GB // 512}\n")
    proc = flash(image, "/dev/mmcblk0", "--yes", "--sysroot", sysroot)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("device", "reason"),
    [
        ("/dev/sda", "refusing /dev/sda: it holds the running system's root file system (/)"),
        ("/dev/nvme0n1", "refusing /dev/nvme0n1: not a removable disk (Generic NVMe)"),
        ("/dev/sdc", "refusing /dev/sdc: /dev/sdc1 is mounted on /media/tech/bootfs; unmount it first"),
        ("/dev/mmcblk0", "refusing /dev/mmcblk0: it holds 8388608 bytes, smaller than the image"),
        ("/dev/sdb1", "refusing /dev/sdb1: it is a partition; give the whole disk /dev/sdb"),
        ("/dev/sdz", "refusing /dev/sdz: no such disk"),
    ],
)
def test_flash_sd_refuses_unsafe_targets_with_the_reason(
    image: Path, sysroot: Path, device: str, reason: str
) -> None:
    before = {p.name: p.read_bytes() for p in (sysroot / "dev").iterdir()}
    proc = flash(image, device, "--yes", "--sysroot", sysroot)
    assert proc.returncode == 1
    assert reason in proc.stderr
    assert "writing" not in proc.stderr
    assert {p.name: p.read_bytes() for p in (sysroot / "dev").iterdir()} == before


def test_flash_sd_refuses_a_disk_in_use_by_lvm_or_luks(image: Path, sysroot: Path) -> None:
    holders = sysroot / "sys/class/block/sdb2/holders"
    (holders / "dm-0").mkdir()
    proc = flash(image, "/dev/sdb", "--yes", "--sysroot", sysroot)
    assert proc.returncode == 1
    assert "refusing /dev/sdb: /dev/sdb2 is in use by dm-0" in proc.stderr


def test_flash_sd_finds_the_root_disk_behind_device_mapper(image: Path, sysroot: Path) -> None:
    dm = sysroot / "sys/devices/virtual/block/dm-0"
    (dm / "slaves").mkdir(parents=True)
    (dm / "slaves/sdb2").symlink_to(sysroot / "sys/class/block/sdb2")
    (sysroot / "sys/class/block/dm-0").symlink_to(dm)
    (sysroot / "dev/mapper").mkdir()
    (sysroot / "dev/dm-0").write_bytes(b"")
    (sysroot / "dev/mapper/root").symlink_to(sysroot / "dev/dm-0")
    (sysroot / "proc/mounts").write_text("/dev/mapper/root / ext4 rw 0 0\n")
    proc = flash(image, "/dev/sdb", "--yes", "--sysroot", sysroot)
    assert proc.returncode == 1
    assert "refusing /dev/sdb: it holds the running system's root file system (/)" in proc.stderr


def test_flash_sd_catches_a_corrupted_write(
    image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flash_sd = load_flash_sd(monkeypatch)
    honest_write = flash_sd.write_image
    flipped_at = (5 << 20) + 123  # in the second 4 MiB chunk

    def lying_card(source: Path, target: Path, **kwargs: Any) -> Any:
        """Writes, then loses one bit, like a failing or fake-capacity card."""
        result = honest_write(source, target, **kwargs)
        with target.open("r+b") as card:
            card.seek(flipped_at)
            byte = card.read(1)
            card.seek(flipped_at)
            card.write(bytes([byte[0] ^ 0x01]))
        return result

    monkeypatch.setattr(flash_sd, "write_image", lying_card)
    code = flash_sd.main([str(image), str(tmp_path / "card.img"), "--yes"])
    err = capsys.readouterr().err
    assert code == 3
    assert "VERIFY FAILED" in err and f"from byte {4 << 20}" in err
    assert "verified:" not in err


def test_flash_sd_verify_only_reports_a_damaged_card(image: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    assert flash(image, card, "--yes").returncode == 0
    assert flash(image, card, "--verify-only").returncode == 0
    data = bytearray(card.read_bytes())
    data[-1] ^= 0xFF
    card.write_bytes(bytes(data))
    proc = flash(image, card, "--verify-only")
    assert proc.returncode == 3
    assert "VERIFY FAILED" in proc.stderr and "writing" not in proc.stderr


def test_flash_sd_asks_for_confirmation(image: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    proc = subprocess.run(
        [str(SCRIPTS / "flash-sd"), str(image), str(card)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "not confirmed: run on a terminal to answer, or pass --yes" in proc.stderr
    assert not card.exists()


def test_flash_sd_refuses_missing_compressed_or_self_images(image: Path, tmp_path: Path) -> None:
    missing = flash(tmp_path / "nope.img", tmp_path / "card.img", "--yes")
    assert missing.returncode == 1 and "nope.img: image not found" in missing.stderr
    packed = tmp_path / "x.img.xz"
    packed.write_bytes(b"\xfd7zXZ")
    compressed = flash(packed, tmp_path / "card.img", "--yes")
    assert compressed.returncode == 1 and "compressed; flash the .img" in compressed.stderr
    itself = flash(image, image, "--yes")
    assert itself.returncode == 1 and "it is the image itself" in itself.stderr


def test_flash_sd_provisions_after_verifying(image: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    proc = flash(image, card, "--yes", "--provision", "--json", "--hostname", "spa-room-1")
    assert proc.returncode == 0, proc.stderr
    sheet = json.loads(proc.stdout)
    assert sheet["hostname"] == "spa-room-1.local"
    assert "massager-provision/files/etc/hostname" in fat_list(card, "massager-provision")
    assert sheet["phone_password"] not in proc.stderr
