"""Every built-in program on the simulated plant in virtual time, judged from the plant's own record.

These runs are also the false-trip check of docs/safety.md: every program at both ends of the intensity
scale (and 2, 3 and 4 on one program each), heat on, runs to its end without a fault on a healthy unit at
a corner of the plant's documented ranges.
"""

from __future__ import annotations

import pytest

from device.config import Config
from modes.limits import ZONES
from modes.rollers import RAMP_PER_S, REST_S
from modes.session import Status
from tests.session_sim import (
    DT,
    PLANT_CORNERS,
    Sim,
    Trace,
    builtin_library,
    onsets,
    pump_runs_s,
    with_caps,
)

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

BUILTIN = builtin_library().names()


def _assert_waves_go_up_the_leg(trace: Trace, indices: range, at_least: int) -> None:
    bursts = onsets(trace, indices)
    multi = [b for b in bursts if len(b) > 1]
    assert len(multi) >= at_least, f"too few multi-zone waves to judge: {bursts[:5]}"
    for burst in bursts:
        order = [ZONES.index(z) for z in burst]
        assert order == sorted(set(order)), f"wave out of order (must go foot -> ankle -> calf): {burst}"


def _assert_rollers_reverse_through_a_stop(trace: Trace) -> None:
    for motor in ("foot_rollers", "calf_rollers"):
        speeds = [float(o[motor]) for o in trace.outputs]
        last_nonzero = 0.0
        stopped_since: float | None = None
        for i in range(1, len(speeds)):
            before, now = speeds[i - 1], speeds[i]
            assert abs(now - before) <= RAMP_PER_S * DT + 1e-6, f"{motor} jumped {before} -> {now}"
            if now == 0.0:
                if stopped_since is None:
                    stopped_since = trace.t[i]
            else:
                if last_nonzero * now < 0:
                    assert stopped_since is not None and trace.t[i] - stopped_since >= REST_S - 1e-6
                last_nonzero, stopped_since = now, None


def _assert_session_shape(sim: Sim, name: str, begin: float, expected_s: float) -> None:
    """The shape of a whole session: waves go up the leg, gentler first minute and end, smooth rollers."""
    trace = sim.trace
    caps = sim.config.safety.pressure_cap_mmhg
    program = builtin_library().get(name)
    _assert_waves_go_up_the_leg(trace, range(len(trace.t)), at_least=round(expected_s / 60.0))
    # the first minute is gentler than the middle of the session
    first = trace.peak_share(caps, trace.window(begin, begin + 60.0))
    middle = trace.peak_share(caps, trace.window(begin + expected_s * 0.4, begin + expected_s * 0.6))
    assert first < middle * 0.8, f"first minute {first:.2f} of the cap, middle {middle:.2f}"
    # the end of the cool-down is lighter than the middle (a wave under way finishes first)
    cool_half = program.phase_s("cool_down") / 2
    ending = trace.peak_share(caps, trace.window(begin + expected_s - cool_half, begin + expected_s + 30.0))
    assert ending < middle * 0.8, f"end of the cool-down {ending:.2f} of the cap, middle {middle:.2f}"
    _assert_rollers_reverse_through_a_stop(trace)
    assert max(pump_runs_s(trace)) < 8.0


# The middle of the scale, each on one program: the default intensity on the default program, the firm
# program near its top, the percussion low.
MIDDLE = {"relax": 3, "recovery": 4, "percussion": 2}


def _intensities(name: str) -> tuple[int, ...]:
    """Both ends of the scale for every program, and 2, 3 and 4 on one program each."""
    return (1, MIDDLE[name], 5) if name in MIDDLE else (1, 5)


def test_runner_intensities_cover_the_whole_scale() -> None:
    """Between them the programs run every intensity (intensity 5 for 10 minutes, the others for 5)."""
    assert {i for name in BUILTIN for i in _intensities(name)} == {1, 2, 3, 4, 5}


# One healthy unit per program from the corners of the documented ranges, in turn (each corner on one or two
# programs): the extremes of a healthy unit must not trip (the campaign draws the units between).
def _corner(name: str) -> str:
    return sorted(PLANT_CORNERS)[BUILTIN.index(name) % len(PLANT_CORNERS)]


@pytest.mark.parametrize("name", BUILTIN)
def test_runner_builtin_program_runs_to_its_end_at_every_intensity(name: str, config: Config) -> None:
    """Each program with heat on at its highest, on a unit at a corner of the documented ranges: 10 minutes at
    intensity 5 (with the whole session's shape), 5 minutes at 1 (and at one between on three programs). Each
    ends by itself on time without a fault, the pad warms, caps hold, everything ends vented and off, and
    intensity 5 presses harder than 1. (The default 15 minutes run in test_heat_control; 30 in the campaign.)"""
    corner = _corner(name)
    heat_target_c = config.safety.heat_target_max_c
    caps = config.safety.pressure_cap_mmhg
    program = builtin_library().get(name)
    peaks: dict[int, dict[str, float]] = {}
    work_s: float | None = None  # the work phase of the first 5-minute session: the stretch intensities compare
    for intensity in _intensities(name):
        whole = intensity == 5  # the 10-minute session, judged for its shape too
        timer_s = 600.0 if whole else 300.0
        expected_s = timer_s if program.fills_timer else program.pass_s
        where = f"{name} at intensity {intensity} on {corner}"
        sim = Sim(config, record_outputs=whole, plant_params=PLANT_CORNERS[corner])  # a unit for each run
        sim.start(program=name, intensity=intensity, heat=True, heat_target_c=heat_target_c,
                  timer_min=round(timer_s / 60))
        begin = sim.clock.now()
        phase_at: dict[str, float] = {}  # when each phase began (a short session shrinks warm-up and cool-down)
        for phase in ("work", "cool_down"):
            sim.run(expected_s, until=lambda sim=sim, phase=phase: sim.session.snapshot().phase == phase)
            assert sim.session.snapshot().phase == phase, f"{where}: no {phase} phase"
            phase_at[phase] = sim.clock.now()
        sim.run_until_idle(expected_s + 30.0)
        took = sim.clock.now() - begin
        trace = sim.trace
        if work_s is None:
            work_s = phase_at["cool_down"] - phase_at["work"]
            assert work_s >= 60.0, f"{where}: too little work to judge ({work_s:.0f} s)"
        assert trace.faults == [], f"{where}: the safety supervisor tripped: {trace.faults[0]}"
        assert sim.session.status is Status.IDLE, where
        assert expected_s <= took <= expected_s + 5.0, f"{where}: took {took:.1f} s, not {expected_s:.0f} s"
        assert all(sim.plant.pressure[z] < 10.0 for z in ZONES), (where, sim.plant.truth()["pressure_mmhg"])
        sim.tick()
        assert sim.plant.all_off(), (where, sim.plant.outputs())
        hottest = max(trace.sensor_c)
        assert hottest < heat_target_c + config.safety.over_target_margin_c, (where, hottest)
        assert hottest > trace.sensor_c[0] + 5.0, f"{where}: the pad never warmed ({hottest:.1f} °C)"
        for zone in ZONES:
            peak = max(trace.pressure[zone])
            assert peak <= caps[zone], f"{where}: {zone} reached {peak:.1f} mmHg, cap {caps[zone]}"
        window = trace.window(phase_at["work"], phase_at["work"] + work_s)
        peaks[intensity] = {z: max(trace.pressure[z][i] for i in window) for z in ZONES}
        if whole:
            _assert_session_shape(sim, name, begin, expected_s)
        sim.close()
    for zone in ZONES:
        low, high = peaks[1][zone], peaks[5][zone]
        assert high > low * 1.4 > 0.0, f"{zone}: intensity 1 pressed {low:.1f} mmHg, intensity 5 {high:.1f}"


def test_runner_lower_configured_caps_are_never_passed(config: Config) -> None:
    """A user with sensitive calves sets a low calf cap: intensity 5 of a firm program stays below it."""
    caps = {"foot": 90.0, "ankle": 50.0, "calf": 25.0}
    sim = Sim(with_caps(config, caps))  # the cap in the unit's config, as its owner sets it
    sim.start(program="recovery", intensity=5)
    sim.run(300.0)
    assert sim.trace.faults == []
    for zone in ZONES:
        peak = max(sim.trace.pressure[zone])
        assert peak <= caps[zone], f"{zone} reached {peak:.1f} mmHg, configured cap {caps[zone]}"
        assert peak > caps[zone] * 0.6, f"{zone} barely pressed ({peak:.1f} mmHg)"
