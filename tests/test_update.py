"""Installing signed update bundles side by side: every refusal changes nothing, a kill at any step leaves
a unit that starts old or new, and a release that never becomes healthy is rolled back by itself."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.update_bundle import UpdateRefused, canonical, verify_bundle
from device.update_check import (
    MAX_STARTS,
    UpdatePaths,
    current_version,
    on_deadline,
    on_start,
    read_json,
    releases,
)
from device.update_install import STEPS, _fsync_tree, firmware_busy
from tests.update_support import (
    PYTHON,
    installer,
    make_bundle,
    module_wheel,
    start_firmware,
    tree,
    trust,
    unit_with,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def opt_tree(paths: UpdatePaths) -> dict[str, str]:
    return tree(paths.opt)


def refused(paths: UpdatePaths, bundle: Path, code: str, **kwargs: object) -> str:
    """Install ``bundle``, expect a refusal with ``code``, and prove the releases did not change."""
    before = opt_tree(paths)
    with pytest.raises(UpdateRefused) as caught:
        installer(paths, **kwargs).install(str(bundle))
    assert caught.value.code == code, caught.value.message
    assert opt_tree(paths) == before
    result = read_json(paths.result)
    assert result["result"] == "refused" and result["code"] == code
    return caught.value.message


def test_update_installs_beside_the_running_release_and_switches(tmp_path: Path,
                                                                 key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    restarts: list[int] = []
    version = installer(paths, restart=lambda: restarts.append(1)).install(
        str(make_bundle(tmp_path, key, "1.1.0")))
    assert version == "1.1.0" and current_version(paths) == "1.1.0"
    assert os.readlink(paths.current) == "releases/1.1.0"  # relative: the same on the card and the unit
    assert releases(paths) == ["1.0.0", "1.1.0"]  # side by side
    assert read_json(paths.pending) == {"version": "1.1.0", "previous": "1.0.0", "starts": 0}
    assert restarts == [1]
    assert start_firmware(paths) == 0  # the stand-in firmware marks itself good
    assert on_start(paths) == "1.1.0 committed"
    assert read_json(paths.result)["result"] == "installed"


# lgpio makes a notification pipe (a FIFO) in LG_WD, by default the current folder, as it imports
LGPIO_STAND_IN = b"""import os
os.mkfifo(os.path.join(os.environ.get("LG_WD", os.getcwd()), ".lgd-nfy%d" % os.getpid()))
BACKEND = "stand-in"
"""


def test_update_installs_every_bundled_wheel_the_pin_backend_included(tmp_path: Path,
                                                                      key: Ed25519PrivateKey) -> None:
    """The pin backend is no dependency of the firmware's: a release without it could not drive the pins
    (found by the QEMU boot test: safe-off failed after an update and its rollback)."""
    paths = unit_with(tmp_path, key, "1.0.0")
    backend = module_wheel(tmp_path / "backend", "lgpio", "0.2.2", {"lgpio.py": LGPIO_STAND_IN})
    installer(paths).install(str(make_bundle(tmp_path, key, "1.1.0", extra=(backend,))))
    release = paths.release("1.1.0")
    python = release / "venv" / "bin" / "python"
    out = subprocess.run([str(python), "-c", "import lgpio; print(lgpio.BACKEND)"], capture_output=True,
                         text=True, check=True, cwd=tmp_path, env={**os.environ, "LG_WD": str(tmp_path)}).stdout
    assert out.strip() == "stand-in"
    # the smoke test's import made its pipe elsewhere: a FIFO in the release would hold its fsync forever
    assert not [p for p in release.rglob("*") if stat.S_ISFIFO(p.lstat().st_mode)]


def test_update_fsync_of_a_release_passes_a_fifo_without_opening_it(tmp_path: Path) -> None:
    """Opening a FIFO to fsync it blocks until a writer comes: the QEMU boot test hung there."""
    folder = tmp_path / "release"
    (folder / "venv").mkdir(parents=True)
    (folder / "venv" / "file").write_text("x")
    os.mkfifo(folder / ".lgd-nfy0")
    flush = threading.Thread(target=_fsync_tree, args=(folder,), daemon=True)
    flush.start()
    flush.join(10.0)
    assert not flush.is_alive(), "the fsync of the release blocked on a FIFO"


def test_update_pin_backend_that_does_not_import_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    broken = module_wheel(tmp_path / "backend", "lgpio", "0.2.2",
                          {"lgpio.py": b"raise ImportError('no GPIO chip')\n"})
    message = refused(paths, make_bundle(tmp_path, key, "1.1.0", extra=(broken,)), "install")
    assert "importing lgpio" in message and "no GPIO chip" in message
    assert releases(paths) == ["1.0.0"] and current_version(paths) == "1.0.0"


def test_update_keeps_the_last_two_releases(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    for version in ("1.1.0", "1.2.0"):
        installer(paths).install(str(make_bundle(tmp_path, key, version)))
        start_firmware(paths)
        on_start(paths)
    assert releases(paths) == ["1.1.0", "1.2.0"]
    assert current_version(paths) == "1.2.0"


def test_update_tampered_wheel_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key)
    bundle = make_bundle(tmp_path, key, "1.1.0")
    data = bytearray(bundle.read_bytes())
    at = data.index(b"massager_fake.py") + 40  # inside the wheel, after the manifest and signature
    data[at] ^= 0xFF
    bundle.write_bytes(bytes(data))
    message = refused(paths, bundle, "checksum")
    assert "SHA-256" in message and "tampered" in message


def test_update_tampered_manifest_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key)
    bundle = make_bundle(tmp_path, key, "1.1.0")
    members = []
    with tarfile.open(bundle) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest["min_version"] = "0.0.2"  # any change at all
                data = canonical(manifest)
                member.size = len(data)
            members.append((member, data))
    with tarfile.open(bundle, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
    assert "does not match the manifest" in refused(paths, bundle, "signature")


def test_update_signed_by_an_untrusted_key_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key)
    stranger = Ed25519PrivateKey.generate()
    message = refused(paths, make_bundle(tmp_path, stranger, "1.1.0"), "key")
    assert "not trusted" in message and str(paths.keys) in message


def test_update_downgrade_is_refused_unless_forced(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    bundle = make_bundle(tmp_path, key, "0.9.0")
    message = refused(paths, bundle, "downgrade")
    assert "0.9.0 is older than the installed 1.0.0" in message and "--force" in message
    assert installer(paths, force=True).install(str(bundle)) == "0.9.0"
    assert current_version(paths) == "0.9.0"


def test_update_same_version_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    assert "same version" in refused(paths, make_bundle(tmp_path, key, "1.0.0", behaviour="crash"), "downgrade")


def test_update_for_another_architecture_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key)
    bundle = make_bundle(tmp_path, key, "1.1.0", architecture="riscv64")
    assert "the bundle is for riscv64" in refused(paths, bundle, "architecture")


def test_update_min_version_is_honoured(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    bundle = make_bundle(tmp_path, key, "2.0.0", min_version="1.5.0")
    assert "may only replace 1.5.0 or newer" in refused(paths, bundle, "min_version", force=True)


@pytest.mark.parametrize("keep", [0.2, 0.6, 0.99, 1.0])
def test_update_truncated_bundle_is_refused(tmp_path: Path, key: Ed25519PrivateKey, keep: float) -> None:
    paths = unit_with(tmp_path, key)
    bundle = make_bundle(tmp_path, key, "1.1.0")
    with tarfile.open(bundle) as tar:
        last = tar.getmembers()[-1]
    content_end = last.offset_data + last.size  # then padding, the end marker, the record's padding
    bundle.write_bytes(bundle.read_bytes()[: int(content_end * keep)])
    assert "truncated" in refused(paths, bundle, "truncated")


def test_update_refused_when_the_card_is_full(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key)
    message = refused(paths, make_bundle(tmp_path, key, "1.1.0"), "disk", free_bytes=lambda _p: 100_000)
    assert "not enough space" in message and "100000 bytes free" in message


def test_update_refused_while_a_session_runs(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key)
    activity = paths.root / "run/massager/activity.json"
    activity.parent.mkdir(parents=True)
    activity.write_text(json.dumps({"status": "running", "fault": None}))
    assert firmware_busy(paths.root) == "a session is running; stop it first"
    message = refused(paths, make_bundle(tmp_path, key, "1.1.0"), "busy", busy=None)
    assert "a session is running" in message
    activity.write_text(json.dumps({"status": "fault", "fault": "OVER_PRESSURE"}))
    assert "fault OVER_PRESSURE is latched" in refused(paths, make_bundle(tmp_path, key, "1.1.0"), "busy",
                                                       busy=None)
    activity.write_text(json.dumps({"status": "idle", "fault": None}))
    assert installer(paths, busy=None).install(str(make_bundle(tmp_path, key, "1.1.0"))) == "1.1.0"


def test_update_refused_while_the_last_one_is_on_trial(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key)
    installer(paths).install(str(make_bundle(tmp_path, key, "1.1.0")))
    assert "still on trial" in refused(paths, make_bundle(tmp_path, key, "1.2.0"), "busy")


def test_update_keys_rotate_old_and_new_trusted_then_old_removed(tmp_path: Path,
                                                                 key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    new_key = Ed25519PrivateKey.generate()
    trust(paths, new_key, "release-2027")  # step 2: both trusted
    assert installer(paths).install(str(make_bundle(tmp_path, new_key, "1.1.0"))) == "1.1.0"
    start_firmware(paths)
    on_start(paths)
    (paths.keys / "release.pem").unlink()  # step 4: the old key is retired
    message = refused(paths, make_bundle(tmp_path, key, "1.2.0"), "key")
    assert "1 trusted keys" in message


def test_update_without_trusted_keys_refuses_everything(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    bundle = make_bundle(tmp_path, key, "1.1.0")
    with pytest.raises(UpdateRefused, match="no trusted update keys"):
        verify_bundle(bundle, keys_dir=tmp_path / "none", installed="1.0.0")


KILL_SCRIPT = """
import sys
from pathlib import Path
from device.update_check import UpdatePaths
from tests.update_support import installer
installer(UpdatePaths(Path(sys.argv[1]))).install(sys.argv[2])
"""


@pytest.mark.parametrize("step", STEPS)
def test_update_killed_at_any_step_starts_old_or_new(tmp_path: Path, key: Ed25519PrivateKey, step: str) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    bundle = make_bundle(tmp_path, key, "1.1.0")
    env = {**os.environ, "MASSAGER_UPDATE_KILL_AT": step, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([PYTHON, "-c", KILL_SCRIPT, str(paths.root), str(bundle)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # The power comes back: the unit starts, and runs the old release or the new one, whole.
    assert start_firmware(paths) == 0
    running = current_version(paths)
    switched = STEPS.index(step) > STEPS.index("switch-rename")
    assert running == ("1.1.0" if switched else "1.0.0")
    on_start(paths)  # the next start commits a healthy new release
    assert read_json(paths.pending) is None
    assert not (paths.opt / "current.new").exists()
    # And the update can be tried again (or the next one installed).
    nxt = "1.2.0" if switched else "1.1.0"
    assert installer(paths).install(str(make_bundle(tmp_path, key, nxt))) == nxt
    assert start_firmware(paths) == 0 and current_version(paths) == nxt


def test_update_crashing_release_is_rolled_back(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    installer(paths).install(str(make_bundle(tmp_path, key, "1.1.0", behaviour="crash")))
    codes = []
    for _start in range(5):  # systemd: Restart=on-failure, StartLimitBurst=5
        codes.append(start_firmware(paths))
        if codes[-1] == 0:
            break
    assert codes == [3] * MAX_STARTS + [0]  # three crashes, then the old release runs
    assert current_version(paths) == "1.0.0"
    result = read_json(paths.result)
    assert result["result"] == "rolled_back" and result["failed"] == "1.1.0"
    assert "3 starts without becoming healthy" in result["reason"]
    assert releases(paths) == ["1.0.0"]  # the broken release is removed


def test_update_release_never_healthy_is_rolled_back_at_the_deadline(tmp_path: Path,
                                                                       key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    installer(paths).install(str(make_bundle(tmp_path, key, "1.1.0", behaviour="hang")))
    now = [1000.0]
    on_start(paths, monotonic=lambda: now[0], this_boot=lambda: "boot-1")
    restarts: list[int] = []

    def deadline() -> str:
        return on_deadline(paths, deadline_s=120, monotonic=lambda: now[0], this_boot=lambda: "boot-1",
                           restart=lambda: restarts.append(1))

    now[0] += 100
    assert deadline() == "1.1.0 on trial for 100 s of 120 s"
    now[0] += 30
    assert deadline() == "rolled back from 1.1.0"
    assert current_version(paths) == "1.0.0" and restarts == [1]
    assert "not healthy within 120 s" in read_json(paths.result)["reason"]


def test_update_healthy_release_is_committed_by_the_timer(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    installer(paths).install(str(make_bundle(tmp_path, key, "1.1.0")))
    start_firmware(paths)
    assert on_deadline(paths) == "1.1.0 committed"
    assert read_json(paths.result)["result"] == "installed"


def test_update_earlier_good_mark_does_not_pass_a_new_try(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    paths = unit_with(tmp_path, key, "1.0.0")
    paths.good.write_text(json.dumps({"version": "1.1.0"}))  # from an earlier try that was rolled back
    installer(paths).install(str(make_bundle(tmp_path, key, "1.1.0", behaviour="hang")))
    assert on_start(paths) == f"1.1.0 on trial: start 1 of {MAX_STARTS}"


@pytest.mark.parametrize("junk", [b"", b"not a tar at all" * 100, b"\0" * 10240])
def test_update_junk_is_refused_as_not_a_bundle(tmp_path: Path, key: Ed25519PrivateKey, junk: bytes) -> None:
    paths = unit_with(tmp_path, key)
    bundle = tmp_path / "junk.bundle"
    bundle.write_bytes(junk)
    before = opt_tree(paths)
    with pytest.raises(UpdateRefused) as caught:
        installer(paths).install(str(bundle))
    assert caught.value.code in ("format", "truncated"), caught.value.message
    assert opt_tree(paths) == before
