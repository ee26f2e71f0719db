"""``massager selftest``: passes on a healthy sim, fails the right check for each plant fault, ends safe."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from device import selftest
from device.cli import main
from device.config import Config, load_config
from device.selftest import CheckResult, report, run_checks, run_selftest
from device.sim import SimRig, build_sim
from drivers.clock import VirtualClock
from drivers.sim.plant import MOTOR_NAMES, PLANT_FAULTS, ZONE_NAMES, PlantParams

MASSAGER = Path(sys.executable).parent / "massager"
ALL_CHECKS = ["outputs_off", "sensor_bus", "relay", "thermistors", "zone_foot", "zone_ankle", "zone_calf",
              "foot_rollers", "calf_rollers", "heater", "deadman"]
LOAD_PINS = ("foot_rollers_forward", "foot_rollers_backward", "calf_rollers_forward", "calf_rollers_backward",
             "pump", "valve_foot", "valve_ankle", "valve_calf", "heater", "relay")

# fault -> (the checks that must fail and no others, the check whose message names the cause, words in it)
FAULT_EXPECTATIONS: dict[str, tuple[set[str], str, tuple[str, ...]]] = {
    "heater_runaway": ({"heater"}, "heater", ("stuck on", "runaway")),
    "heater_open": ({"heater"}, "heater", ("heater open",)),
    "thermistor_open": ({"thermistors", "heater"}, "thermistors", ("pad_1", "open circuit")),
    "thermistor_short": ({"thermistors", "heater"}, "thermistors", ("pad_1", "short circuit")),
    "valve_stuck_closed": ({"zone_foot"}, "zone_foot", ("valve stuck closed",)),
    "valve_stuck_open": ({"zone_foot"}, "zone_foot", ("valve stuck open",)),
    "pump_dead": ({"zone_foot", "zone_ankle", "zone_calf"}, "zone_foot", ("pump dead", "no zone filled")),
    "motor_stall": ({"foot_rollers"}, "foot_rollers", ("stalled",)),
    "i2c_dead": ({"sensor_bus"}, "sensor_bus", ("sensor bus failed", "I2C")),
}


def failed(results: list[CheckResult] | list[dict[str, Any]]) -> set[str]:
    """Names of the checks that failed (results as objects or as their JSON form)."""
    rows = [r if isinstance(r, dict) else asdict(r) for r in results]
    return {r["name"] for r in rows if not r["passed"]}


def message_of(results: list[CheckResult], name: str) -> str:
    """The message of the check called ``name``."""
    return next(r.message for r in results if r.name == name)


def sim_rig(config: Config, clock: VirtualClock, params: PlantParams) -> tuple[SimRig, selftest.TestBench]:
    """A rig on virtual time and the bench that drives it, as ``run_selftest`` builds them."""
    rig = build_sim(config, clock=clock.now, params=params)

    def wait(seconds: float) -> None:
        rig.plant.step(seconds)
        clock.advance(seconds)

    return rig, selftest.TestBench(rig.hardware, wait)


def test_selftest_healthy_sim_passes_every_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--sim", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith(("PASS", "FAIL"))]
    assert [row.split()[1] for row in rows] == ALL_CHECKS
    assert all(row.startswith("PASS ") for row in rows), "\n".join(out)
    assert out[-1] == f"selftest PASSED: {len(ALL_CHECKS)} of {len(ALL_CHECKS)} checks passed"
    assert not any("->" in line for line in out)  # no failure messages
    zone = next(row for row in rows if row.split()[1] == "zone_calf")
    assert "(limit: >= 30 mmHg within 4 s; < 10 mmHg within 3 s)" in zone  # measured value and its threshold


def test_selftest_json_as_a_process_passes_on_a_healthy_sim(tmp_path: Path) -> None:
    proc = subprocess.run([str(MASSAGER), "selftest", "--sim", "--json", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["passed"] is True
    assert [c["name"] for c in doc["checks"]] == ALL_CHECKS
    for check in doc["checks"]:
        assert set(check) == {"name", "passed", "measured", "limit", "message"}
        assert check["passed"] is True and check["message"] == "" and check["measured"] and check["limit"]
    deadman = next(c for c in doc["checks"] if c["name"] == "deadman")
    assert deadman["measured"].startswith("rail 0.0 V after ")


@pytest.mark.parametrize("fault", PLANT_FAULTS)
def test_selftest_injected_fault_fails_its_check_naming_the_cause(
    fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    must_fail, named_by, words = FAULT_EXPECTATIONS[fault]
    assert main(["selftest", "--sim", "--json", "--inject", fault, "--state-dir", str(tmp_path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False
    assert failed(doc["checks"]) == must_fail
    message = next(c["message"] for c in doc["checks"] if c["name"] == named_by)
    for word in words:
        assert word in message, f"{fault}: {message!r} does not name {word!r}"


def test_selftest_every_plant_fault_has_an_expectation() -> None:
    assert set(FAULT_EXPECTATIONS) == set(PLANT_FAULTS)


def test_selftest_injected_fault_report_shows_fail_and_reason(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--sim", "--inject", "motor_stall", "--state-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    row = out.index(next(line for line in out if line.startswith("FAIL  foot_rollers")))
    assert "(limit: 0.2-1.6 A each way)" in out[row]
    assert "-> forward:" in out[row + 1] and "stalled or jammed" in out[row + 1]
    assert out[-1] == f"selftest FAILED: {len(ALL_CHECKS) - 1} of {len(ALL_CHECKS)} checks passed"


@pytest.mark.parametrize("fault", ["valve_stuck_closed", "valve_stuck_open"])
@pytest.mark.parametrize("zone", ZONE_NAMES)
def test_selftest_valve_fault_fails_that_zone_only(config: Config, fault: str, zone: str) -> None:
    results = run_selftest(config, sim=True, inject=fault, inject_params={"zone": zone})
    assert failed(results) == {f"zone_{zone}"}
    cause = "valve stuck closed" if fault == "valve_stuck_closed" else "valve stuck open"
    assert cause in message_of(results, f"zone_{zone}")


@pytest.mark.parametrize("motor", MOTOR_NAMES)
def test_selftest_motor_stall_fails_that_motor_only(config: Config, motor: str) -> None:
    results = run_selftest(config, sim=True, inject="motor_stall", inject_params={"motor": motor})
    assert failed(results) == {motor}
    assert "stalled or jammed" in message_of(results, motor)


@pytest.mark.parametrize("fault", ["thermistor_open", "thermistor_short"])
def test_selftest_thermistor_fault_names_that_sensor(config: Config, fault: str) -> None:
    results = run_selftest(config, sim=True, inject=fault, inject_params={"sensor": "pad_2"})
    assert failed(results) == {"thermistors", "heater"}  # the heater cannot be tested blind
    assert message_of(results, "thermistors").startswith("pad_2: ")
    assert "pad_1" not in message_of(results, "thermistors")
    assert message_of(results, "heater") == "not tested: thermistor pad_2 unreadable"


def test_selftest_every_zone_stuck_closed_fails_every_zone(config: Config) -> None:
    results = run_selftest(config, sim=True, inject="valve_stuck_closed", inject_params={"zone": "all"})
    assert failed(results) == {"zone_foot", "zone_ankle", "zone_calf"}
    for zone in ZONE_NAMES:
        assert "after venting (valve stuck closed)" in message_of(results, f"zone_{zone}")


@pytest.mark.parametrize("fault", [None, *PLANT_FAULTS])
def test_selftest_leaves_every_output_off(config: Config, clock: VirtualClock, fault: str | None) -> None:
    rig, bench = sim_rig(config, clock, PlantParams(deadman_timeout_s=0.5))
    try:
        if fault is not None:
            rig.plant.inject(fault)
        results = run_checks(bench, config)
        assert rig.plant.all_off(), rig.plant.outputs()
        assert rig.plant.outputs()["relay"] is False
        driven = {name for name in LOAD_PINS
                  if any(s.state for s in rig.factory.pin(getattr(config.pins, name)).states)}
        if fault == "i2c_dead":
            assert driven == set()  # the bus failed before anything was switched on
        else:
            assert {"relay", "pump", "valve_foot", "valve_calf", "foot_rollers_backward"} <= driven
        assert results[0].name == "outputs_off" and results[0].passed
    finally:
        rig.close()


@pytest.mark.parametrize("dies_at_s", [3.0, 12.0, 30.0])
def test_selftest_bus_failure_mid_run_blames_the_bus_and_ends_off(
    config: Config, clock: VirtualClock, dies_at_s: float
) -> None:
    rig = build_sim(config, clock=clock.now, params=PlantParams(deadman_timeout_s=0.5))

    def wait(seconds: float) -> None:
        rig.plant.step(seconds)
        clock.advance(seconds)
        if clock.now() >= dies_at_s and not rig.plant.faults:
            rig.plant.inject("i2c_dead")

    try:
        results = run_checks(selftest.TestBench(rig.hardware, wait), config)
        assert rig.plant.all_off(), rig.plant.outputs()
    finally:
        rig.close()
    bad = [r for r in results if not r.passed]
    assert bad, report(results)
    for r in bad:
        assert r.measured == "I2C error"
        assert r.message.startswith("sensor bus failed during this check: "), r.message
    assert all(r.passed for r in results[: len(results) - len(bad)])
    assert results[-1].name != "deadman"  # the run stopped at the failed check


def test_selftest_deadman_fails_without_an_external_deadman(config: Config, clock: VirtualClock) -> None:
    rig, bench = sim_rig(config, clock, PlantParams())  # the default plant has no deadman fitted
    try:
        results = run_checks(bench, config)
        assert rig.plant.all_off()
    finally:
        rig.close()
    assert failed(results) == {"deadman"}
    deadman = results[-1]
    assert deadman.name == "deadman"
    assert deadman.measured == "rail 12.0 V after 1.00 s"
    assert deadman.message == "the external deadman did not drop the relay when the heartbeat stopped"


def test_selftest_deadman_trips_within_its_limit(config: Config, clock: VirtualClock) -> None:
    rig, bench = sim_rig(config, clock, PlantParams(deadman_timeout_s=0.5))
    try:
        results = run_checks(bench, config)
    finally:
        rig.close()
    deadman = results[-1]
    assert deadman.passed
    seconds = float(deadman.measured.split(" after ")[1].removesuffix(" s"))
    assert 0.5 <= seconds <= 1.0


def test_selftest_runs_in_virtual_time(config: Config, clock: VirtualClock) -> None:
    rig, bench = sim_rig(config, clock, PlantParams(deadman_timeout_s=0.5))
    try:
        run_checks(bench, config)
    finally:
        rig.close()
    assert 20.0 < clock.now() < 60.0  # half a minute of plant time, not of the test's


def test_selftest_inject_without_sim_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--inject", "pump_dead", "--state-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--inject works only with --sim" in captured.err


def test_selftest_unknown_fault_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--sim", "--inject", "pump_gone", "--state-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown plant fault 'pump_gone'" in captured.err
    assert "pump_dead" in captured.err  # the known names are listed


def test_selftest_without_gpio_says_to_use_sim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("device.app.has_gpio", lambda: False)
    assert main(["selftest", "--state-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no GPIO on this machine; use --sim" in captured.err


def test_run_selftest_refuses_injection_on_real_hardware(config: Config) -> None:
    with pytest.raises(ValueError, match="only be injected with sim=True"):
        run_selftest(config, sim=False, inject="pump_dead")


def test_selftest_cli_inject_zone_fails_that_zone_only(capsys: pytest.CaptureFixture[str]) -> None:
    from device.cli import main

    assert main(["selftest", "--sim", "--json", "--inject", "valve_stuck_open", "--inject-zone", "ankle"]) == 1
    checks = {c["name"]: c["passed"] for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["zone_ankle"] is False
    assert checks["zone_foot"] is True and checks["zone_calf"] is True


def test_selftest_cli_inject_param_that_the_fault_does_not_take_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from device.cli import main

    assert main(["selftest", "--sim", "--inject", "pump_dead", "--inject-zone", "calf"]) == 2
    assert "pump_dead takes no parameter zone" in capsys.readouterr().err


def test_selftest_passes_on_a_unit_with_lower_heater_and_roller_limits(tmp_path: Path) -> None:
    config = load_config(None, {"state_dir": str(tmp_path), "programs_dir": None,
                                "heater.max_duty": 0.8, "motors.max_speed": 0.4})
    results = run_selftest(config, sim=True)
    assert all(r.passed for r in results), [r for r in results if not r.passed]
