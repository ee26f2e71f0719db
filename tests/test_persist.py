"""Persistence: round trip, write only on change, atomic under interruption, corrupt files -> defaults."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from device import persist
from device.persist import STATE_FILE, Preferences, StateStore, StoredState, Usage, atomic_write


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
    assert _files(tmp_path) == [STATE_FILE]


STEPS = ("open", "fsync", "replace", "open", "fsync")  # temp file, its data, rename, directory, directory


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
    assert loaded == (new if renamed else old)  # the rename is the moment of truth
    assert _files(tmp_path) == [STATE_FILE]  # the half-written temp file is gone
    assert after.save(new) is not renamed  # the next save completes what the cut interrupted


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
    assert _files(tmp_path) == [STATE_FILE]
    assert store.save(new) is True  # a failed write is retried on the next save
    assert StateStore(tmp_path).load() == new


def test_persist_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    """A process killed before it could clean up leaves a torn temp file: the state is still the old one."""
    old = _changed_state()
    StateStore(tmp_path).save(old)
    data = (tmp_path / STATE_FILE).read_bytes()
    (tmp_path / f".{STATE_FILE}.abc123.tmp").write_bytes(data[: len(data) // 2])
    assert StateStore(tmp_path).load() == old


def test_persist_truncated_file_of_every_length_gives_defaults(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A torn file (any length short of complete) never crashes the load and never half-applies."""
    state = _changed_state()
    StateStore(tmp_path).save(state)
    data = (tmp_path / STATE_FILE).read_bytes()
    assert data.endswith(b"}\n")
    for length in range(len(data) - 1):  # everything up to (not including) the closing brace
        (tmp_path / STATE_FILE).write_bytes(data[:length])
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="device.persist"):
            loaded = StateStore(tmp_path).load()
        assert loaded == StoredState(), f"length {length}"
        assert any("corrupt" in r.getMessage() for r in caplog.records), f"length {length}"
        assert not (tmp_path / STATE_FILE).exists()  # moved aside for a technician
        assert (tmp_path / "state.corrupt").read_bytes() == data[:length]
    (tmp_path / STATE_FILE).write_bytes(data[:-1])  # only the final newline lost: still whole
    assert StateStore(tmp_path).load() == state


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"not json at all", "not JSON"),
        (b"[1, 2, 3]", "not an object"),
        (json.dumps({"preferences": {"intensity": 9}}).encode(), "intensity out of range"),
        (json.dumps({"preferences": {"program": ""}}).encode(), "empty program"),
        (json.dumps({"usage": {"sessions": -1}}).encode(), "negative counter"),
        (json.dumps({"preferences": {"skip_zones": ["knee"]}}).encode(), "unknown zone"),
        (b"\x00" * 64, "zeros after a power cut"),
    ],
)
def test_persist_corrupt_file_gives_defaults_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    store = StateStore(tmp_path)
    with caplog.at_level(logging.ERROR, logger="device.persist"):
        loaded = store.load()
    assert loaded == StoredState(), reason
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "corrupt" in errors[0].getMessage(), reason
    assert str(tmp_path / STATE_FILE) in errors[0].getMessage()
    assert (tmp_path / "state.corrupt").read_bytes() == content
    assert store.save(loaded) is True  # defaults replace the corrupt file
    assert StateStore(tmp_path).load() == StoredState()


def test_persist_unreadable_file_gives_defaults_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).mkdir()  # reading a directory fails with an OSError
    with caplog.at_level(logging.ERROR, logger="device.persist"):
        loaded = StateStore(tmp_path).load()
    assert loaded == StoredState()
    assert "cannot read" in caplog.text


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
    assert "corrupt" in caplog.text


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
