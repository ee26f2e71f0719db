"""Shared helpers of the technician scripts: partitions, the FAT boot partition over mtools, the root fs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
PAYLOAD_DIR = "massager"  # on the boot partition: what the first boot installs
BUNDLE_DIR = "massager-provision"  # on the boot partition: per-device settings (scripts/provision)
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: FAT timestamps when SOURCE_DATE_EPOCH is not set
FAT_TYPES = {
    "b",
    "c",
    "e",
    "6",
    "ef",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
}
LINUX_TYPES = {"83", "0fc63daf-8483-4772-8e79-3d69d8477de4", "b921b045-1df0-41c3-af44-4c6f280d3fae"}
PACKAGES = {  # the Debian package that brings each tool (scripts/bootstrap installs them)
    "sfdisk": "fdisk",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mdir": "mtools",
    "mdel": "mtools",
    "mdeltree": "mtools",
    "minfo": "mtools",
    "debugfs": "e2fsprogs",
}


class ToolError(Exception):
    """A problem the technician can fix: the message names the file or option and what is wrong."""


def configure_logging(verbose: bool) -> None:
    """Log to stderr as `script: message`; stdout stays for the results the technician keeps."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(name)s: %(message)s", force=True
    )


def tool(name: str) -> str:
    """The path of an external tool, or a ToolError saying which package to install."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )
    if found is None:
        package = PACKAGES.get(name, name)
        raise ToolError(f"{name} is not installed: sudo apt-get install {package} (or run scripts/bootstrap)")
    return found


def run(
    args: list[str], *, what: str, env: Mapping[str, str] | None = None, data: bytes | None = None
) -> bytes:
    """Run a tool and return its stdout; a failure becomes a ToolError that starts with `what`."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [tool(args[0]), *args[1:]], input=data, capture_output=True, env=full_env, check=False
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise ToolError(f"{what}: {detail}")
    return proc.stdout


def source_date_epoch() -> int:
    """The timestamp for every written file: SOURCE_DATE_EPOCH, else a fixed date (reproducible images)."""
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None:
        return DEFAULT_EPOCH
    if not raw.isdigit() or not 315532800 <= int(raw) <= 4102444800:
        raise ToolError(f"SOURCE_DATE_EPOCH = {raw!r}: must be seconds since 1970 between 1980 and 2099")
    return int(raw)


@dataclass(frozen=True)
class Partition:
    """One partition of an image or disk."""

    number: int
    offset: int  # bytes from the start of the image
    size: int  # bytes
    type: str


def read_partitions(image: Path, name: str | None = None) -> list[Partition]:
    """The partition table of an image file or block device (sfdisk --json); name is what errors call it."""
    try:
        out = run(["sfdisk", "--json", str(image)], what=f"{name or image}: cannot read a partition table")
    except ToolError as exc:
        detail = str(exc).replace(str(image), name or str(image))
        raise ToolError(f"{detail} (is it a Raspberry Pi OS image?)") from None
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = []
    for i, p in enumerate(table.get("partitions", []), start=1):
        digits = re.search(r"(\d+)$", str(p["node"]))
        number = int(digits.group(1)) if digits else i
        parts.append(
            Partition(number, int(p["start"]) * sector, int(p["size"]) * sector, str(p["type"]).lower())
        )
    return parts


def boot_and_root(image: Path, name: str | None = None) -> tuple[Partition, Partition]:
    """The FAT boot partition and the Linux root partition of a Raspberry Pi OS image."""
    parts = read_partitions(image, name)
    boot = next((p for p in parts if p.type in FAT_TYPES), None)
    root = next((p for p in parts if p.type in LINUX_TYPES), None)
    if boot is None or root is None:
        found = ", ".join(f"{p.number}: type {p.type}" for p in parts) or "none"
        raise ToolError(
            f"{name or image}: expected a FAT boot partition and a Linux root partition, found {found} "
            "(is it a Raspberry Pi OS image?)"
        )
    return boot, root


class BootFs:
    """The FAT boot partition inside an image or on a card, read and written with mtools (no root, no mount)."""

    def __init__(
        self, image: Path, partition: Partition, *, epoch: int | None = None, name: str | None = None
    ) -> None:
        self.image = image
        self.name = name or str(image)
        self.spec = f"{image}@@{partition.offset}"
        self.epoch = source_date_epoch() if epoch is None else epoch
        # Fixed times in UTC, no user mtoolsrc, no questions about name clashes.
        self.env = {
            "TZ": "UTC",
            "SOURCE_DATE_EPOCH": str(self.epoch),
            "MTOOLSRC": "/dev/null",
            "MTOOLS_SKIP_CHECK": "1",
        }

    def _run(self, args: list[str], what: str, data: bytes | None = None) -> bytes:
        return run([args[0], "-i", self.spec, *args[1:]], what=what, env=self.env, data=data)

    def check(self) -> None:
        """Fail with a clear message unless the partition holds a FAT file system."""
        self._run(["minfo"], f"{self.name}: the boot partition is not a readable FAT file system")

    def read(self, path: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""
        if not self.exists(path):
            return None
        return self._run(["mcopy", "-n", f"::/{path}", "-"], f"{self.name}: cannot read {path}")

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists."""
        proc = subprocess.run(
            [tool("mdir"), "-i", self.spec, "-b", f"::/{path}"],
            capture_output=True,
            env={**os.environ, **self.env},
            check=False,
        )
        return proc.returncode == 0

    def free_bytes(self) -> int:
        """Free space on the partition."""
        out = self._run(["mdir", "::/"], f"{self.name}: cannot list the boot partition").decode()
        match = re.search(r"([\d ]+) bytes free", out)
        return int(match.group(1).replace(" ", "")) if match else 0

    def write_tree(self, files: Mapping[str, bytes]) -> None:
        """Write files (path -> bytes) in sorted order with fixed timestamps, creating directories."""
        with tempfile.TemporaryDirectory(prefix="massager-fat-") as tmp:
            made: set[str] = set()
            for path in sorted(files):
                parts = path.split("/")
                for depth in range(1, len(parts)):
                    d = "/".join(parts[:depth])
                    if d not in made:
                        if not self.exists(d):
                            self._run(["mmd", f"::/{d}"], f"{self.name}: cannot create {d}")
                        made.add(d)
                staged = Path(tmp) / "staged"
                staged.write_bytes(files[path])
                os.utime(staged, (self.epoch, self.epoch))
                self._run(["mcopy", "-o", "-m", str(staged), f"::/{path}"], f"{self.name}: cannot write {path}")
                staged.unlink()

    def remove_tree(self, path: str) -> None:
        """Delete a directory and everything under it, if it exists."""
        if self.exists(path):
            self._run(["mdeltree", f"::/{path}"], f"{self.name}: cannot delete {path}")


class RootFs:
    """The ext4 root partition inside an image, read-only through debugfs (no root, no mount)."""

    def __init__(self, image: Path, partition: Partition, name: str | None = None) -> None:
        self.image = image
        self.name = name or str(image)
        self.spec = f"{image}?offset={partition.offset}"

    def _debugfs(self, request: str) -> str:
        proc = subprocess.run([tool("debugfs"), "-R", request, self.spec], capture_output=True, check=False)
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0 or "Filesystem not open" in err or "Bad magic number" in err:
            raise ToolError(f"{self.name}: the root partition is not a readable ext4 file system")
        if "File not found" in err:
            raise FileNotFoundError(request)
        return proc.stdout.decode(errors="replace")

    def read_text(self, path: str) -> str | None:
        """A file's text, or None when it does not exist."""
        try:
            return self._debugfs(f"cat {path}")
        except FileNotFoundError:
            return None

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (empty when it does not exist)."""
        try:
            out = self._debugfs(f"ls -p {path}")
        except FileNotFoundError:
            return []
        names = []
        for line in out.splitlines():
            fields = line.split("/")
            if len(fields) >= 6 and fields[5] not in (".", ".."):
                names.append(fields[5])
        return names


def python_version(root: RootFs) -> tuple[int, int]:
    """The base image's Python 3 (the newest /usr/lib/python3.N)."""
    versions = sorted(
        int(m.group(1)) for name in root.listdir("/usr/lib") if (m := re.fullmatch(r"python3\.(\d+)", name))
    )
    if not versions:
        raise ToolError(f"{root.name}: no /usr/lib/python3.N in the root partition (is it Raspberry Pi OS?)")
    return 3, versions[-1]


def boot_mount_point(root: RootFs) -> str:
    """Where the base image mounts its boot partition (/boot/firmware since Bookworm)."""
    for line in (root.read_text("/etc/fstab") or "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "vfat":
            return fields[1]
    return "/boot/firmware"


def sha256sums(files: Mapping[str, bytes], prefix: str) -> bytes:
    """A `sha256sum -c` file for the given payload files, paths relative to prefix."""
    lines = []
    for path in sorted(files):
        rel = path.removeprefix(prefix + "/")
        lines.append(f"{hashlib.sha256(files[path]).hexdigest()}  {rel}\n")
    return "".join(lines).encode()


def install_list(entries: Iterable[tuple[str, str, str]]) -> bytes:
    """The install list read by the device: `MODE GROUP DEST` per line, sorted by destination."""
    return "".join(
        f"{mode} {group} {dest}\n" for mode, group, dest in sorted(entries, key=lambda e: e[2])
    ).encode()
