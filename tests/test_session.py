"""The session state machine on the simulated plant: start, pause, resume, stop, timer, fault, changes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from device.config import Config
from device.sim import SimRig
from modes.limits import ZONES
from modes.session import PAUSE_MAX_S, CommandRefused, Session, Status
from modes.signals import OFF
from tests.session_sim import Sim, builtin_library, settings_for, with_session

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority


def _vented(rig: SimRig) -> bool:
    return all(rig.plant.pressure[z] < 10.0 for z in ZONES)


def _pressing(rig: SimRig) -> bool:
    return any(rig.plant.pressure[z] > 10.0 for z in ZONES)


def test_session_start_reports_running_warm_up(config: Config) -> None:
    sim = Sim(config)
    snap = sim.session.snapshot()
    assert (snap.status, snap.phase, snap.remaining_s, snap.heat_active) == (Status.IDLE, None, None, False)
    assert set(snap.setpoints_mmhg) == set(ZONES) and not any(snap.setpoints_mmhg.values())
    sim.start(program="circulation", intensity=4, timer_min=10)
    sim.run(20.0)
    snap = sim.session.snapshot()
    assert snap.status is Status.RUNNING and snap.program == "circulation" and snap.intensity == 4
    assert snap.phase == "warm_up" and snap.timer_min == 10
    assert snap.remaining_s == pytest.approx(600.0 - 20.0, abs=0.1)
    assert all(max(sim.trace.setpoint[z]) > 0.0 for z in ZONES)  # ramped setpoints exposed
    sim.run(200.0)
    assert sim.session.snapshot().phase == "work"
    assert sim.trace.faults == []


def test_session_pause_vents_stops_and_freezes_timer_then_resume_continues(config: Config) -> None:
    sim = Sim(config)
    rig = sim.rig
    session = sim.session
    sim.start(program="recovery", intensity=5)
    sim.run(200.0, until=lambda: _pressing(rig) and rig.plant.pressure["foot"] > 60.0)
    assert rig.plant.pressure["foot"] > 60.0
    sim.command("pause")
    frozen = session.snapshot().remaining_s
    assert session.snapshot().setpoints_mmhg == dict.fromkeys(ZONES, 0.0)
    sim.run(3.0)
    assert _vented(rig), rig.plant.truth()["pressure_mmhg"]
    out = rig.plant.outputs()
    assert out["pump"] == 0.0 and out["heater"] == 0.0
    assert out["foot_rollers"] == 0.0 and out["calf_rollers"] == 0.0
    assert not any(out[f"valve_{z}"] for z in ZONES)
    sim.run(60.0)
    assert session.snapshot().remaining_s == frozen and session.status is Status.PAUSED
    sim.command("resume")
    mark = len(sim.trace.t)
    sim.run(30.0)
    snap = session.snapshot()
    assert snap.status is Status.RUNNING
    assert snap.remaining_s == pytest.approx(frozen - 30.0, abs=0.1)
    assert max(sim.trace.pressure["foot"][mark:]) > 30.0  # the waves start again
    assert sim.trace.faults == []


def test_session_left_paused_finishes_by_itself(config: Config) -> None:
    sim = Sim(config)
    rig = sim.rig
    sim.start()
    sim.run(30.0)
    sim.command("pause")
    sim.run(PAUSE_MAX_S - 1.0, record=False)
    assert sim.session.status is Status.PAUSED
    sim.run(5.0)
    assert sim.session.status is Status.IDLE
    assert rig.plant.all_off()


def test_session_stop_finishes_cleanly(config: Config) -> None:
    sim = Sim(config)
    rig = sim.rig
    session = sim.session
    sim.start(program="recovery", intensity=5, heat=True)
    sim.run(200.0, until=lambda: rig.plant.pressure["ankle"] > 40.0)
    sim.command("stop")
    assert session.status is Status.FINISHING and session.snapshot().remaining_s == 0.0
    took = sim.run_until_idle(10.0)
    assert session.status is Status.IDLE and took < 3.0
    assert _vented(rig)
    sim.run(0.1)
    assert rig.plant.all_off(), rig.plant.outputs()
    assert session.snapshot().remaining_s is None and session.snapshot().phase is None
    finishing = [i for i, s in enumerate(sim.trace.status) if s is Status.FINISHING]
    assert all(float(sim.trace.outputs[i]["heater"]) == 0.0 for i in finishing[1:])
    assert all(float(sim.trace.outputs[i]["pump"]) == 0.0 for i in finishing[1:])
    assert sim.trace.faults == []


def test_session_timer_ends_the_session(config: Config) -> None:
    sim = Sim(config, record_outputs=False)
    rig = sim.rig
    sim.start(program="relax", timer_min=5)
    took = sim.run_until_idle(400.0)
    assert 300.0 <= took <= 305.0
    assert _vented(rig)
    assert sim.session.snapshot().phase is None
    assert sim.trace.faults == []


def test_session_short_timer_keeps_every_phase(config: Config) -> None:
    sim = Sim(config, record_outputs=False)
    session = sim.session
    sim.start(program="recovery", timer_min=5)
    phases = []
    for _ in range(300):
        sim.run(1.0)
        phase = session.snapshot().phase
        if phase is not None and (not phases or phases[-1] != phase):
            phases.append(phase)
    assert phases == ["warm_up", "work", "cool_down"]


def test_session_quick_boost_ends_by_itself(config: Config) -> None:
    sim = Sim(config, record_outputs=False)
    sim.start(program="quick_boost", timer_min=15)
    assert sim.session.snapshot().remaining_s == pytest.approx(180.0)
    took = sim.run_until_idle(200.0)
    assert 180.0 <= took <= 185.0


def test_session_fault_from_any_state_turns_everything_off(config: Config) -> None:
    sim = Sim(config)
    rig, clock = sim.rig, sim.clock
    session = sim.session
    session.enter_fault(clock.now())  # from idle
    assert session.status is Status.FAULT
    session.clear_fault(clock.now())
    sim.start(heat=True)
    sim.run(40.0)
    session.enter_fault(clock.now())
    session.enter_fault(clock.now())  # the supervisor may repeat itself
    assert session.status is Status.FAULT
    assert session.step(clock.now(), rig.hardware.read_sample()) is OFF
    sim.run(3.0)
    assert rig.plant.all_off() and _vented(rig)
    assert session.snapshot().remaining_s is None and not session.snapshot().heat_active
    with pytest.raises(CommandRefused) as refused:  # the session itself refuses (not only the device)
        session.start(clock.now())
    assert refused.value.field == "action"
    session.clear_fault(clock.now())
    assert session.status is Status.IDLE
    sim.start()
    sim.run(60.0)
    assert session.status is Status.RUNNING
    for status_maker in (lambda: sim.command("pause"), lambda: sim.command("stop")):
        status_maker()
        session.enter_fault(clock.now())
        assert session.status is Status.FAULT
        session.clear_fault(clock.now())
        sim.run(1.0)  # the rollers coast to a stop: the device refuses a start while one still draws current
        sim.start()


def test_session_transitions_are_logged(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    sim = Sim(config)
    with caplog.at_level(logging.INFO, logger="modes.session"):
        sim.start()
        sim.command("pause")
        sim.command("resume")
        sim.command("stop")
        sim.run_until_idle(10.0)
    messages = [r.getMessage() for r in caplog.records]
    moves = [m for m in messages if m.startswith("session ") and "->" in m]
    assert [m.split(" (")[0] for m in moves] == [
        "session idle -> running",
        "session running -> paused",
        "session paused -> running",
        "session running -> finishing",
        "session finishing -> idle",
    ]


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("start", {"program": "tickle"}, "program"),
    ("start", {"program": 3}, "program"),
    ("start", {"intensity": 0}, "intensity"),
    ("start", {"intensity": 6}, "intensity"),
    ("start", {"intensity": "3"}, "intensity"),
    ("start", {"intensity": True}, "intensity"),
    ("start", {"timer_min": 4}, "timer_min"),
    ("start", {"timer_min": 31}, "timer_min"),
    ("start", {"timer_min": 10.5}, "timer_min"),
    ("start", {"heat": "yes"}, "heat"),
    ("start", {"heat_target_c": 34.0}, "heat_target_c"),
    ("start", {"heat_target_c": 42.5}, "heat_target_c"),
    ("start", {"heat_target_c": float("nan")}, "heat_target_c"),
    ("update", {"skip_zones": ["knee"]}, "skip_zones"),
    ("update", {"skip_zones": "calf"}, "skip_zones"),
    ("update", {"intensity": 9}, "intensity"),
    ("update", {"program": "tickle", "intensity": 3}, "program"),
    ("pause", {}, "action"),
    ("resume", {}, "action"),
    ("stop", {}, "action"),
    ("clear_fault", {}, "action"),
]


@pytest.mark.parametrize(("method", "kwargs", "field"), REFUSALS)
def test_session_refusal_names_the_field_and_changes_nothing(
    method: str, kwargs: dict[str, Any], field: str, config: Config
) -> None:
    session = Session(library=builtin_library(), settings=settings_for(config))
    before = session.snapshot()
    with pytest.raises(CommandRefused) as refused:
        getattr(session, method)(0.0, **kwargs)
    assert refused.value.field == field
    named = {"clear_fault": "reset_fault"}.get(method, method) if field == "action" else field
    assert named in refused.value.message and str(refused.value) == refused.value.message
    assert session.snapshot() == before


def test_session_refuses_illegal_transitions_while_running(config: Config) -> None:
    session = Session(library=builtin_library(), settings=settings_for(config))
    session.start(0.0)
    for call in (lambda: session.start(1.0), lambda: session.resume(1.0), lambda: session.clear_fault(1.0)):
        with pytest.raises(CommandRefused, match="while running") as refused:
            call()
        assert refused.value.field == "action"
    session.stop(2.0)
    with pytest.raises(CommandRefused, match="set is not possible while finishing"):
        session.update(2.0, intensity=3)
    assert session.status is Status.FINISHING


def test_session_settings_lower_timer_max_is_enforced(config: Config) -> None:
    session = Session(library=builtin_library(), settings=settings_for(with_session(config, timer_max_min=20)))
    with pytest.raises(CommandRefused, match="from 5 to 20") as refused:
        session.update(0.0, timer_min=25)
    assert refused.value.field == "timer_min"
    session.update(0.0, timer_min=20, intensity=5, heat=True, program="lymphatic", skip_zones=["calf"])
    snap = session.snapshot()
    assert (snap.timer_min, snap.intensity, snap.heat, snap.program, snap.skip_zones) == (
        20, 5, True, "lymphatic", ("calf",),
    )


def test_session_intensity_change_takes_effect_at_the_next_wave(config: Config) -> None:
    sim = Sim(config, record_outputs=False)
    sim.start(program="circulation", intensity=1)
    sim.run(240.0)  # into the work phase
    before = max(sim.trace.pressure["foot"][-1200:])
    sim.command("set", intensity=5)
    sim.run(60.0)
    after = max(sim.trace.pressure["foot"][-600:])
    assert after > before * 1.4
    jumps = [b - a for a, b in zip(sim.trace.pressure["foot"], sim.trace.pressure["foot"][1:], strict=False)]
    assert max(jumps) < 3.0  # filled by the controlled pump, no sudden squeeze
    assert sim.trace.faults == []


def test_session_program_change_waits_for_a_safe_point(config: Config) -> None:
    sim = Sim(config, record_outputs=False)
    rig = sim.rig
    session = sim.session
    sim.start(program="recovery", intensity=4)
    sim.run(300.0, until=lambda: rig.plant.pressure["ankle"] > 30.0)
    sim.command("set", program="sensitive")
    assert session.snapshot().program == "sensitive"
    remaining = session.snapshot().remaining_s
    sim.run(60.0)
    snap = session.snapshot()
    assert snap.phase == "warm_up"  # the new program starts gently
    assert snap.remaining_s == pytest.approx((remaining or 0.0) - 60.0, abs=0.1)  # same session timer
    assert sim.trace.faults == []


def test_session_timer_change_while_running(config: Config) -> None:
    sim = Sim(config, record_outputs=False)
    session = sim.session
    sim.start(program="relax", timer_min=15)
    sim.run(400.0)
    sim.command("set", timer_min=20)
    assert session.snapshot().remaining_s == pytest.approx(800.0, abs=0.1)
    sim.command("set", timer_min=5)  # already past 5 minutes: cool down now, then finish
    snap = session.snapshot()
    assert snap.phase == "cool_down" and snap.remaining_s is not None and 60.0 < snap.remaining_s < 120.0
    took = sim.run_until_idle(200.0)
    assert took < 120.0
    assert sim.trace.faults == []


def test_session_skipping_a_zone_vents_it_now(config: Config) -> None:
    sim = Sim(config)
    rig = sim.rig
    sim.start(program="circulation", intensity=5)
    sim.run(300.0, until=lambda: rig.plant.pressure["calf"] > 20.0)
    sim.command("set", skip_zones=["calf"])
    sim.run(2.0)
    assert rig.plant.pressure["calf"] < 10.0
    mark = len(sim.trace.t)
    sim.run(120.0)
    assert all(not out["valve_calf"] for out in sim.trace.outputs[mark:])
    assert max(sim.trace.pressure["foot"][mark:]) > 40.0  # the other zones carry on
    assert sim.trace.faults == []


def test_session_unknown_default_program_falls_back_to_the_first_builtin(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="modes.session"):
        settings = settings_for(with_session(config, default_program="gone"))
        session = Session(library=builtin_library(), settings=settings)
    assert session.snapshot().program == "relax"
    assert "default program 'gone' is not available" in caplog.text
