"""Persistence: round trip, write only on change, atomic under interruption, two checksummed copies, damaged
copies kept aside, no readable copy -> latched STORAGE_FAULT, a full disk, writes off the event loop."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from device import persist
from device.persist import (
    RESERVE_FILE,
    STATE_COPY,
    STATE_FILE,
    STORAGE_FAULT,
    FileLayer,
    LatchedFault,
    Preferences,
    StateStore,
    StoredState,
    Usage,
    atomic_write,
)

ALL_FILES = sorted([STATE_COPY, STATE_FILE, RESERVE_FILE])


class PowerCut(BaseException):
    """Stands for the process dying mid-write (not an error the code could catch and handle)."""


def _changed_state() -> StoredState:
    return StoredState(
        preferences=Preferences(program="calf_focus", intensity=4, heat=True, timer_min=20,
                                child_lock=True, skip_zones=["calf"]),
        usage=Usage(run_s={"pump": 12.5, "heater": 300.0}, sessions=7, faults=2),
    )


def _files(state_dir: Path) -> list[str]:
    return sorted(p.name for p in state_dir.iterdir())


def _faulted_state() -> StoredState:
    state = _changed_state()
    state.latched_fault = LatchedFault(code="OVER_PRESSURE", message="calf 80 mmHg", since=1.7e9)
    return state


def _aside(state_dir: Path, name: str) -> list[Path]:
    return sorted(p for p in state_dir.iterdir() if p.name.startswith(f"{name}.damaged-"))


def test_persist_round_trip(tmp_path: Path) -> None:
    state = _changed_state()
    assert StateStore(tmp_path).save(state)
    loaded = StateStore(tmp_path).load()
    assert loaded == state
    assert loaded.preferences.child_lock is True
    assert loaded.usage.run_s == {"pump": 12.5, "heater": 300.0}


def test_persist_missing_file_gives_defaults_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        loaded = StateStore(tmp_path / "never-created").load()
    assert loaded == StoredState()
    assert caplog.records == []


def test_persist_writes_only_on_change(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = _changed_state()
    assert store.save(state) is True
    mtime = (tmp_path / STATE_FILE).stat().st_mtime_ns
    assert store.save(state) is False
    assert store.save(state.model_copy(deep=True)) is False
    assert store.writes == 1
    assert (tmp_path / STATE_FILE).stat().st_mtime_ns == mtime
    state.preferences.intensity = 5
    assert store.save(state) is True
    assert store.writes == 2


def test_persist_load_then_save_unchanged_does_not_write(tmp_path: Path) -> None:
    StateStore(tmp_path).save(_changed_state())
    store = StateStore(tmp_path)
    state = store.load()
    assert store.save(state) is False
    assert store.writes == 0


def test_persist_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = _changed_state()
    for intensity in (1, 2, 3):
        state.preferences.intensity = intensity
        store.save(state)
    assert _files(tmp_path) == ALL_FILES


# each copy: temp file, its data, rename, directory, directory
STEPS = ("open", "fsync", "replace", "open", "fsync") * 2


@pytest.mark.parametrize("failing_call", range(1, len(STEPS) + 1))
def test_persist_interrupted_write_leaves_old_or_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """Die at each system call of a write: temp file open, data fsync, rename, directory open and fsync."""
    old = _changed_state()
    StateStore(tmp_path).save(old)
    new = _changed_state()
    new.preferences.intensity = 1
    new.usage.sessions = 8

    calls: list[str] = []
    real = {"fsync": os.fsync, "replace": os.replace, "open": os.open}

    def dying(name: str):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(name)
            if len(calls) == failing_call:
                raise PowerCut(f"power cut at {name}")
            return real[name](*args, **kwargs)
        return call

    for name in real:
        monkeypatch.setattr(persist.os, name, dying(name))
    store = StateStore(tmp_path)
    store.load()
    with pytest.raises(PowerCut):
        store.save(new)
    monkeypatch.undo()
    assert calls == list(STEPS[:failing_call])

    after = StateStore(tmp_path)
    loaded = after.load()
    assert loaded in (old, new)
    renamed = failing_call > STEPS.index("replace") + 1
    assert loaded == (new if renamed else old)  # the first copy's rename is the moment of truth
    assert _files(tmp_path) == ALL_FILES  # the half-written temp file is gone
    both = failing_call > len(STEPS) // 2 + STEPS.index("replace") + 1
    assert after.save(new) is not both  # the next save completes what the cut interrupted


def test_persist_failed_rename_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = _changed_state()
    store = StateStore(tmp_path)
    store.save(old)
    new = old.model_copy(deep=True)
    new.preferences.heat = False

    def no_rename(*_args: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(persist.os, "replace", no_rename)
    with caplog.at_level(logging.ERROR, logger="device.persist"):
        assert store.save(new) is False
    assert "cannot write" in caplog.text and "Read-only" in caplog.text
    monkeypatch.undo()
    assert StateStore(tmp_path).load() == old
    assert _files(tmp_path) == ALL_FILES
    assert store.error is not None and "Read-only" in store.error
    assert store.save(new) is True  # a failed write is retried on the next save
    assert store.error is None
    assert StateStore(tmp_path).load() == new


def test_persist_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    """A process killed before it could clean up leaves a torn temp file: the state is still the old one."""
    old = _changed_state()
    StateStore(tmp_path).save(old)
    data = (tmp_path / STATE_FILE).read_bytes()
    (tmp_path / f".{STATE_FILE}.abc123.tmp").write_bytes(data[: len(data) // 2])
    assert StateStore(tmp_path).load() == old


def test_persist_truncated_copy_of_every_length_loses_nothing(tmp_path: Path) -> None:
    """A torn copy (any length short of complete) is kept aside; the other copy brings back everything."""
    state = _faulted_state()
    StateStore(tmp_path).save(state)
    data = (tmp_path / STATE_FILE).read_bytes()
    assert (tmp_path / STATE_COPY).read_bytes() == data
    for length in range(0, len(data) - 1, 7):
        (tmp_path / STATE_FILE).write_bytes(data[:length])
        store = StateStore(tmp_path)
        assert store.load() == state, f"length {length}"
        [aside] = _aside(tmp_path, STATE_FILE)
        assert aside.read_bytes() == data[:length]  # kept for a technician, never deleted
        aside.unlink()
        (tmp_path / STATE_FILE).write_bytes(data)


DAMAGE = {
    "zero-length": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "random": lambda data: random.Random(4).randbytes(len(data)),
    "NUL-filled": lambda data: b"\x00" * len(data),
    "a changed value": lambda data: data.replace(b'"intensity": 4', b'"intensity": 3'),
    "no checksum": lambda data: data.replace(b'"sha256"', b'"sha257"'),
    "not an object": lambda data: b"[1, 2, 3]",
    "not UTF-8": lambda data: b"\xff\xfe" + data,
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_persist_one_damaged_copy_keeps_the_latched_fault(tmp_path: Path, kind: str) -> None:
    state = _faulted_state()
    StateStore(tmp_path).save(state)
    for damaged in (STATE_FILE, STATE_COPY):
        good = (tmp_path / damaged).read_bytes()
        (tmp_path / damaged).write_bytes(DAMAGE[kind](good))
        store = StateStore(tmp_path)
        assert store.load() == state, (kind, damaged)
        assert [p.name for p in store.kept_aside] == [p.name for p in _aside(tmp_path, damaged)]
        assert store.save(state) is True  # both copies whole again
        assert StateStore(tmp_path).load() == state
        for p in _aside(tmp_path, damaged):
            p.unlink()


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_persist_both_copies_damaged_comes_up_latched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    StateStore(tmp_path).save(_changed_state())  # (whether a fault was latched cannot be known)
    contents = {}
    for name in (STATE_FILE, STATE_COPY):
        contents[name] = DAMAGE[kind]((tmp_path / name).read_bytes())
        (tmp_path / name).write_bytes(contents[name])
    store = StateStore(tmp_path)
    with caplog.at_level(logging.ERROR, logger="device.persist"):
        loaded = store.load()
    assert loaded.latched_fault is not None and loaded.latched_fault.code == STORAGE_FAULT
    assert "could not be read" in loaded.latched_fault.message
    assert store.error is not None
    for name in (STATE_FILE, STATE_COPY):
        [aside] = _aside(tmp_path, name)
        assert aside.read_bytes() == contents[name]
        assert any(str(tmp_path / name) in r.getMessage() and "kept aside" in r.getMessage()
                   for r in caplog.records)
    assert store.save(loaded) is True
    again = StateStore(tmp_path).load()  # still latched after another restart: only a reset clears it
    assert again.latched_fault is not None and again.latched_fault.code == STORAGE_FAULT


def test_persist_legacy_file_without_checksum_is_read(tmp_path: Path) -> None:
    """The state.json of the firmware before two copies (no checksum) is taken as it is, then rewritten."""
    state = _faulted_state()
    (tmp_path / STATE_FILE).write_text(json.dumps(state.model_dump(mode="json")))
    store = StateStore(tmp_path)
    assert store.load() == state
    assert store.save(state) is True
    assert json.loads((tmp_path / STATE_COPY).read_text())["sha256"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (json.dumps({"preferences": {"intensity": 9}}).encode(), "intensity out of range"),
        (json.dumps({"preferences": {"program": ""}}).encode(), "empty program"),
        (json.dumps({"usage": {"sessions": -1}}).encode(), "negative counter"),
        (json.dumps({"preferences": {"skip_zones": ["knee"]}}).encode(), "unknown zone"),
    ],
)
def test_persist_values_out_of_bounds_fall_back_per_section_and_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    store = StateStore(tmp_path)
    with caplog.at_level(logging.ERROR, logger="device.persist"):
        loaded = store.load()
    assert loaded == StoredState(), reason
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "refuses" in errors[0].getMessage(), reason
    assert str(tmp_path / STATE_FILE) in errors[0].getMessage()
    assert store.save(loaded) is True
    assert StateStore(tmp_path).load() == StoredState()


class _Unreadable(FileLayer):
    """Reading a copy fails as on a file with mode 000 (root reads those anyway, so it is injected)."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def read_bytes(self, path: Path) -> bytes:
        if path.name in self.names:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return super().read_bytes(path)


def test_persist_unreadable_copies_mode_000(tmp_path: Path) -> None:
    state = _faulted_state()
    StateStore(tmp_path).save(state)
    (tmp_path / STATE_FILE).chmod(0o000)
    store = StateStore(tmp_path, files=_Unreadable(STATE_FILE))
    assert store.load() == state  # the other copy
    assert len(_aside(tmp_path, STATE_FILE)) == 1 and (tmp_path / STATE_COPY).exists()
    both = StateStore(tmp_path, files=_Unreadable(STATE_COPY))
    loaded = both.load()  # the first one is aside now, the second cannot be read
    assert loaded.latched_fault is not None and loaded.latched_fault.code == STORAGE_FAULT
    assert "Permission denied" in loaded.latched_fault.message


def test_persist_copies_that_are_directories_come_up_latched(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()  # reading a directory fails with an OSError
    (tmp_path / STATE_COPY).mkdir()
    store = StateStore(tmp_path)
    loaded = store.load()
    assert loaded.latched_fault is not None and loaded.latched_fault.code == STORAGE_FAULT
    assert len(_aside(tmp_path, STATE_FILE)) == 1 and len(_aside(tmp_path, STATE_COPY)) == 1
    assert store.save(loaded) is True  # the names are free again


def test_persist_newer_generation_wins(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    old = _changed_state()
    store.save(old)
    older = (tmp_path / STATE_COPY).read_bytes()
    new = _faulted_state()
    store.save(new)
    (tmp_path / STATE_COPY).write_bytes(older)  # as a power cut between the two copies leaves them
    assert StateStore(tmp_path).load() == new
    (tmp_path / STATE_COPY).write_bytes((tmp_path / STATE_FILE).read_bytes())
    (tmp_path / STATE_FILE).write_bytes(older)  # the other way round
    assert StateStore(tmp_path).load() == new


def test_persist_unwritable_state_dir_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    store = StateStore(blocker)
    with caplog.at_level(logging.ERROR, logger="device.persist"):
        assert store.save(_changed_state()) is False
    assert "cannot write" in caplog.text
    assert store.writes == 0


def test_persist_unknown_keys_from_a_newer_version_are_ignored(tmp_path: Path) -> None:
    data = _changed_state().model_dump(mode="json")
    data["preferences"]["new_feature"] = 1
    data["later_section"] = {"x": 1}
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    assert StateStore(tmp_path).load() == _changed_state()


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write(target, b"first version, rather long " * 10)
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert _files(target.parent) == ["file.bin"]


def test_persist_one_bad_preference_keeps_the_usage_counters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.path.write_text(
        '{"version": 1, "preferences": {"intensity": 9}, "usage": {"sessions": 12, "faults": 2}}'
    )
    state = StateStore(tmp_path).load()
    assert state.preferences.intensity == 2  # the bad section falls back to its defaults
    assert state.usage.sessions == 12 and state.usage.faults == 2  # the good one is kept
    assert "refuses" in caplog.text


def test_persist_one_bad_preference_keeps_a_latched_fault(tmp_path: Path) -> None:
    StateStore(tmp_path).path.write_text(
        '{"preferences": {"intensity": 9}, '
        '"latched_fault": {"code": "OVER_PRESSURE", "message": "calf 80 mmHg", "since": 1.0}}'
    )
    state = StateStore(tmp_path).load()
    assert state.latched_fault is not None and state.latched_fault.code == "OVER_PRESSURE"


def test_persist_unreadable_fault_record_still_counts_as_latched(tmp_path: Path) -> None:
    StateStore(tmp_path).path.write_text('{"latched_fault": {"code": 7}}')
    state = StateStore(tmp_path).load()
    assert state.latched_fault is not None  # any doubt is a fault: it needs a reset


@contextlib.contextmanager
def _small_filesystem(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` mounted at ``path`` (needs mount rights; the test is skipped without)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> None:
    """Use up every free block of ``directory``'s filesystem."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\xaa" * 4096)
    finally:
        os.close(fd)


def test_persist_full_disk_keeps_a_fault_record_in_the_reserve(tmp_path: Path) -> None:
    from device.faultlog import FaultLog

    with _small_filesystem(tmp_path / "small", 512) as small:
        store = StateStore(small)
        store.load()
        assert (small / RESERVE_FILE).stat().st_size == persist.RESERVE_BYTES
        assert store.save(_changed_state())
        _fill(small)
        plain = _changed_state()
        plain.preferences.intensity = 1
        assert store.save(plain) is False  # a settings change on a full disk is not kept, and says so
        assert store.error is not None and "No space" in store.error
        faulted = _faulted_state()
        fault_log = FaultLog(small / "faults.jsonl")
        store.run_critical(lambda: fault_log.append({"code": "OVER_PRESSURE", "since": 1.7e9})).result()
        assert store.save(faulted, critical=True) is True  # the reserve is released for the fault record
        assert not (small / RESERVE_FILE).exists()
        assert store.error is not None and "reserve" in store.error  # no room to make a new one: reported
        again = StateStore(small)
        assert again.load().latched_fault == faulted.latched_fault  # it survives a restart
        assert [e["code"] for e in fault_log.entries()] == ["OVER_PRESSURE"]
        (small / "filler").unlink()
        assert again.save(_changed_state()) is True  # space again: a new reserve, no error
        assert (small / RESERVE_FILE).exists() and again.error is None


class _SlowCard(FileLayer):
    """An SD card that holds every write until the test lets it go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.writing = threading.Event()

    def write_atomic(self, path: Path, data: bytes) -> None:
        self.writing.set()
        assert self.release.wait(10)
        super().write_atomic(path, data)


def test_persist_writes_run_on_a_worker_not_the_caller(tmp_path: Path) -> None:
    card = _SlowCard()
    store = StateStore(tmp_path, files=card)
    state = _faulted_state()
    future = store.submit(state, critical=True)  # returns at once although the card holds the write
    assert card.writing.wait(5) and not future.done()
    assert not (tmp_path / STATE_FILE).exists()
    state.preferences.intensity = 1  # the caller changes the state meanwhile: the bytes were taken already
    card.release.set()
    future.result(timeout=5)
    assert StateStore(tmp_path).load().preferences.intensity == 4
    store.close()
