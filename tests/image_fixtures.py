"""Synthetic Raspberry Pi OS images and wheelhouses for the technician-script tests (a few MB, no root)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SECTOR = 512
BOOT_START, BOOT_SECTORS = 2048, 32768  # 16 MiB FAT boot partition at 1 MiB
ROOT_START, ROOT_SECTORS = BOOT_START + BOOT_SECTORS, 16384  # 8 MiB ext4 root
STOCK_CONFIG_TXT = "# For more options see http://rptl.io/configtxt\n#dtparam=i2c_arm=on\n[all]\narm_64bit=1\n"
STOCK_CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 rootwait\n"
STOCK_FSTAB = (
    "proc            /proc           proc    defaults          0       0\n"
    "PARTUUID=1234abcd-01  /boot/firmware  vfat    defaults          0       2\n"
    "PARTUUID=1234abcd-02  /               ext4    defaults,noatime  0       1\n"
)
DEFAULT_TOML = b'# example config\ndevice_id = ""\n\n[mqtt]\nhost = "localhost"\n'


def built_image(tmp: Path, *extra: str | Path) -> Path:
    """A massager image built from the synthetic base with build-image (``extra``: more of its options)."""
    out = tmp / "massager.img"
    proc = run_script("build-image", make_base_image(tmp), out, "--wheelhouse", make_wheelhouse(tmp), *extra)
    assert proc.returncode == 0, proc.stderr
    return out


def card_copy(image: Path, folder: Path) -> Path:
    """A card of a test's own: a copy of ``image`` (sparse, as written), named like it, in ``folder``."""
    out = folder / image.name
    subprocess.run(["cp", "--sparse=always", str(image), str(out)], check=True)
    return out


def sh(*args: str | Path, env: dict[str, str] | None = None) -> None:
    """Run a tool, failing the test with its output."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr.decode()}"


def make_base_image(
    tmp: Path, *, python: str = "python3.11", cloud_init: bool = False, name: str = "base.img"
) -> Path:
    """A Raspberry Pi OS look-alike: dos label, FAT boot (config.txt, cmdline.txt), ext4 root with Python."""
    work = tmp / f"{name}.parts"
    rootfs = work / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "usr" / "lib" / python).mkdir(parents=True)
    (rootfs / "etc" / "os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\n'
    )
    (rootfs / "etc" / "fstab").write_text(STOCK_FSTAB)
    for p in rootfs.rglob("*"):
        os.utime(p, (1_600_000_000, 1_600_000_000))
    boot_part, root_part = work / "boot.part", work / "root.part"
    with boot_part.open("wb") as f:
        f.truncate(BOOT_SECTORS * SECTOR)
    sh("mkfs.vfat", "-n", "bootfs", "-i", "1234abcd", boot_part)
    env = {"TZ": "UTC", "SOURCE_DATE_EPOCH": "1600000000", "MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1"}
    for fname, text in (("config.txt", STOCK_CONFIG_TXT), ("cmdline.txt", STOCK_CMDLINE)) + (
        (("user-data", "#cloud-config\n# stock template: Imager fills this in\n"),) if cloud_init else ()
    ):
        src = work / fname
        src.write_text(text)
        sh("mcopy", "-i", boot_part, src, f"::/{fname}", env=env)
    with root_part.open("wb") as f:
        f.truncate(ROOT_SECTORS * SECTOR)
    uuid = "11111111-2222-3333-4444-555555555555"
    sh(
        "mkfs.ext4",
        "-q",
        "-d",
        rootfs,
        "-U",
        uuid,
        "-E",
        f"root_owner=0:0,hash_seed={uuid}",
        root_part,
        env={"E2FSPROGS_FAKE_TIME": "1600000000"},
    )
    image = tmp / name
    with image.open("wb") as f:
        f.truncate((ROOT_START + ROOT_SECTORS + 2048) * SECTOR)
    table = f"label: dos\nlabel-id: 0x1234abcd\n{BOOT_START},{BOOT_SECTORS},c\n{ROOT_START},{ROOT_SECTORS},83\n"
    subprocess.run(["sfdisk", "-q", str(image)], input=table.encode(), check=True, capture_output=True)
    with image.open("r+b") as f:
        f.seek(BOOT_START * SECTOR)
        f.write(boot_part.read_bytes())
        f.seek(ROOT_START * SECTOR)
        f.write(root_part.read_bytes())
    return image


def _wheel(folder: Path, filename: str, members: dict[str, bytes]) -> Path:
    path = folder / filename
    with zipfile.ZipFile(path, "w") as z:
        for name, data in sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            z.writestr(info, data)
    return path


def make_wheelhouse(tmp: Path, *, default_toml: bytes | None = DEFAULT_TOML) -> Path:
    """A tiny wheelhouse: a firmware wheel with device/default.toml, one pure and one aarch64 dependency,
    and the pin backend (lgpio)."""
    house = tmp / "wheelhouse"
    house.mkdir()
    members = {"device/__init__.py": b"", "massager-0.1.0.dist-info/METADATA": b"Name: massager\n"}
    if default_toml is not None:
        members["device/default.toml"] = default_toml
    _wheel(house, "massager-0.1.0-py3-none-any.whl", members)
    _wheel(house, "smbus2-0.5.0-py2.py3-none-any.whl", {"smbus2/__init__.py": b"# smbus2\n"})
    _wheel(
        house,
        "pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        {"pydantic_core/__init__.py": b"# core\n"},
    )
    _wheel(house, "lgpio-0.2.2.0-cp311-cp311-manylinux_2_34_aarch64.whl", {"lgpio.py": b"# lgpio\n"})
    return house


def run_script(
    name: str, *args: str | Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of scripts/ as the technician would (its own python3, not the venv)."""
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *[str(a) for a in args]],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def fat_read(image: Path, path: str, offset: int = BOOT_START * SECTOR) -> bytes | None:
    """A file from the image's boot partition (mtools), or None."""
    proc = subprocess.run(
        ["mcopy", "-n", "-i", f"{image}@@{offset}", f"::/{path}", "-"],
        capture_output=True,
        env={**os.environ, "MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1"},
    )
    return proc.stdout if proc.returncode == 0 else None


def fat_list(image: Path, path: str = "", offset: int = BOOT_START * SECTOR) -> list[str]:
    """Every file path under a directory of the boot partition (recursive)."""
    proc = subprocess.run(
        ["mdir", "-/", "-b", "-i", f"{image}@@{offset}", f"::/{path}"],
        capture_output=True,
        text=True,
        env={**os.environ, "MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1"},
    )
    if proc.returncode != 0:
        return []
    return sorted(line.removeprefix("::/") for line in proc.stdout.split() if not line.endswith("/"))


def sha256(path: Path) -> str:
    """The sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
