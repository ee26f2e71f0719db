"""scripts/build-update: key pairs, a signed bundle from a wheelhouse that a unit verifies, the announcement."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from device import __version__
from device.update_bundle import canonical, trusted_keys, verify_bundle, verify_signature
from tests.update_support import make_wheel

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "build-update"


def build_update(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_build_update_signs_a_bundle_a_unit_verifies(tmp_path: Path) -> None:
    proc = build_update("--generate-key", tmp_path / "keys" / "release-2026", cwd=tmp_path)
    assert proc.returncode != 0  # the folder must exist: nothing is written elsewhere
    (tmp_path / "keys").mkdir()
    proc = build_update("--generate-key", tmp_path / "keys" / "release-2026", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    private = tmp_path / "keys" / "release-2026.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    house = tmp_path / "house"
    make_wheel(house, __version__)
    make_wheel(house, "2.0.0").rename(house / "dependency-2.0.0-py3-none-any.whl")
    out = tmp_path / "massager.bundle"
    proc = build_update(out, "--key", private, "--wheelhouse", house, "--min-version", "0.0.5",
                        "--url", "https://updates.example/massager.bundle", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "release-2026.pem").write_bytes((tmp_path / "keys" / "release-2026.pem").read_bytes())
    verified = verify_bundle(out, keys_dir=trusted, installed="0.0.5", architecture="aarch64", python="3.11")
    manifest = verified.manifest
    assert (manifest.version, manifest.min_version, manifest.architecture) == (__version__, "0.0.5", "aarch64")
    assert sorted(manifest.files) == ["wheels/dependency-2.0.0-py3-none-any.whl",
                                      f"wheels/massager-{__version__}-py3-none-any.whl"]
    announce = json.loads((tmp_path / "massager.bundle.announce.json").read_text())
    assert announce["url"] == "https://updates.example/massager.bundle"
    assert announce["bundle_size"] == out.stat().st_size
    assert canonical(announce["manifest"]) == canonical(manifest.as_dict())
    verify_signature(announce["manifest"], announce["signature"], trusted_keys(trusted))


def test_build_update_refuses_a_wheelhouse_without_the_firmware(tmp_path: Path) -> None:
    assert build_update("--generate-key", tmp_path / "k", cwd=tmp_path).returncode == 0
    house = tmp_path / "house"
    make_wheel(house, "9.9.9")
    proc = build_update(tmp_path / "b.bundle", "--key", tmp_path / "k.key", "--wheelhouse", house, cwd=tmp_path)
    assert proc.returncode != 0 and f"needs exactly one massager-{__version__}-*.whl" in proc.stderr
    assert not (tmp_path / "b.bundle").exists()
