"""``massager selftest``: the end-of-line test of every actuator and sensor, with measured values."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from device.config import Config
from device.hardware import Hardware
from drivers.clock import ScaledClock, VirtualClock
from drivers.errors import DriverError
from drivers.sim.plant import PLANT_FAULTS, PlantFaultError, PlantParams
from modes.limits import ZONES, Zone
from modes.signals import Sample

STEP_S = 0.05
TEST_PRESSURE_MMHG = 30.0  # well below every zone's cap
# A healthy zone reaches the test pressure in under 2 s; 4 s of full pump stays under every cap.
INFLATE_DEADLINE_S = 4.0
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
        self.bus_error: str | None = None  # the first I2C failure seen, if any

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
        """Read every sensor, remembering the first bus failure."""
        sample = self.hardware.read_sample()
        if sample.bus_error is not None and self.bus_error is None:
            self.bus_error = sample.bus_error
        return sample

    def wait_until(self, cond: Callable[[Sample], bool], deadline_s: float) -> tuple[bool, float, Sample]:
        """Wait until ``cond(sample)``: (met, seconds taken, last sample); a bus failure ends it unmet."""
        waited = 0.0
        sample = self.sample()
        while sample.ok and not cond(sample):
            if waited >= deadline_s:
                return False, waited, sample
            self.wait(STEP_S)
            waited += STEP_S
            sample = self.sample()
        return sample.ok, waited, sample


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
        steps: list[Callable[[], list[CheckResult]]] = [
            lambda: [_check_relay(bench)],
            lambda: [_check_thermistors(bench, config)],
            lambda: _check_zones(bench, config),
            lambda: [_check_motor(bench, "foot_rollers")],
            lambda: [_check_motor(bench, "calf_rollers")],
            lambda: [_check_heater(bench)],
            lambda: [_check_deadman(bench)],
        ]
        for step in steps:
            found = step()
            if bench.bus_error is not None:  # what was measured is incomplete: blame the bus, not the part
                results.extend(
                    CheckResult(r.name, False, "I2C error", r.limit,
                                f"sensor bus failed during this check: {bench.bus_error}")
                    for r in found
                )
                break
            results.extend(found)
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


@dataclass(frozen=True)
class ZoneTest:
    """What one zone's inflate / hold / vent run measured, before the causes are worked out."""

    zone: Zone
    filled: bool
    peak_mmhg: float
    held_mmhg: float
    vented: bool
    after_vent_mmhg: float | None
    fill_s: float
    vent_s: float
    target_mmhg: float
    rose: tuple[Zone, ...]  # other zones, vented at the start, that rose while only this one was connected


def _test_zone(bench: TestBench, zone: Zone, config: Config) -> ZoneTest:
    hw = bench.hardware
    vented = config.safety.vented_mmhg
    before = bench.sample().pressure_mmhg
    hw.relay.energise()
    hw.valves[zone].connect()
    hw.pump.run(1.0)
    target = min(TEST_PRESSURE_MMHG, config.safety.pressure_cap_mmhg[zone] * 0.8)
    caps = config.safety.pressure_cap_mmhg

    def filled_or_capped(s: Sample) -> bool:  # any zone at its cap stops the pump (crossed wiring)
        return (s.pressure_mmhg[zone] or 0.0) >= target or any(
            (s.pressure_mmhg[z] or 0.0) >= caps[z] for z in ZONES
        )

    ok_fill, t_fill, s = bench.wait_until(filled_or_capped, INFLATE_DEADLINE_S)
    ok_fill = ok_fill and (s.pressure_mmhg[zone] or 0.0) >= target
    hw.pump.off()
    # Only a zone that was vented before can show crosstalk: one that never vented is its own failure.
    rose = tuple(z for z in ZONES if z != zone and _below(before[z], vented)
                 and not _below(s.pressure_mmhg[z], vented))
    p_full = s.pressure_mmhg[zone] or 0.0
    bench.wait(HOLD_S)
    p_held = bench.sample().pressure_mmhg[zone] or 0.0
    hw.valves[zone].vent()
    ok_vent, t_vent, s_vent = bench.wait_until(
        lambda s: _below(s.pressure_mmhg[zone], vented),
        config.safety.vent_deadline_s,
    )
    hw.relay.drop()
    return ZoneTest(zone, ok_fill, p_full, p_held, ok_vent, s_vent.pressure_mmhg[zone], t_fill, t_vent,
                    target, rose)


def _check_zones(bench: TestBench, config: Config) -> list[CheckResult]:
    """Inflate, hold and vent each zone alone; each finding goes to the check of the zone it is about."""
    tests = [_test_zone(bench, zone, config) for zone in ZONES]
    vented = config.safety.vented_mmhg
    deadline = config.safety.vent_deadline_s
    none_filled = not any(t.filled for t in tests)
    results = []
    for t in tests:
        zone = t.zone
        problems = []
        if not t.filled:
            cause = ("pump dead or not powered (no zone filled)" if none_filled
                     else "valve stuck open or a leak (the pump filled another zone)")
            problems.append(
                f"{zone} reached only {t.peak_mmhg:.1f} mmHg in {INFLATE_DEADLINE_S:.0f} s: {cause}"
            )
        elif t.peak_mmhg - t.held_mmhg > HOLD_MAX_DROP_MMHG:
            problems.append(f"{zone} lost {t.peak_mmhg - t.held_mmhg:.1f} mmHg in {HOLD_S:.0f} s hold (leak)")
        fed_by = [other.zone for other in tests if zone in other.rose]
        if fed_by:
            problems.append(f"{zone} rose while only {', '.join(fed_by)} was connected "
                            f"(valve stuck closed: {zone} stays on the manifold)")
        if not t.vented:
            problems.append(f"{zone} still {_fmt(t.after_vent_mmhg, 'mmHg')} {deadline:.0f} s after venting "
                            "(valve stuck closed)")
        measured = (f"{t.target_mmhg:.0f} mmHg in {t.fill_s:.1f} s, vented in {t.vent_s:.1f} s"
                    if t.filled and t.vented
                    else f"peak {t.peak_mmhg:.1f} mmHg, after vent {_fmt(t.after_vent_mmhg, 'mmHg')}")
        limit = (f">= {t.target_mmhg:.0f} mmHg within {INFLATE_DEADLINE_S:.0f} s; < {vented:.0f} mmHg "
                 f"within {deadline:.0f} s")
        results.append(CheckResult(f"zone_{zone}", not problems, measured, limit, "; ".join(problems)))
    return results


def _below(value: float | None, limit: float) -> bool:
    return value is not None and value < limit


def _check_motor(bench: TestBench, motor: str) -> CheckResult:
    hw = bench.hardware
    roller = hw.rollers[motor]
    hw.relay.energise()
    readings: dict[str, float | None] = {}
    test_speed = min(MOTOR_TEST_SPEED, roller.max_speed)
    for direction, speed in (("forward", test_speed), ("backward", -test_speed)):
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
    unreadable = [n for n, v in start.items() if v is None]
    if unreadable:
        return CheckResult("heater", False, "no temperature", f"+{HEATER_RISE_C} °C",
                           f"not tested: thermistor {', '.join(unreadable)} unreadable")
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
    hw.heater.set_duty(hw.heater.max_duty)  # full power as this unit is configured

    def risen(s: Sample) -> bool:
        temps = s.temperature_c
        if any(v is None or v >= HEATER_ABORT_C for v in temps.values()):
            return True
        return all((temps[n] or 0.0) - (start[n] or 0.0) >= HEATER_RISE_C for n in temps)

    ok, waited, s = bench.wait_until(risen, HEATER_DEADLINE_S)
    hw.heater.off()
    hw.relay.drop()
    limit = f"+{HEATER_RISE_C} °C within {HEATER_DEADLINE_S:.0f} s"
    lost = [n for n, v in s.temperature_c.items() if v is None or start.get(n) is None]
    if lost:
        return CheckResult("heater", False, "no temperature", limit,
                           f"thermistor {', '.join(lost)} lost its reading during the heater test")
    rises = {n: (s.temperature_c[n] or 0.0) - (start[n] or 0.0) for n in start}
    passed = ok and all(r >= HEATER_RISE_C for r in rises.values())
    measured = ", ".join(f"{n} {r:+.2f} °C" for n, r in rises.items()) + f" in {waited:.0f} s"
    if passed:
        msg = ""
    elif any((v or 0.0) >= HEATER_ABORT_C for v in s.temperature_c.values()):
        msg = (f"the pad reached {HEATER_ABORT_C:.0f} °C before rising {HEATER_RISE_C} °C: "
               "let it cool and test again")
    else:
        msg = (f"heater did not raise the temperature by {HEATER_RISE_C} °C within "
               f"{HEATER_DEADLINE_S:.0f} s (heater open or not powered)")
    return CheckResult("heater", passed, measured, limit, msg)


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


def run_selftest(
    config: Config,
    *,
    sim: bool,
    inject: str | None = None,
    inject_params: Mapping[str, Any] | None = None,
) -> list[CheckResult]:
    """Build the hardware (simulated or real), run every check, close everything.

    With ``sim``, ``inject`` names a plant fault injected first; ``inject_params`` narrows it
    (``zone``, ``motor`` or ``sensor``, as ``Plant.inject`` takes them).
    """
    if (inject is not None or inject_params) and not sim:
        raise ValueError("inject: plant faults can only be injected with sim=True")
    if sim:
        from device.sim import DEADMAN_HW_S, build_sim

        clock = VirtualClock()
        rig = build_sim(config, clock=clock.now, params=PlantParams(deadman_timeout_s=DEADMAN_HW_S))
        if inject:
            rig.plant.inject(inject, **dict(inject_params or {}))

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
    if inject is not None and not args.sim:
        print("massager selftest: --inject works only with --sim (faults go into the simulated plant)",
              file=sys.stderr)
        return 2
    if inject is not None and inject not in PLANT_FAULTS:
        print(f"massager selftest: --inject: unknown plant fault {inject!r}; known: {', '.join(PLANT_FAULTS)}",
              file=sys.stderr)
        return 2
    if not args.sim:
        from device.app import has_gpio

        if not has_gpio():
            print("massager selftest: no GPIO on this machine; use --sim", file=sys.stderr)
            return 2
    params = {k: v for k, v in (("zone", getattr(args, "inject_zone", None)),
                                  ("motor", getattr(args, "inject_motor", None))) if v is not None}
    if params and inject is None:
        print("massager selftest: --inject-zone / --inject-motor go with --inject FAULT", file=sys.stderr)
        return 2
    try:
        results = run_selftest(config, sim=args.sim, inject=inject, inject_params=params or None)
    except PlantFaultError as exc:
        print(f"massager selftest: --inject: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # GPIO lines or the I2C bus held by the running firmware
        print(f"massager selftest: cannot open the hardware ({exc}); "
              "stop the firmware first: sudo systemctl stop massager", file=sys.stderr)
        return 2
    passed = all(r.passed for r in results)
    if args.json:
        doc: dict[str, Any] = {"passed": passed, "checks": [asdict(r) for r in results]}
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        print(report(results))
    return 0 if passed else 1
