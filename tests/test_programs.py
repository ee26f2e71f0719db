"""Programs as data: validation, the built-ins, user program files, the CLI, and random programs."""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from device.cli import main as cli_main
from device.config import Config
from device.programs_cmd import programs_main
from modes.library import BUILTIN_ORDER, UnknownProgram, load_library
from modes.limits import ZONES
from modes.program import Program, ProgramError, parse_program
from modes.session import Status
from tests.profiles import examples
from tests.session_sim import Sim, builtin_library, with_caps

pytestmark = pytest.mark.virtual_time  # no broker, browser or wall clock: scripts/test runs it at low priority

GOOD: dict[str, Any] = {
    "name": "evening",
    "description": "Light evening waves.",
    "warm_up": [{"duration_s": 30, "wave": {"zones": ["foot", "ankle"], "pressure": 0.3, "hold_s": 2}}],
    "work": [
        {
            "duration_s": 60,
            "foot_rollers": {"speed": 0.5, "up_s": 5, "down_s": 5},
            "wave": {"zones": ["foot", "ankle", "calf"], "pressure": {"foot": 0.6, "ankle": 0.5, "calf": 0.4},
                     "hold_s": 3, "rise_mmhg_s": {"calf": 3}},
        }
    ],
    "cool_down": [{"duration_s": 30, "wave": {"zones": ["foot"], "pressure": 0.2}}],
}


def _changed(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one value replaced; ``path`` is dotted (list indices as numbers)."""
    data = copy.deepcopy(GOOD)
    node: Any = data
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return data


def test_programs_good_program_validates() -> None:
    program = parse_program(GOOD, "test")
    assert program.pass_s == 120.0 and program.fills_timer
    plan = program.plan()
    wave = plan.phases["work"][0].wave
    assert wave is not None and wave.fraction == {"foot": 0.6, "ankle": 0.5, "calf": 0.4}
    assert wave.rise_mmhg_s == {"foot": None, "ankle": None, "calf": 3}


BAD: list[tuple[dict[str, Any], str]] = [
    (_changed("work.0.wave.pressure", {"foot": 1.3, "ankle": 0.5, "calf": 0.4}),
     "work.0.wave: pressure.foot = 1.3 would exceed the foot cap"),
    (_changed("warm_up.0.wave.pressure", 1.01), "would exceed the foot cap"),
    (_changed("cool_down.0.wave.zones", ["knee"]),
     "cool_down.0.wave.zones.0: Input should be 'foot', 'ankle' or 'calf'"),
    (_changed("work.0.wave.pressure", {"foot": 0.6, "ankle": 0.5, "knee": 0.4}),
     "work.0.wave: pressure: 'knee' is not a zone (one of foot, ankle, calf)"),
    (_changed("warm_up", []), "warm_up: the phase has no steps (a phase cannot be zero-length)"),
    (_changed("cool_down.0.duration_s", 0), "cool_down.0.duration_s: Input should be greater than 0"),
    (_changed("warm_up.0.wave.zones", ["ankle", "foot"]), "waves run toward the heart"),
    (_changed("warm_up.0.wave.zones", ["foot", "foot"]), "a zone may appear only once"),
    (_changed("work.0.wave.pressure", {"foot": 0.6, "ankle": 0.5}), "pressure has no value for zone 'calf'"),
    (_changed("warm_up.0.wave.pressure", {"foot": 0.3, "ankle": 0.3, "calf": 0.3}),
     "pressure names calf, which this wave does not inflate"),
    (_changed("warm_up.0.wave.hold_s", 2.0) | {"warm_up": [{"duration_s": 30, "wave": {
        "zones": ["foot"], "pressure": 0.3, "hold_s": 3, "pulse": "short"}}]}, "short pulses hold at most"),
    (_changed("warm_up.0.wave.pressure", 0.9), "a program starts gently"),
    (_changed("cool_down", [{"duration_s": 30, "wave": {"zones": ["foot"], "pressure": 0.2}},
                            {"duration_s": 30, "wave": {"zones": ["foot"], "pressure": 0.4}}]),
     "the cool-down gets lighter step by step"),
    (_changed("work.0.wave.presure", 0.5), "work.0.wave.presure: unknown key"),
    (_changed("work.0.foot_rollers.down_s", 0.5), "must run each way at least"),
    (_changed("work.0.foot_rollers.speed", 1.5),
     "work.0.foot_rollers.speed: Input should be less than or equal to 1"),
    (_changed("work.0.wave.rise_mmhg_s", {"calf": 0.2}), "rise_mmhg_s = 0.2: must be between 1 and 200"),
    (_changed("fills_timer", False) | {"work": [dict(GOOD["work"][0], duration_s=1800)]}, "at most 30 min"),
    (_changed("name", "Bad Name"), "name: String should match pattern"),
]


@pytest.mark.parametrize(("data", "expected"), BAD)
def test_programs_invalid_program_is_rejected_naming_the_field(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProgramError) as refused:
        parse_program(data, "my.toml")
    assert str(refused.value).startswith("my.toml: ")
    assert expected in str(refused.value)


def test_programs_builtins_are_valid_and_complete() -> None:
    library = builtin_library()
    assert library.names()[: len(BUILTIN_ORDER)] == list(BUILTIN_ORDER)
    for name in BUILTIN_ORDER:
        program = library.get(name)
        assert library.is_builtin(name) and program.description and program.suits
        warm, work, cool = program.steps("warm_up"), program.steps("work"), program.steps("cool_down")
        assert max(s.peak for s in warm) < max(s.peak for s in work), f"{name}: warm-up not gentler"
        assert cool[-1].peak < max(s.peak for s in work), f"{name}: does not end lighter"
        waves = [s.wave for s in (*warm, *work, *cool) if s.wave is not None]
        assert any(w.zones == ZONES for w in waves), f"{name}: no full foot -> ankle -> calf wave"
    assert library.get("quick_boost").pass_s == 180.0 and not library.get("quick_boost").fills_timer
    lymphatic = library.get("lymphatic")
    assert max(s.wave.fraction("calf") or 0 for s in lymphatic.work if s.wave) <= 0.3  # calf capped low
    sensitive = library.get("sensitive")
    assert all(s.wave is None or (s.wave.rise("calf") or 99) <= 2 for s in sensitive.work)  # slow calf
    percussion = library.get("percussion")
    assert any(s.wave is not None and s.wave.pulse == "short" for s in percussion.work)
    with pytest.raises(UnknownProgram, match="unknown program 'tickle'; known: relax"):
        library.get("tickle")


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


USER_TOML = """
description = "My calves, slowly."
[[warm_up]]
duration_s = 20
wave = { zones = ["calf"], pressure = 0.2, rise_mmhg_s = 2 }
[[work]]
duration_s = 40
calf_rollers = { speed = 0.4, up_s = 4, down_s = 2 }
wave = { zones = ["ankle", "calf"], pressure = 0.4, hold_s = 3 }
[[cool_down]]
duration_s = 20
wave = { zones = ["calf"], pressure = 0.15 }
"""


def test_programs_user_directory_loads_valid_and_reports_invalid(tmp_path: Path) -> None:
    _write(tmp_path, "slow_calves.toml", USER_TOML)
    _write(tmp_path, "evening.json", json.dumps(GOOD))
    _write(tmp_path, "too_hard.toml", USER_TOML.replace("pressure = 0.4", "pressure = 1.5"))
    _write(tmp_path, "broken.toml", "description = \n")
    _write(tmp_path, "relax.toml", USER_TOML)  # the name comes from the file: clashes with a built-in
    _write(tmp_path, "list.json", "[1, 2]")
    _write(tmp_path, "notes.txt", "not a program")
    library, problems = load_library(tmp_path)
    assert library.user.keys() == {"slow_calves", "evening"}
    assert library.names()[-2:] == ["evening", "slow_calves"]
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert f"{tmp_path / 'too_hard.toml'}: work.0.wave: pressure = 1.5 would exceed the ankle cap" in text
    assert f"{tmp_path / 'broken.toml'}: bad TOML" in text
    assert "relax.toml: name: 'relax' is a built-in program" in text
    assert "list.json: a program file must hold one table/object" in text
    assert "too_hard" not in library and library.get("relax") is library.builtin["relax"]


def test_programs_missing_user_directory_means_builtins_only(tmp_path: Path) -> None:
    for folder in (None, tmp_path / "absent"):
        library, problems = load_library(folder)
        assert library.names() == list(BUILTIN_ORDER) and problems == []
    a_file = _write(tmp_path, "file", "")
    library, problems = load_library(a_file)
    assert problems == [f"{a_file}: programs_dir is not a directory"]


def test_programs_user_program_runs_in_a_session(tmp_path: Path, config: Config) -> None:
    _write(tmp_path, "slow_calves.toml", USER_TOML)
    _, problems = load_library(tmp_path)
    assert problems == []
    sim = Sim(config.model_copy(update={"programs_dir": tmp_path}))  # the unit loads it as it would
    try:
        assert sim.unit.app.library.get("slow_calves") is not None
        sim.start(program="slow_calves", intensity=5)
        sim.run(60.0)
        assert sim.trace.faults == []
        assert max(sim.trace.pressure["calf"]) > 10.0 and max(sim.trace.pressure["foot"]) < 1.0
    finally:
        sim.close()


def test_programs_command_lists_builtin_and_user_programs(
    tmp_path: Path, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "programs"
    folder.mkdir()
    _write(folder, "slow_calves.toml", USER_TOML)
    config = config.model_copy(update={"programs_dir": folder})
    assert programs_main(argparse.Namespace(json=True), config) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in listing["programs"]}
    assert list(by_name)[: len(BUILTIN_ORDER)] == list(BUILTIN_ORDER)
    assert by_name["slow_calves"]["source"] == "user" and by_name["relax"]["source"] == "built-in"
    assert by_name["quick_boost"]["duration_min"] == 3.0 and by_name["relax"]["duration_min"] == 15
    assert set(by_name["relax"]["phases"]) == {"warm_up", "work", "cool_down"}
    assert by_name["relax"]["phases"]["work"]["repeats"] is True
    assert listing["problems"] == []
    assert programs_main(argparse.Namespace(json=False), config) == 0
    text = capsys.readouterr().out
    assert "quick_boost (built-in) - 3 min (ends by itself)" in text
    assert "slow_calves (user)" in text and "warm-up" in text and "cool-down" in text


def test_programs_command_reports_a_bad_user_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "programs"
    folder.mkdir()
    _write(folder, "too_hard.toml", USER_TOML.replace("pressure = 0.4", "pressure = 1.5"))
    config_file = _write(
        tmp_path, "massager.toml", f'state_dir = "{tmp_path / "state"}"\nprograms_dir = "{folder}"\n'
    )
    assert cli_main(["programs", "--config", str(config_file)]) == 1
    captured = capsys.readouterr()
    assert "relax (built-in)" in captured.out
    assert "too_hard.toml: work.0.wave" in captured.err and "would exceed the ankle cap" in captured.err


# -- random programs: valid ones stay within the caps when run, invalid ones are refused ---------

ZONE_ORDERS = [["foot"], ["ankle"], ["calf"], ["foot", "ankle"], ["ankle", "calf"], ["foot", "calf"], [*ZONES]]
rollers = st.one_of(
    st.none(),
    st.builds(
        lambda speed, up, down: {"speed": speed, "up_s": up, "down_s": down},
        st.floats(0.1, 1.0), st.floats(1.0, 6.0), st.one_of(st.just(0.0), st.floats(1.0, 6.0)),
    ),
)


@st.composite
def wave_with_peak(draw: st.DrawFn, peak: float) -> dict[str, Any]:
    """A valid wave pressing to at most ``peak`` of the caps."""
    zones = draw(st.sampled_from(ZONE_ORDERS))
    low = min(0.05, peak)
    pressure: Any = (
        draw(st.floats(low, peak))
        if draw(st.booleans())
        else {z: draw(st.floats(low, peak)) for z in zones}
    )
    wave: dict[str, Any] = {"zones": zones, "pressure": pressure, "pause_s": draw(st.floats(1.5, 4.0))}
    if draw(st.booleans()):
        wave |= {"pulse": "short", "hold_s": draw(st.floats(0.0, 1.0))}
    else:
        wave |= {"hold_s": draw(st.floats(0.0, 5.0))}
        wave["rise_mmhg_s"] = draw(st.one_of(st.none(), st.floats(1.0, 60.0)))
    return wave


@st.composite
def step_with_peak(draw: st.DrawFn, peak: float) -> dict[str, Any]:
    """A valid step (rollers and maybe a wave) pressing to at most ``peak``."""
    step: dict[str, Any] = {"duration_s": draw(st.floats(1.0, 15.0))}
    for motor in ("foot_rollers", "calf_rollers"):
        motion = draw(rollers)
        if motion is not None:
            step[motor] = motion
    if draw(st.integers(0, 4)) > 0:
        step["wave"] = draw(wave_with_peak(peak))
    return step


BREAKERS: list[tuple[str, Any]] = [
    ("work.0.wave.pressure", 1.2),  # past the cap
    ("work.0.wave.zones", ["knee"]),  # unknown zone
    ("work.0.wave.zones", ["calf", "foot"]),  # away from the heart
    ("warm_up", []),  # zero-length phase
    ("cool_down.0.duration_s", 0.0),  # zero-length step
    ("work.0.foot_rollers", {"speed": 0.5, "up_s": 0.2, "down_s": 0.2}),  # reversing too fast
    ("warm_up.0.wave", {"zones": ["foot"], "pressure": 1.0}),  # harder than the work phase
    ("work.0.wave.hold_s", 99.0),
]


@st.composite
def random_programs(draw: st.DrawFn) -> dict[str, Any]:
    """Programs that are mostly valid, with one random breaking change in about a third of them."""
    work = draw(st.lists(step_with_peak(draw(st.floats(0.3, 1.0))), min_size=1, max_size=3))
    work_peak = max(
        (max(w["pressure"].values()) if isinstance(w["pressure"], dict) else w["pressure"])
        for s in work if (w := s.get("wave"))
    ) if any("wave" in s for s in work) else 0.05
    warm = draw(st.lists(step_with_peak(work_peak * draw(st.floats(0.3, 1.0))), min_size=1, max_size=2))
    cool = [draw(step_with_peak(work_peak * 0.6)), draw(step_with_peak(work_peak * 0.3))]
    data: dict[str, Any] = {
        "name": "random",
        "description": "A random program.",
        "fills_timer": draw(st.booleans()),
        "warm_up": warm,
        "work": work,
        "cool_down": cool,
    }
    if draw(st.integers(0, 2)) == 0:
        path, value = draw(st.sampled_from(BREAKERS))
        node: Any = data
        *parents, leaf = path.split(".")
        for part in parents:  # a missing wave is created so the breaking value lands somewhere
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {"zones": ["foot"]})
        node[leaf] = value
    return data


caps = st.fixed_dictionaries(
    {"foot": st.floats(15.0, 120.0), "ankle": st.floats(15.0, 80.0), "calf": st.floats(15.0, 60.0)}
)


@settings(max_examples=examples(50, 1_000), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=random_programs(), zone_caps=caps, intensity=st.integers(1, 5))
def test_programs_random_program_is_refused_or_stays_within_caps(
    data: dict[str, Any], zone_caps: dict[str, float], intensity: int, config: Config
) -> None:
    try:
        program = parse_program(data, "random.toml")
    except ProgramError as exc:
        message = str(exc)
        note(message)
        event("refused")
        assert message.startswith("random.toml: ") and len(message) > len("random.toml: ")
        return
    assert isinstance(program, Program)
    event("valid: run on the plant")
    library, _ = load_library(None)
    library.user["random"] = program
    sim = Sim(with_caps(config, zone_caps), library=library, record_outputs=False)  # caps as configured
    rig = sim.rig
    try:
        sim.start(program="random", intensity=intensity, timer_min=5)
        sim.run(45.0)
        if sim.session.status in (Status.RUNNING, Status.PAUSED):
            sim.command("stop")
        sim.run_until_idle(10.0)
        assert sim.trace.faults == [], f"the safety supervisor tripped: {sim.trace.faults[0]}"
        for zone in ZONES:
            peak = max(sim.trace.pressure[zone])
            assert peak <= zone_caps[zone], f"{zone} reached {peak:.1f} mmHg, cap {zone_caps[zone]:.1f}"
        assert sim.session.status is Status.IDLE
        assert all(rig.plant.pressure[z] < 10.0 for z in ZONES)
    finally:
        sim.close()


def test_programs_examples_in_the_docs_are_valid(tmp_path: Path) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "programs.md").read_text(encoding="utf-8")
    blocks = {lang: text for lang, text in re.findall(r"```(toml|json)\n(.*?)```", docs, flags=re.S)}
    assert set(blocks) == {"toml", "json"}
    _write(tmp_path, "evening_calves.toml", blocks["toml"])
    _write(tmp_path, "evening_calves_json.json", blocks["json"])
    library, problems = load_library(tmp_path)
    assert problems == []
    assert library.get("evening_calves").pass_s == library.get("evening_calves_json").pass_s == 300.0


def test_program_wave_pressing_a_zone_too_long_is_refused() -> None:
    from modes.program import Wave

    with pytest.raises(ValueError, match=r"stay pressed about .* hold_s = 35"):
        Wave(zones=("foot", "ankle"), pressure=0.5, hold_s=35.0, rise_mmhg_s=5.0)
    Wave(zones=("foot", "ankle"), pressure=0.5, hold_s=10.0, rise_mmhg_s=5.0)  # 12 + 10 + 8 s: fine
