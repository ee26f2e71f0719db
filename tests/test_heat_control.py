"""Heat control on the simulated plant: reaches and holds the target, never outlives the session."""

from __future__ import annotations

import pytest

from device.config import Config
from modes.heat import HeatControl
from modes.session import Status
from tests.session_sim import Sim

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority


@pytest.mark.parametrize(("target_c", "timer_min"), [(40.0, None), (36.0, 10)])
def test_heat_control_reaches_and_holds_target_then_off_after_session(
    target_c: float, timer_min: int | None, config: Config
) -> None:
    """No timer given: the default (15 minutes); the panel's shortest, 10 minutes, for the other target."""
    sim = Sim(config)
    rig = sim.rig
    timer = {} if timer_min is None else {"timer_min": timer_min}
    sim.start(program="relax", intensity=3, heat=True, heat_target_c=target_c, **timer)
    assert sim.session.snapshot().heat_active
    timer_s = (timer_min or config.session.timer_default_min) * 60.0
    took = sim.run_until_idle(timer_s + 30.0)
    assert timer_s <= took <= timer_s + 5.0, took
    trace = sim.trace
    assert trace.faults == [], f"the safety supervisor tripped: {trace.faults[0]}"
    running = [i for i, s in enumerate(trace.status) if s is Status.RUNNING]
    reached = next(i for i in running if trace.sensor_c[i] >= target_c - 1.0)
    assert trace.t[reached] < 300.0, f"took {trace.t[reached]:.0f} s to come within 1 °C of {target_c}"
    held = [trace.sensor_c[i] for i in running if i >= reached]
    assert min(held) >= target_c - 1.0 and max(held) <= target_c + 1.0, (min(held), max(held))
    steady = [trace.sensor_c[i] for i in running if trace.t[i] >= 480.0]
    assert max(abs(c - target_c) for c in steady) < 0.3, "steady state within a few tenths"
    # heat never outlives the session: off in the plant from the moment the session stops running
    after = [i for i, s in enumerate(trace.status) if s is not Status.RUNNING and i > reached]
    assert after and all(float(trace.outputs[i]["heater"]) == 0.0 for i in after[1:])
    cooled_from = max(rig.plant.sensor_c.values())
    sim.run(120.0)
    assert rig.plant.outputs()["heater"] == 0.0 and not rig.plant.outputs()["relay"]
    assert max(rig.plant.sensor_c.values()) < cooled_from - 1.0


def test_heat_control_off_in_pause_and_when_switched_off(config: Config) -> None:
    sim = Sim(config)
    rig = sim.rig
    session = sim.session
    sim.start(program="circulation", heat=True)
    sim.run(30.0)
    assert float(rig.plant.outputs()["heater"]) > 0.0
    sim.command("pause")
    assert not session.snapshot().heat_active
    sim.run(1.0)
    assert rig.plant.outputs()["heater"] == 0.0
    sim.command("resume")
    sim.run(1.0)
    assert float(rig.plant.outputs()["heater"]) > 0.0
    sim.command("set", heat=False)
    sim.run(0.1)
    assert rig.plant.outputs()["heater"] == 0.0
    assert session.snapshot().heat is False and not session.snapshot().heat_active
    assert sim.trace.faults == []


def test_heat_control_without_readings_is_off() -> None:
    heat = HeatControl(max_duty=0.8)
    assert heat.step(0.0, {"pad_1": 30.0, "pad_2": None}, 40.0) == 0.8  # far below: full allowed power
    assert heat.step(0.05, {"pad_1": None, "pad_2": None}, 40.0) == 0.0
    assert heat.step(0.10, {"pad_1": 45.0, "pad_2": 39.0}, 40.0) == 0.0  # the hottest sensor rules
    with pytest.raises(ValueError, match="heater_max_duty"):
        HeatControl(max_duty=0.0)
