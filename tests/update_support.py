"""Helpers of the update tests: tiny firmware wheels, keys, signed bundles, a unit's root folder."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.update_bundle import build_manifest, public_pem, this_architecture, this_python, write_bundle
from device.update_check import COMPLETE, UpdatePaths, on_start
from device.update_install import Installer

# The stand-in firmware: ``--version``, and ``run`` that behaves as asked (good / crash / hang).
FAKE_FIRMWARE = '''"""A stand-in massager firmware for the update tests."""
import json, os, sys
VERSION = {version!r}
BEHAVIOUR = {behaviour!r}

def main():
    if sys.argv[1:] == ["--version"]:
        print("massager", VERSION)
        return 0
    if BEHAVIOUR == "crash":
        print("crashing at start", file=sys.stderr)
        return 3
    state = os.path.join(os.environ.get("MASSAGER_ROOT", "/"), "var/lib/massager/update")
    if BEHAVIOUR == "good":
        os.makedirs(state, exist_ok=True)
        with open(os.path.join(state, "good.json"), "w") as f:
            json.dump({{"version": VERSION}}, f)
    print("running", VERSION)
    return 0
'''


def make_wheel(folder: Path, version: str, behaviour: str = "good") -> Path:
    """A pure-Python wheel named massager of ``version`` with a ``massager`` console script."""
    return module_wheel(folder, "massager", version, {
        "massager_fake.py": FAKE_FIRMWARE.format(version=version, behaviour=behaviour).encode(),
        f"massager-{version}.dist-info/entry_points.txt": b"[console_scripts]\nmassager = massager_fake:main\n",
    })


def module_wheel(folder: Path, name: str, version: str, contents: dict[str, bytes]) -> Path:
    """A pure-Python wheel ``name`` of ``version`` holding ``contents`` (path -> bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        **contents,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for member, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{member},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in files.items():
            wheel.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), data)
    return path


def make_bundle(tmp: Path, key: Ed25519PrivateKey, version: str, *, behaviour: str = "good",
                min_version: str = "0.0.1", architecture: str | None = None, python: str | None = None,
                extra: tuple[Path, ...] = ()) -> Path:
    """A signed bundle of the stand-in firmware (and the ``extra`` wheels beside it)."""
    wheels = [make_wheel(tmp / f"wheels-{version}-{behaviour}", version, behaviour), *extra]
    manifest = build_manifest(wheels, version=version, min_version=min_version,
                              architecture=architecture or this_architecture(), python=python or this_python())
    out = tmp / f"massager-{version}-{behaviour}.bundle"
    write_bundle(out, wheels, manifest, key)
    return out


def trust(paths: UpdatePaths, key: Ed25519PrivateKey, name: str = "release") -> None:
    """Put the public half of ``key`` in the unit's trusted key folder."""
    paths.keys.mkdir(parents=True, exist_ok=True)
    (paths.keys / f"{name}.pem").write_bytes(public_pem(key.public_key()))


def installer(paths: UpdatePaths, **kwargs: object) -> Installer:
    """An installer for a test root: fast venvs, never busy, no service to restart."""
    kwargs.setdefault("busy", lambda: None)
    return Installer(paths, fast_venv=True, **kwargs)  # type: ignore[arg-type]


def unit_with(tmp: Path, key: Ed25519PrivateKey, version: str = "1.0.0") -> UpdatePaths:
    """A unit root running ``version`` as the first boot leaves it (a release, COMPLETE, ``current``)."""
    paths = UpdatePaths(tmp / "root")
    trust(paths, key)
    release = paths.release(version)
    (release / "venv" / "bin").mkdir(parents=True)
    script = release / "venv" / "bin" / "massager"
    code = FAKE_FIRMWARE.format(version=version, behaviour="good")
    script.write_text(f"#!{sys.executable}\n{code}\nimport sys\nsys.exit(main())\n")
    script.chmod(0o755)
    (release / COMPLETE).write_text(version + "\n")
    os.symlink(f"releases/{version}", paths.current)
    assert start_firmware(paths) == 0 and on_start(paths) == "no release on trial"
    return paths


def start_firmware(paths: UpdatePaths) -> int:
    """What systemd does on a start: ExecStartPre (the check), then ExecStart from ``current``."""
    on_start(paths)
    massager = paths.current / "venv" / "bin" / "massager"
    env = {**os.environ, "MASSAGER_ROOT": str(paths.root)}
    return subprocess.run([str(massager), "run"], env=env, capture_output=True, timeout=60).returncode


def tree(root: Path) -> dict[str, str]:
    """Every path below ``root`` with its kind and content digest (links by target)."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


PYTHON = sys.executable
