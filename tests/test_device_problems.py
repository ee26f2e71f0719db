"""The Device's problems (refusals, faults, warnings) and the small readers behind Home Assistant's sensors."""

from __future__ import annotations

import datetime
from pathlib import Path

from device.api import Problem, iso_time, wifi_signal_dbm
from device.discovery import words

WIRELESS = """Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   54.  -56.  -256        0      0      0      0      0        0
"""


def test_wifi_signal_is_read_from_proc_net_wireless(tmp_path: Path) -> None:
    path = tmp_path / "wireless"
    path.write_text(WIRELESS)
    assert wifi_signal_dbm(path) == -56
    path.write_text(WIRELESS.splitlines()[0] + "\n" + WIRELESS.splitlines()[1] + "\n")  # no interface
    assert wifi_signal_dbm(path) is None
    assert wifi_signal_dbm(tmp_path / "absent") is None


def test_iso_time_is_utc_with_its_offset() -> None:
    text = iso_time(1796198400.4)
    assert text == "2026-12-02T08:00:00+00:00"
    assert datetime.datetime.fromisoformat(text).timestamp() == 1796198400


def test_problem_summaries_read_as_words() -> None:
    assert words("HEAT_TARGET_UNREACHABLE") == "Heat target unreachable"
    refused = Problem(1, "refused", "reset_fault", "action: reset refused: ...", 0.0)
    assert refused.summary == "Reset fault refused"
    fault = Problem(2, "fault", "OVER_TEMPERATURE", "pad_1 reads 45.3 °C", 1796198400.0)
    assert fault.summary == "Fault: Over temperature"
    assert fault.as_dict() == {"kind": "fault", "code": "OVER_TEMPERATURE",
                               "summary": "Fault: Over temperature", "message": "pad_1 reads 45.3 °C",
                               "at": "2026-12-02T08:00:00+00:00"}
