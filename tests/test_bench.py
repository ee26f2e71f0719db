"""The benchmark runs end to end (quick mode) and reports every figure; its numbers are not judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from device.bench import EXPECTED_CODES, LATENCIES, NO_WEB, check_targets, combine_runs

REPO = Path(__file__).resolve().parent.parent
FLOOD_ONLY = {"command_under_flood"}  # other commands may be dropped in a flood: counted, not judged



def test_bench_quick_json_has_every_figure(tmp_path: Path) -> None:
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))  # this checkout's code
    result = subprocess.run(
        # the phone page's figures have their own test (test_remote_files.py, bench_web): not twice
        [sys.executable, "-m", "device", "bench", "--quick", "--json", "--no-web"],
        capture_output=True, text=True, timeout=420, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["plan"] == "quick"
    assert {"platform", "python", "cpus", "load_avg_start", "load_avg_end"} <= data["machine"].keys()
    for key in LATENCIES:
        figure = data[key]
        if key in FLOOD_ONLY:
            continue
        assert figure["n"] > 0, key
        assert 0 <= figure["p50"] <= figure["p99"] <= figure["max"], key
    for key in EXPECTED_CODES:  # every fault trial's latched codes are reported, whatever they are
        figure = data[key]
        assert figure["trials"] > 0 and sum(figure["codes"].values()) == figure["trials"], key
    for key in ("loop_jitter", "loop_jitter_competing", "loop_jitter_floor"):
        assert data[key]["pass_cpu_ms"] > 0 and data[key]["steal_ms"] >= 0, key
    flood = data["command_under_flood"]
    assert flood["trials"] == 1 and flood["messages"] == 2_000
    assert 0 <= flood["executed"] <= flood["answered"] <= 1
    footprint = data["footprint"]
    assert footprint["exit_code"] == 0
    for key in ("ready_s", "idle_cpu_pct", "idle_rss_mb", "running_cpu_pct", "running_rss_mb"):
        assert footprint[key] is not None and footprint[key] >= 0, key
    speeds = data["sim_speed"]
    assert speeds and all(s["speedup"] > 1 and s["fault"] is None for s in speeds.values())
    assert data["web"] == {"skipped": NO_WEB}  # left out on request, and said so
    targets = data["targets"]
    assert {"trip_temperature.p99", "trip_pressure.p99", "deadman.p99", "button.p99", "button_competing.p99",
            "loop_jitter.p99", "footprint.ready_s", "footprint.idle_cpu_pct", "command.p99_over_broker",
            "command_reply.p99_over_broker", "set_reply.p99_over_broker_and_storage",
            "command_competing.p99_over_broker", "sim_speed.min_speedup", "stop_under_flood.max",
            "web.tap.p99_over_broker", "web.page.transferred_bytes",
            "web.page.first_state_ms"} <= targets.keys()
    assert all(isinstance(v["met"], bool) for v in targets.values())
    for key in EXPECTED_CODES:
        assert targets[f"{key}.p99"]["codes"] == data[key]["codes"], key


def _run(trip_p99: float, codes: dict[str, int], ready_s: float, speedup: float) -> dict[str, Any]:
    """A made-up single run with the fields the combination reads."""
    return {
        "machine": {"platform": "x", "python": "3", "cpus": 2, "load_avg_start": [1.0, 1.0, 1.0],
                    "load_avg_end": [2.0, 1.0, 1.0]},
        "firmware_version": "0",
        "plan": "quick",
        "trip_pressure": {"n": 3, "p50": 1.0, "p99": trip_p99, "max": trip_p99, "trials": 3, "codes": codes},
        "footprint": {"ready_s": ready_s, "exit_code": 0},
        "sim_speed": {"relax": {"speedup": speedup, "fault": None}},
        "duration_s": 1.0,
    }


def test_bench_combine_runs_reports_median_and_worst() -> None:
    runs = [_run(10.0, {"OVER_PRESSURE": 3}, 0.5, 600.0), _run(30.0, {"OVER_PRESSURE": 3}, 0.9, 400.0),
            _run(20.0, {"OVER_PRESSURE": 3}, 1.5, 550.0)]
    combined = combine_runs(runs)
    assert combined["repeat"] == 3 and len(combined["runs"]) == 3
    assert combined["median"]["trip_pressure"]["p99"] == 20.0
    assert combined["worst"]["trip_pressure"]["p99"] == 30.0
    assert combined["median"]["trip_pressure"]["codes"] == {"OVER_PRESSURE": 9}
    assert combined["median"]["trip_pressure"]["trials"] == 9 and combined["median"]["trip_pressure"]["n"] == 9
    assert combined["worst"]["sim_speed"]["relax"]["speedup"] == 400.0  # for a speed the worst is the lowest
    ready = combined["targets"]["footprint.ready_s"]
    assert ready["value"] == 0.9 and ready["met"] is True
    assert ready["worst"] == 1.5 and ready["met_worst"] is False
    assert combined["machine"]["load_avg_per_run"][0] == [[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]


def test_bench_combine_judges_the_worst_run_on_its_own_broker() -> None:
    quiet, busy = _run(20.0, {"OVER_PRESSURE": 3}, 0.5, 600.0), _run(20.0, {"OVER_PRESSURE": 3}, 0.5, 600.0)
    quiet.update(broker_baseline={"n": 3, "p99": 2.0}, command={"n": 3, "p99": 15.0})  # +13 ms: missed
    busy.update(broker_baseline={"n": 3, "p99": 12.0}, command={"n": 3, "p99": 16.0})  # +4 ms: met
    verdict = combine_runs([quiet, busy])["targets"]["command.p99_over_broker"]
    assert verdict["worst"] == 13.0 and verdict["met_worst"] is False  # not 16 - 12 from different runs


def test_bench_targets_fail_a_fault_trial_with_a_wrong_code() -> None:
    right = check_targets(_run(20.0, {"OVER_PRESSURE": 3}, 0.5, 600.0))["trip_pressure.p99"]
    assert right["met"] is True and "why" not in right
    wrong = check_targets(_run(20.0, {"OVER_PRESSURE": 1, "VALVE_STUCK": 2}, 0.5, 600.0))["trip_pressure.p99"]
    assert wrong["met"] is False and "VALVE_STUCK" in wrong["why"]
    missing = check_targets(_run(20.0, {"OVER_PRESSURE": 2}, 0.5, 600.0))["trip_pressure.p99"]
    assert missing["met"] is False and "2 of 3" in missing["why"]
