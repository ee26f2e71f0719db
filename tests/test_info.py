"""``massager info``: version, device id, config path, usage counters and the last faults, as text and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from device import __version__
from device.cli import main
from device.faultlog import FAULT_LOG_NAME, FaultLog
from device.info import LAST_FAULTS
from device.persist import STATE_FILE, Preferences, StateStore, StoredState, Usage

SINCE = 1_700_000_000.0


def write_state_dir(state_dir: Path, faults: int) -> None:
    """A state dir as the firmware leaves it: state.json with counters and a fault log of ``faults`` entries."""
    stored = StoredState(
        preferences=Preferences(program="calf_care", intensity=4, heat=True),
        usage=Usage(run_s={"pump": 5400.0, "heater": 1800.0, "foot_rollers": 36.0}, sessions=12, faults=faults),
    )
    assert StateStore(state_dir).save(stored)
    log = FaultLog(state_dir / FAULT_LOG_NAME)
    for i in range(faults):
        log.append({"code": "OVER_PRESSURE" if i % 2 else "MOTOR_STALL", "message": f"fault number {i}",
                    "since": SINCE + 60 * i, "device_id": "massager-t3st1d", "program": "relax", "t": 1.0})


def info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    """Run ``massager info --json`` and parse what it printed."""
    assert main(["info", "--json", "--state-dir", str(tmp_path / "state"), *extra]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_info_prints_version_id_counters_and_last_faults(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    write_state_dir(tmp_path / "state", faults=7)
    assert main(["info", "--state-dir", str(tmp_path / "state"), "--device-id", "massager-t3st1d"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"firmware   {__version__}"
    assert out[1] == "device id  massager-t3st1d"
    assert out[2] == "config     (built-in defaults)"
    assert out[3] == f"state dir  {tmp_path / 'state'}"
    assert "sessions   12   faults 7" in out
    assert "  pump               1.50 h" in out and "  heater             0.50 h" in out
    header = out.index(f"last faults ({LAST_FAULTS} of 7, newest last):")
    shown = out[header + 1:]
    assert len(shown) == LAST_FAULTS
    assert [line.rsplit(" ", 1)[1] for line in shown] == [str(i) for i in range(7 - LAST_FAULTS, 7)]
    assert "MOTOR_STALL  fault number 6" in shown[-1]
    assert shown[-1].startswith("  20")  # the time the fault latched, not a raw epoch


def test_info_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_state_dir(tmp_path / "state", faults=3)
    doc = info_json(tmp_path, capsys, "--device-id", "massager-t3st1d", "--mqtt-port", "1884")
    assert set(doc) == {"firmware_version", "device_id", "config_path", "state_dir", "mqtt", "usage",
                        "preferences", "faults_total", "last_faults", "problems"}
    assert doc["firmware_version"] == __version__
    assert doc["device_id"] == "massager-t3st1d"
    assert doc["state_dir"] == str(tmp_path / "state")
    assert doc["mqtt"] == "localhost:1884"
    assert doc["usage"] == {"run_s": {"pump": 5400.0, "heater": 1800.0, "foot_rollers": 36.0},
                            "sessions": 12, "faults": 3, "last_fault": None}
    assert doc["preferences"]["program"] == "calf_care" and doc["preferences"]["intensity"] == 4
    assert doc["faults_total"] == 3
    assert [f["message"] for f in doc["last_faults"]] == ["fault number 0", "fault number 1", "fault number 2"]
    assert doc["last_faults"][1] == {"code": "OVER_PRESSURE", "message": "fault number 1", "since": SINCE + 60,
                                     "device_id": "massager-t3st1d", "program": "relax", "t": 1.0}
    assert doc["problems"] == []


def test_info_names_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "massager.toml"
    config.write_text('device_id = "massager-fromfile"\n')
    doc = info_json(tmp_path, capsys, "--config", str(config))
    assert doc["config_path"] == str(config)
    assert doc["device_id"] == "massager-fromfile"


def test_info_on_a_fresh_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "sessions   0   faults 0" in out
    assert out[-1] == "no faults recorded"
    doc = info_json(tmp_path, capsys)
    assert doc["usage"] == {"run_s": {}, "sessions": 0, "faults": 0, "last_fault": None}
    assert doc["faults_total"] == 0 and doc["last_faults"] == [] and doc["problems"] == []
    assert not (tmp_path / "state").exists()  # looking creates nothing


def test_info_reports_a_corrupt_state_file_without_touching_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_bytes(b'{"usage": {"sessions": ')
    assert main(["info", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {state / STATE_FILE} is corrupt" in out
    assert (state / STATE_FILE).read_bytes() == b'{"usage": {"sessions": '  # evidence left for the technician
    assert sorted(p.name for p in state.iterdir()) == [STATE_FILE]
    doc = info_json(tmp_path, capsys)
    assert doc["usage"]["sessions"] == 0
    assert len(doc["problems"]) == 1 and "is corrupt" in doc["problems"][0]


def test_info_reports_an_unreadable_fault_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state" / FAULT_LOG_NAME).mkdir(parents=True)  # something that cannot be read as a file
    doc = info_json(tmp_path, capsys)
    assert doc["faults_total"] == 0
    assert doc["problems"] == [f"cannot read {tmp_path / 'state' / FAULT_LOG_NAME}: Is a directory"]


def test_info_names_the_default_config_file_when_it_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "etc" / "massager.toml"
    default.parent.mkdir()
    default.write_text('device_id = "massager-ondevice"\n')
    monkeypatch.setattr("device.cli.DEFAULT_CONFIG", default)  # what /etc/massager/massager.toml is on a Pi
    doc = info_json(tmp_path, capsys)
    assert doc["config_path"] == str(default)
    assert doc["device_id"] == "massager-ondevice"
