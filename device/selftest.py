"""``massager selftest``: the end-of-line test of every actuator and sensor, with measured values."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from device.config import Config
from device.hardware import Hardware
from drivers.clock import ScaledClock, VirtualClock
from drivers.errors import DriverError
from drivers.sim.plant import PLANT_FAULTS, PlantParams
from modes.limits import ZONES, Zone
from modes.signals import Sample

STEP_S = 0.05
TEST_PRESSURE_MMHG = 30.0  # well below every zone's cap
INFLATE_DEADLINE_S = 6.0
HOLD_S = 1.0
HOLD_MAX_DROP_MMHG = 3.0
RAIL_ON_MIN_V = 10.5
RAIL_OFF_MAX_V = 1.0
PLAUSIBLE_C = (5.0, 45.0)
HEATER_RISE_C = 0.5
HEATER_DEADLINE_S = 90.0
HEATER_ABORT_C = 42.0
HEATER_IDLE_WATCH_S = 10.0
HEATER_IDLE_MAX_RISE_C = 0.3
MOTOR_TEST_SPEED = 0.5
MOTOR_RUN_S = 1.0
MOTOR_CURRENT_A = (0.2, 1.6)
DEADMAN_DEADLINE_S = 1.0


@dataclass(frozen=True)
class CheckResult:
    """One line of the report."""

    name: str
    passed: bool
    measured: str
    limit: str
    message: str = ""


class TestBench:
    """Drives the hardware for the self-test; ``wait`` advances time (plant and clock in sim)."""

    def __init__(self, hardware: Hardware, wait: Callable[[float], None]) -> None:
        self.hardware = hardware
        self._wait = wait
        self.heartbeat = True

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass in steps, toggling the heartbeat unless the deadman is being tested."""
        remaining = seconds
        while remaining > 1e-9:
            step = min(STEP_S, remaining)
            if self.heartbeat:
                self.hardware.heartbeat.toggle()
            self._wait(step)
            remaining -= step

    def sample(self) -> Sample:
        """Read every sensor."""
        return self.hardware.read_sample()

    def wait_until(self, cond: Callable[[Sample], bool], deadline_s: float) -> tuple[bool, float, Sample]:
        """Wait until ``cond(sample)``; returns (met, seconds taken, last sample)."""
        waited = 0.0
        sample = self.sample()
        while not cond(sample):
            if waited >= deadline_s:
                return False, waited, sample
            self.wait(STEP_S)
            waited += STEP_S
            sample = self.sample()
        return True, waited, sample


def _fmt(value: float | None, unit: str) -> str:
    return "no reading" if value is None else f"{value:.1f} {unit}"


def run_checks(bench: TestBench, config: Config) -> list[CheckResult]:
    """Run every check in order; the hardware ends safe whatever happens."""
    hw = bench.hardware
    results: list[CheckResult] = []
    try:
        hw.safe_off()
        on = [n for n, v in hw.outputs().items() if v]
        results.append(CheckResult("outputs_off", not on, ", ".join(on) or "all off", "all off",
                                   "" if not on else f"still on: {', '.join(on)}"))
        sample = bench.sample()
        if not sample.ok:
            results.append(CheckResult("sensor_bus", False, "I2C error", "reads without error",
                                       f"sensor bus failed: {sample.bus_error}"))
            return results
        results.append(CheckResult("sensor_bus", True, "reads", "reads without error"))
        results.append(_check_relay(bench))
        results.append(_check_thermistors(bench, config))
        for zone in ZONES:
            results.append(_check_zone(bench, zone, config))
        for motor in ("foot_rollers", "calf_rollers"):
            results.append(_check_motor(bench, motor))
        results.append(_check_heater(bench))
        results.append(_check_deadman(bench))
    except DriverError as exc:
        results.append(CheckResult("driver", False, type(exc).__name__, "no driver error", str(exc)))
    finally:
        bench.heartbeat = True
        hw.safe_off()
    return results


def _check_relay(bench: TestBench) -> CheckResult:
    hw = bench.hardware
    hw.relay.energise()
    ok_on, _t, s_on = bench.wait_until(lambda s: (s.rail_v or 0.0) >= RAIL_ON_MIN_V, 0.5)
    hw.relay.drop()
    ok_off, _t, s_off = bench.wait_until(
        lambda s: s.rail_v is not None and s.rail_v <= RAIL_OFF_MAX_V, 0.5
    )
    measured = f"on {_fmt(s_on.rail_v, 'V')}, off {_fmt(s_off.rail_v, 'V')}"
    limit = f"on >= {RAIL_ON_MIN_V} V, off <= {RAIL_OFF_MAX_V} V"
    msg = "" if ok_on and ok_off else "relay did not switch the 12 V rail" + (
        " on" if not ok_on else " off")
    return CheckResult("relay", ok_on and ok_off, measured, limit, msg)


def _check_thermistors(bench: TestBench, config: Config) -> CheckResult:
    sample = bench.sample()
    temps = sample.temperature_c
    measured = ", ".join(f"{n} {_fmt(v, '°C')}" for n, v in temps.items())
    limit = f"{PLAUSIBLE_C[0]}-{PLAUSIBLE_C[1]} °C, agree within {config.safety.sensor_disagree_c} °C"
    problems = [f"{n}: {sample.errors.get(n, 'no reading')}" for n, v in temps.items() if v is None]
    problems += [f"{n} reads {v:.1f} °C, outside {PLAUSIBLE_C[0]}-{PLAUSIBLE_C[1]} °C"
                 for n, v in temps.items() if v is not None and not PLAUSIBLE_C[0] <= v <= PLAUSIBLE_C[1]]
    values = [v for v in temps.values() if v is not None]
    if len(values) == len(temps) and values and max(values) - min(values) > config.safety.sensor_disagree_c:
        problems.append(f"thermistors disagree by {max(values) - min(values):.1f} °C")
    return CheckResult("thermistors", not problems, measured, limit, "; ".join(problems))


def _check_zone(bench: TestBench, zone: Zone, config: Config) -> CheckResult:
    hw = bench.hardware
    name = f"zone_{zone}"
    vented = config.safety.vented_mmhg
    hw.relay.energise()
    hw.valves[zone].connect()
    hw.pump.run(1.0)
    cap = config.safety.pressure_cap_mmhg[zone]
    target = min(TEST_PRESSURE_MMHG, cap * 0.8)
    ok_fill, t_fill, s = bench.wait_until(lambda s: (s.pressure_mmhg[zone] or 0.0) >= target,
                                          INFLATE_DEADLINE_S)
    hw.pump.off()
    others = {z: s.pressure_mmhg[z] for z in ZONES if z != zone}
    p_full = s.pressure_mmhg[zone] or 0.0
    bench.wait(HOLD_S)
    p_held = bench.sample().pressure_mmhg[zone] or 0.0
    hw.valves[zone].vent()
    ok_vent, t_vent, s_vent = bench.wait_until(
        lambda s: _below(s.pressure_mmhg[zone], vented),
        config.safety.vent_deadline_s,
    )
    hw.relay.drop()
    problems = []
    if not ok_fill:
        problems.append(f"{zone} reached only {p_full:.1f} mmHg in {INFLATE_DEADLINE_S:.0f} s "
                        "(pump dead, valve stuck open or a leak)")
    elif p_full - p_held > HOLD_MAX_DROP_MMHG:
        problems.append(f"{zone} lost {p_full - p_held:.1f} mmHg in {HOLD_S:.0f} s hold (leak)")
    crosstalk = [z for z, p in others.items() if p is not None and p > vented]
    if crosstalk:
        problems.append(f"{', '.join(crosstalk)} rose while only {zone} was connected (valve stuck closed?)")
    if not ok_vent:
        problems.append(f"{zone} still {_fmt(s_vent.pressure_mmhg[zone], 'mmHg')} "
                        f"{config.safety.vent_deadline_s:.0f} s after venting (valve stuck closed)")
    measured = (f"{target:.0f} mmHg in {t_fill:.1f} s, vented in {t_vent:.1f} s" if ok_fill and ok_vent
                else f"peak {p_full:.1f} mmHg, after vent {_fmt(s_vent.pressure_mmhg[zone], 'mmHg')}")
    limit = (f">= {target:.0f} mmHg within {INFLATE_DEADLINE_S:.0f} s; < {vented:.0f} mmHg within "
             f"{config.safety.vent_deadline_s:.0f} s")
    return CheckResult(name, not problems, measured, limit, "; ".join(problems))


def _below(value: float | None, limit: float) -> bool:
    return value is not None and value < limit


def _check_motor(bench: TestBench, motor: str) -> CheckResult:
    hw = bench.hardware
    roller = hw.rollers[motor]
    hw.relay.energise()
    readings: dict[str, float | None] = {}
    for direction, speed in (("forward", MOTOR_TEST_SPEED), ("backward", -MOTOR_TEST_SPEED)):
        roller.drive(0.0)
        bench.wait(hw.config.motors.reverse_dwell_s + 0.1)
        elapsed = 0.0
        while elapsed < MOTOR_RUN_S:
            roller.drive(speed)
            bench.wait(STEP_S)
            elapsed += STEP_S
        readings[direction] = bench.sample().motor_current_a.get(motor)
    roller.drive(0.0)
    hw.relay.drop()
    low, high = MOTOR_CURRENT_A
    problems = []
    for direction, amps in readings.items():
        if amps is None:
            problems.append(f"{direction}: no current reading")
        elif amps < low:
            problems.append(f"{direction}: {amps:.2f} A, below {low} A (motor open or not driven)")
        elif amps > high:
            problems.append(f"{direction}: {amps:.2f} A, above {high} A (stalled or jammed)")
    measured = ", ".join(f"{d} {_fmt(a, 'A')}" for d, a in readings.items())
    return CheckResult(motor, not problems, measured, f"{low}-{high} A each way", "; ".join(problems))


def _check_heater(bench: TestBench) -> CheckResult:
    hw = bench.hardware
    start = bench.sample().temperature_c
    if any(v is None for v in start.values()):
        return CheckResult("heater", False, "no temperature", f"+{HEATER_RISE_C} °C", "thermistor unreadable")
    hw.relay.energise()
    bench.wait(HEATER_IDLE_WATCH_S)  # powered but at duty 0: a stuck-on switch shows up as warming
    idle = bench.sample().temperature_c
    idle_rise = max((idle[n] or 0.0) - (start[n] or 0.0) for n in start)
    if idle_rise >= HEATER_IDLE_MAX_RISE_C:
        hw.relay.drop()
        return CheckResult(
            "heater", False, f"+{idle_rise:.2f} °C in {HEATER_IDLE_WATCH_S:.0f} s at duty 0",
            f"< {HEATER_IDLE_MAX_RISE_C} °C at duty 0",
            "the pad warms with the heater off: heater switch stuck on (runaway)",
        )
    start = idle
    hw.heater.set_duty(1.0)

    def risen(s: Sample) -> bool:
        temps = s.temperature_c
        if any(v is None or v >= HEATER_ABORT_C for v in temps.values()):
            return True
        return all((temps[n] or 0.0) - (start[n] or 0.0) >= HEATER_RISE_C for n in temps)

    ok, waited, s = bench.wait_until(risen, HEATER_DEADLINE_S)
    hw.heater.off()
    hw.relay.drop()
    rises = {n: (s.temperature_c[n] or 0.0) - (start[n] or 0.0) for n in start}
    passed = ok and all(r >= HEATER_RISE_C for r in rises.values())
    measured = ", ".join(f"{n} +{r:.2f} °C" for n, r in rises.items()) + f" in {waited:.0f} s"
    msg = "" if passed else f"heater did not raise the temperature by {HEATER_RISE_C} °C within " \
        f"{HEATER_DEADLINE_S:.0f} s (heater open or not powered)"
    return CheckResult("heater", passed, measured, f"+{HEATER_RISE_C} °C within {HEATER_DEADLINE_S:.0f} s", msg)


def _check_deadman(bench: TestBench) -> CheckResult:
    hw = bench.hardware
    hw.relay.energise()
    bench.wait(0.3)
    bench.heartbeat = False  # stop toggling: the external deadman must drop the rail
    ok, waited, s = bench.wait_until(
        lambda s: s.rail_v is not None and s.rail_v <= RAIL_OFF_MAX_V, DEADMAN_DEADLINE_S
    )
    bench.heartbeat = True
    hw.relay.drop()
    bench.wait(0.2)
    measured = f"rail {_fmt(s.rail_v, 'V')} after {waited:.2f} s"
    return CheckResult("deadman", ok, measured, f"rail off within {DEADMAN_DEADLINE_S} s of the last beat",
                       "" if ok else "the external deadman did not drop the relay when the heartbeat stopped")


def run_selftest(config: Config, *, sim: bool, inject: str | None = None) -> list[CheckResult]:
    """Build the hardware (simulated or real), run every check, close everything."""
    if sim:
        from device.sim import build_sim

        clock = VirtualClock()
        rig = build_sim(config, clock=clock.now, params=PlantParams(deadman_timeout_s=0.5))
        if inject:
            rig.plant.inject(inject)

        def wait(seconds: float) -> None:
            rig.plant.step(seconds)
            clock.advance(seconds)

        try:
            return run_checks(TestBench(rig.hardware, wait), config)
        finally:
            rig.close()
    from device.app import build_real_hardware

    hardware = build_real_hardware(config, ScaledClock())
    try:
        return run_checks(TestBench(hardware, time.sleep), config)
    finally:
        hardware.close()


def report(results: list[CheckResult]) -> str:
    """The human-readable report."""
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        lines.append(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<{width}}  {r.measured}  (limit: {r.limit})")
        if r.message:
            lines.append(f"      {'':<{width}}  -> {r.message}")
    passed = all(r.passed for r in results)
    lines.append(f"selftest {'PASSED' if passed else 'FAILED'}: "
                 f"{sum(r.passed for r in results)} of {len(results)} checks passed")
    return "\n".join(lines)


def selftest_main(args: argparse.Namespace, config: Config) -> int:
    """``massager selftest [--sim] [--json] [--inject FAULT]``."""
    inject = getattr(args, "inject", None)
    if inject is not None and (not args.sim or inject not in PLANT_FAULTS):
        print(f"massager selftest: --inject needs --sim and one of {', '.join(PLANT_FAULTS)}",
              file=sys.stderr)
        return 2
    if not args.sim:
        from device.app import has_gpio

        if not has_gpio():
            print("massager selftest: no GPIO on this machine; use --sim", file=sys.stderr)
            return 2
    results = run_selftest(config, sim=args.sim, inject=inject)
    passed = all(r.passed for r in results)
    if args.json:
        doc: dict[str, Any] = {"passed": passed, "checks": [asdict(r) for r in results]}
        print(json.dumps(doc, indent=1))
    else:
        print(report(results))
    return 0 if passed else 1
