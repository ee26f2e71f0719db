"""The persistent fault log: durable JSON lines, torn-line tolerance, rotation, ``massager faults``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from device.cli import main
from device.faultlog import FaultLog


def entry(i: int, code: str = "OVER_PRESSURE") -> dict[str, Any]:
    """A fault entry as the device writes it."""
    return {"code": code, "message": f"foot zone at 13{i % 10}.5 mmHg, trip is 135 mmHg", "since": 1.7e9 + i}


def test_faultlog_appends_and_reads_back_in_order(tmp_path: Path) -> None:
    log = FaultLog(tmp_path / "state" / "faults.jsonl")
    assert log.entries() == []
    for i in range(5):
        log.append(entry(i))
    assert log.entries() == [entry(i) for i in range(5)]
    lines = (tmp_path / "state" / "faults.jsonl").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["code"] == "OVER_PRESSURE" for line in lines)


def test_faultlog_fsyncs_every_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    log = FaultLog(tmp_path / "faults.jsonl")
    log.append(entry(1))
    log.append(entry(2))
    assert len(synced) >= 2  # the file each time (plus its directory when created)


def test_faultlog_torn_last_line_is_skipped_and_never_spoils_the_next_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "faults.jsonl"
    log = FaultLog(path)
    log.append(entry(1))
    log.append(entry(2))
    with path.open("ab") as f:  # a power cut in the middle of a write
        f.write(b'{"code":"VALVE_STUCK","mess')
    assert log.entries() == [entry(1), entry(2)]
    assert any("torn or corrupt" in r.getMessage() for r in caplog.records)
    log.append(entry(3, "MOTOR_STALL"))
    assert log.entries() == [entry(1), entry(2), entry(3, "MOTOR_STALL")]


def test_faultlog_skips_garbage_lines(tmp_path: Path) -> None:
    path = tmp_path / "faults.jsonl"
    path.write_bytes(b'\xff\xfe garbage\n[1, 2]\n\n' + json.dumps(entry(7)).encode() + b"\n")
    assert FaultLog(path).entries() == [entry(7)]


def test_faultlog_rotates_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "faults.jsonl"
    log = FaultLog(path, max_bytes=1024, backups=2)
    for i in range(200):
        log.append(entry(i))
    files = log.files()
    assert [p.name for p in files] == ["faults.jsonl.2", "faults.jsonl.1", "faults.jsonl"]
    assert all(p.stat().st_size <= 1024 for p in files)
    kept = log.entries()
    assert kept == [entry(i) for i in range(200 - len(kept), 200)]  # the newest, oldest first
    assert 10 < len(kept) < 200


def test_faultlog_rejects_bad_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        FaultLog(tmp_path / "f", max_bytes=10)
    with pytest.raises(ValueError, match="backups"):
        FaultLog(tmp_path / "f", backups=-1)


def test_faultlog_faults_command_when_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["faults", "--state-dir", str(tmp_path / "state")]) == 0
    assert capsys.readouterr().out == "no faults recorded\n"


def test_faultlog_faults_command_prints_local_time_code_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    FaultLog(tmp_path / "faults.jsonl").append(entry(3, "HEATER_RUNAWAY"))
    assert main(["faults", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1.7e9 + 3))
    assert out == [f"{when}  HEATER_RUNAWAY  foot zone at 133.5 mmHg, trip is 135 mmHg"]


def test_faultlog_faults_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = FaultLog(tmp_path / "faults.jsonl")
    log.append(entry(1))
    log.append(entry(2, "PUMP_OVERRUN"))
    assert main(["faults", "--json", "--state-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == [entry(1), entry(2, "PUMP_OVERRUN")]


def test_faultlog_faults_command_unreadable_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "faults.jsonl").mkdir()  # a directory where the log should be: reading fails
    assert main(["faults", "--state-dir", str(tmp_path)]) == 1
    assert "cannot read the fault log" in capsys.readouterr().err


def test_faultlog_faults_command_shows_bad_lines_and_bad_times_as_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faults.jsonl"
    path.write_bytes(
        b'{"code": "OVER_PRESSURE", "message": "far future", "since": 1e308}\n'
        b'{"code": "X", "message": "far past", "since": -1e308}\n'
        b'{"code": "MOTOR_STALL", "mess\n'
        b'[1, 2]\n'
        b'{"code": "A\\nCRITICAL forged", "message": "line\\u2028two\\u001b[2K", "since": 1.7e9}\n'
    )
    assert main(["faults", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5, out  # one line per log line: nothing forged, nothing dropped
    assert out[0].startswith("BAD TIME 1e+308") and "OVER_PRESSURE" in out[0]
    assert out[1].startswith("BAD TIME -1e+308")
    assert "BAD LINE" in out[2] and "line 3" in out[2] and "torn" in out[2]
    assert "BAD LINE" in out[3] and "line 4" in out[3] and "not a JSON object" in out[3]
    assert "A\\nCRITICAL forged" in out[4] and "\x1b" not in out[4] and "\u2028" not in out[4]
    assert main(["faults", "--json", "--state-dir", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["since"] == 1e308
    assert shown[2]["bad_line"] == 3 and shown[2]["file"] == str(path) and "torn" in shown[2]["problem"]
