"""No false trips: every built-in program at every intensity, heat on, runs to its end on a healthy plant."""

from __future__ import annotations

import pytest

from device.config import Config
from modes.library import BUILTIN_ORDER
from modes.session import Status
from tests.test_fault_matrix import DT, Unit


def run_to_the_end(unit: Unit, limit_s: float) -> float:
    """Run a started session until it is idle again; returns the plant's hottest reading."""
    hottest = 0.0
    for _ in range(round(limit_s / DT)):
        unit.tick()
        assert unit.supervisor.latched is None, unit.supervisor.latched
        hottest = max(hottest, *unit.plant.sensor_c.values())
        if unit.session.status is Status.IDLE:
            return hottest
    raise AssertionError(f"the session did not end within {limit_s} s")


@pytest.mark.parametrize("intensity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("program", BUILTIN_ORDER)
def test_safety_programs_short_session_never_trips(config: Config, program: str, intensity: int) -> None:
    unit = Unit.build(config, intensity, timer_min=5)
    unit.command("start", program=program, heat=True)
    run_to_the_end(unit, 5 * 60 + 30)
    assert unit.faults == [] and unit.plant.all_off()


@pytest.mark.parametrize("program", BUILTIN_ORDER)
def test_safety_programs_default_session_at_full_intensity_never_trips(config: Config, program: str) -> None:
    unit = Unit.build(config, 5, timer_min=config.session.timer_default_min)
    unit.command("start", program=program, heat=True)
    hottest = run_to_the_end(unit, config.session.timer_default_min * 60 + 30)
    assert unit.faults == [] and unit.plant.all_off()
    assert hottest < config.safety.heat_target_max_c + config.safety.over_target_margin_c
