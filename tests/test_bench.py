"""The benchmark runs end to end (quick mode) and reports every figure; its numbers are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LATENCIES = (
    "trip_temperature",
    "trip_temperature_competing",
    "trip_pressure",
    "deadman",
    "button",
    "broker_baseline",
    "command",
    "broker_under_flood",
    "stop_under_flood",
    "stop_reply_under_flood",
    "loop_jitter",
    "loop_jitter_competing",
)


def test_bench_quick_json_has_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "device", "bench", "--quick", "--json"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["plan"] == "quick"
    assert {"platform", "python", "cpus"} <= data["machine"].keys()
    for key in LATENCIES:
        figure = data[key]
        assert figure["n"] > 0, key
        assert 0 <= figure["p50"] <= figure["p99"] <= figure["max"], key
    assert data["trip_temperature"]["codes"], "the trips latched a fault code"
    flood = data["command_under_flood"]  # other commands may be dropped in a flood: counted, not judged
    assert flood["trials"] == 2 and 0 <= flood["executed"] <= flood["answered"] <= 2
    footprint = data["footprint"]
    assert footprint["exit_code"] == 0
    for key in ("ready_s", "idle_cpu_pct", "idle_rss_mb", "running_cpu_pct", "running_rss_mb"):
        assert footprint[key] is not None and footprint[key] >= 0, key
    speeds = data["sim_speed"]
    assert speeds and all(s["speedup"] > 1 and s["fault"] is None for s in speeds.values())
    targets = data["targets"]
    assert {"trip_temperature.p99", "deadman.p99", "button.p99", "loop_jitter.p99",
            "footprint.ready_s", "command.p99_over_broker", "sim_speed.min_speedup",
            "stop_under_flood.max"} <= targets.keys()
    assert all(isinstance(v["met"], bool) for v in targets.values())
