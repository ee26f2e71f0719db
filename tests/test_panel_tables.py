"""The panel's tables: status LED colours and fault blink codes, button cycles; the dashboard's bar."""

from __future__ import annotations

import pytest

from device.dashboard import FAULT_KEYS, pressure_bar
from device.panel import (
    BLUE,
    DARK,
    FAULT_BLINK_S,
    FAULT_BLINKS,
    FAULT_GAP_S,
    GREEN,
    IDLE_GREEN,
    RED,
    STANDBY_GREEN,
    fault_blinks,
    next_intensity,
    next_program,
    next_timer,
    status_colour,
    timer_choices,
)
from device.safety import FaultCode
from drivers.sim.plant import PLANT_FAULTS


def _red_blinks(code: str, start: float, seconds: float, step: float = 0.05) -> int:
    """Count off->red transitions of the status LED over a window, sampled like the panel's frames."""
    blinks = 0
    was_red = status_colour("fault", code, start - step) == RED
    for i in range(round(seconds / step)):
        red = status_colour("fault", code, start + i * step) == RED
        blinks += red and not was_red
        was_red = red
    return blinks


def test_panel_status_colours_steady_states() -> None:
    for t in (0.0, 0.3, 0.7, 12.34):
        assert status_colour("idle", None, t) == IDLE_GREEN
        assert status_colour("idle", None, t, standby=True) == STANDBY_GREEN
        assert status_colour("running", None, t) == GREEN
        assert status_colour("finishing", None, t) == BLUE
    assert sum(IDLE_GREEN) < sum(GREEN) and sum(STANDBY_GREEN) < sum(IDLE_GREEN)


def test_panel_paused_blinks_green() -> None:
    seen = {status_colour("paused", None, i * 0.05) for i in range(40)}
    assert seen == {GREEN, DARK}
    assert status_colour("paused", None, 0.1) == GREEN
    assert status_colour("paused", None, 0.6) == DARK


def test_panel_every_fault_code_has_a_blink_count() -> None:
    assert set(FAULT_BLINKS) == {str(code) for code in FaultCode}
    assert fault_blinks("SOMETHING_NEW") == max(FAULT_BLINKS.values())
    assert fault_blinks(None) == max(FAULT_BLINKS.values())


@pytest.mark.parametrize("code", [str(c) for c in FaultCode])
def test_panel_fault_blinks_red_its_class_count_then_pauses(code: str) -> None:
    count = fault_blinks(code)
    period = 2 * FAULT_BLINK_S * count + FAULT_GAP_S
    assert _red_blinks(code, 0.0, period) == count
    assert _red_blinks(code, 10 * period, period) == count
    colours = {status_colour("fault", code, i * 0.05) for i in range(round(period / 0.05))}
    assert colours == {RED, DARK}
    # the gap at the end of each group is dark for its whole length
    gap_start = 2 * FAULT_BLINK_S * count
    assert all(status_colour("fault", code, gap_start + 0.01 + i * 0.1) == DARK
               for i in range(int(FAULT_GAP_S / 0.1) - 1))


def test_panel_fault_classes_are_distinguishable() -> None:
    heat = fault_blinks("OVER_TEMPERATURE")
    assert heat == fault_blinks("HEATER_RUNAWAY") == fault_blinks("HEATER_NOT_HEATING")
    air = fault_blinks("OVER_PRESSURE")
    assert air == fault_blinks("VALVE_STUCK") == fault_blinks("PUMP_OVERRUN")
    classes = {heat, fault_blinks("TEMP_SENSOR_FAULT"), air, fault_blinks("MOTOR_STALL"),
               fault_blinks("SENSOR_BUS_FAULT"), fault_blinks("CONTROL_LOOP_STALL")}
    assert len(classes) == 6


def test_panel_fault_overrides_any_status() -> None:
    assert status_colour("idle", "MOTOR_STALL", 0.1) == RED
    assert status_colour("fault", "MOTOR_STALL", FAULT_BLINK_S + 0.1) == DARK


def test_panel_timer_cycle_default_and_clamped() -> None:
    assert timer_choices(30) == (10, 15, 20, 30)
    assert [next_timer(m, 30) for m in (10, 15, 20, 30)] == [15, 20, 30, 10]
    assert next_timer(5, 30) == 10 and next_timer(12, 30) == 15 and next_timer(25, 30) == 30
    assert timer_choices(25) == (10, 15, 20, 25)
    assert [next_timer(m, 25) for m in (10, 15, 20, 25)] == [15, 20, 25, 10]
    assert timer_choices(12) == (10, 12)
    assert timer_choices(5) == (5,) and next_timer(5, 5) == 5


def test_panel_intensity_cycles_1_to_5() -> None:
    assert [next_intensity(i) for i in (1, 2, 3, 4, 5)] == [2, 3, 4, 5, 1]


def test_panel_program_cycle_wraps_and_recovers() -> None:
    names = ["relax", "circulation", "deep"]
    assert [next_program(names, n) for n in names] == ["circulation", "deep", "relax"]
    assert next_program(names, "deleted_user_program") == "relax"
    assert next_program([], "relax") == "relax"


def test_dashboard_pressure_bar_scales_to_trip_and_colours_by_cap() -> None:
    empty = pressure_bar(0.0, 120.0, 135.0, width=10)
    assert empty.plain.startswith("░" * 10)
    half = pressure_bar(67.5, 120.0, 135.0, width=10)
    assert half.plain.startswith("█" * 5 + "░" * 5) and "67.5" in half.plain
    assert half.style == "green"
    assert pressure_bar(125.0, 120.0, 135.0, width=10).style == "yellow"
    over = pressure_bar(200.0, 120.0, 135.0, width=10)
    assert over.plain.startswith("█" * 10) and over.style == "red"
    assert "---" in pressure_bar(None, 120.0, 135.0, width=10).plain


def test_dashboard_fault_keys_cover_every_plant_fault() -> None:
    assert sorted(FAULT_KEYS.values()) == sorted(PLANT_FAULTS)
    assert set(FAULT_KEYS) == {str(i) for i in range(1, 10)}
