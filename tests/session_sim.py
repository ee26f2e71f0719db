"""Helpers for the program, session and control tests: the production loop (device/harness.py) with a trace.

``Sim`` is a thin recorder around ``SimUnit``: the real App wiring over mock pins, the fake bus and the
simulated plant in virtual time. It records the plant's truth after every pass; it runs no logic of
its own. Commands go through the device's command path; caps, timers and defaults come from the config.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from device.app import first_start_preferences, session_settings
from device.config import Config
from device.harness import SimUnit
from device.safety import Expectations, Fault, Supervisor
from device.sim import SimRig
from drivers.clock import VirtualClock
from drivers.sim.plant import Plant, PlantParams
from modes.library import ProgramLibrary, load_library
from modes.limits import SAMPLE_PERIOD_S, ZONES, Zone
from modes.program import parse_program
from modes.session import Session, SessionSettings, Status
from modes.signals import OFF, Command, Sample

DT = SAMPLE_PERIOD_S
NO_HEAT = Expectations(heat_target_c=None)

Control = Callable[[float, Sample], Command]
Expect = Callable[[float], Expectations]

_LIBRARY: ProgramLibrary | None = None
_UNITS = itertools.count()


def builtin_library() -> ProgramLibrary:
    """The built-in programs (loaded once per test process)."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY, problems = load_library(None)
        assert problems == []
    return _LIBRARY


def _corner(pump: float, volume: float, heater: float, air_c: float, skin_c: float) -> PlantParams:
    nominal = PlantParams()
    return PlantParams(
        pump_flow=nominal.pump_flow * pump,
        zone_volume={z: v * volume for z, v in nominal.zone_volume.items()},
        heater_full_c_per_s=nominal.heater_full_c_per_s * heater,
        air_c=air_c, skin_c=skin_c, leak_per_s=0.02,
        vent_tau_s=nominal.vent_tau_s * (1.25 if volume > 1 else 0.8),
    )


# Healthy units at the ends of the documented ranges (drivers/sim/plant.py PLANT_RANGES): the most leak,
# the slowest or quickest vent, the weakest or strongest pump and heater, the coldest or hottest room.
PLANT_CORNERS: dict[str, PlantParams] = {
    "weak-pump-big-bags-cold": _corner(0.75, 1.15, 0.85, 15.0, 30.0),
    "strong-pump-small-bags-hot": _corner(1.25, 0.85, 1.15, 30.0, 34.0),
    "weak-pump-big-bags-hot": _corner(0.75, 1.15, 1.15, 30.0, 34.0),
    "strong-pump-small-bags-cold": _corner(1.25, 0.85, 0.85, 15.0, 30.0),
}


def brief_warm_up(name: str, step_s: float = 15.0) -> ProgramLibrary:
    """The built-ins plus ``name`` with each warm-up step cut to ``step_s``, as the user program
    ``<name>_brief`` (for tests whose moment is in the work phase: a shipped warm-up is 1.5-2.5 minutes)."""
    library = builtin_library()
    program = library.get(name).model_dump(exclude_none=True)
    program["warm_up"] = [{**step, "duration_s": step_s} for step in program["warm_up"]]
    program["name"] = f"{name}_brief"
    return ProgramLibrary(library.builtin, {program["name"]: parse_program(program, f"{name}_brief")})


def with_caps(config: Config, caps: Mapping[Zone, float]) -> Config:
    """``config`` with other per-zone pressure caps (as a unit's config file sets them)."""
    return config.model_copy(
        update={"safety": config.safety.model_copy(update={"pressure_cap_mmhg": dict(caps)})}
    )


@dataclass
class Trace:
    """What the plant did, tick by tick (plant truth, never the firmware's own report)."""

    t: list[float] = field(default_factory=list)
    pressure: dict[Zone, list[float]] = field(default_factory=lambda: {z: [] for z in ZONES})
    setpoint: dict[Zone, list[float]] = field(default_factory=lambda: {z: [] for z in ZONES})
    outputs: list[Mapping[str, float | bool]] = field(default_factory=list)
    sensor_c: list[float] = field(default_factory=list)  # the hottest thermistor in the plant
    status: list[Status] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def window(self, start_s: float, end_s: float) -> range:
        """Indices of the ticks with start_s <= t < end_s."""
        first = next((i for i, t in enumerate(self.t) if t >= start_s), len(self.t))
        last = next((i for i, t in enumerate(self.t) if t >= end_s), len(self.t))
        return range(first, last)

    def peak_share(self, caps: Mapping[Zone, float], indices: range) -> float:
        """The highest pressure in ``indices`` as a share of its zone's cap."""
        return max((self.pressure[z][i] / caps[z] for z in ZONES for i in indices), default=0.0)


class Sim:
    """The production loop (``SimUnit``) after its start-up, with the plant's truth recorded every pass."""

    def __init__(
        self,
        config: Config,
        *,
        library: ProgramLibrary | None = None,
        record_outputs: bool = True,
        plant_params: PlantParams | None = None,
    ) -> None:
        own = config.model_copy(update={"state_dir": config.state_dir / f"unit{next(_UNITS)}"})
        self.unit = SimUnit(own, library=library, plant_params=plant_params)  # None: config.programs_dir
        self.config = own
        self.trace = Trace(faults=self.unit.faults)  # faults as the loop reported them (on_fault)
        self.record_outputs = record_outputs
        self._record = True
        self.unit.observers.append(self._observe)
        self.unit.start_up()
        assert self.unit.supervisor.latched is None and self.unit.supervisor.doubt is None

    @property
    def session(self) -> Session:
        """The unit's session."""
        return self.unit.session

    @property
    def clock(self) -> VirtualClock:
        """The unit's virtual clock."""
        return self.unit.clock

    @property
    def plant(self) -> Plant:
        """The simulated physics: the truth every verdict is drawn from."""
        return self.unit.plant

    @property
    def rig(self) -> SimRig:
        """Mock pins, drivers and plant of the unit."""
        assert self.unit.app.rig is not None
        return self.unit.app.rig

    def close(self) -> None:
        """Outputs off and pins released."""
        self.unit.close()

    def command(self, action: str, **fields: Any) -> None:
        """One command through the device's command path; it must be accepted."""
        reply = self.unit.command(action=action, **fields)
        assert reply.ok, reply

    def start(self, **fields: Any) -> None:
        """Start a session (fields as the MQTT ``start`` command takes them)."""
        self.command("start", **fields)

    def _observe(self) -> None:
        if not self._record:
            return
        trace = self.trace
        plant = self.unit.plant
        snap = self.unit.session.snapshot()
        trace.t.append(self.unit.clock.now())
        for zone in ZONES:
            trace.pressure[zone].append(plant.pressure[zone])
            trace.setpoint[zone].append(snap.setpoints_mmhg[zone])
        if self.record_outputs:
            trace.outputs.append(plant.outputs())
        trace.sensor_c.append(max(plant.sensor_c.values()))
        trace.status.append(snap.status)

    def tick(self, record: bool = True) -> None:
        """One pass of the production loop (then the plant and the clock move one period)."""
        self._record = record
        self.unit.tick()

    def run(self, seconds: float, *, until: Callable[[], bool] | None = None, record: bool = True) -> None:
        """Run passes for ``seconds`` of virtual time, or until ``until()`` is true."""
        self._record = record
        self.unit.run(seconds, until=until)
        self._record = True

    def run_until_idle(self, limit_s: float) -> float:
        """Run until the session is idle (at most ``limit_s``); returns the virtual time it took."""
        start = self.clock.now()
        self.run(limit_s, until=lambda: self.session.status is Status.IDLE)
        return self.clock.now() - start


def onsets(trace: Trace, indices: range, on_mmhg: float = 5.0, off_mmhg: float = 3.0) -> list[list[Zone]]:
    """Zones in the order they started pressing, grouped into bursts separated by all zones vented.

    A zone presses from above ``on_mmhg`` until it falls below ``off_mmhg`` (a Schmitt trigger).
    """
    pressed = dict.fromkeys(ZONES, False)
    bursts: list[list[Zone]] = []
    current: list[Zone] = []
    for i in indices:
        for zone in ZONES:
            p = trace.pressure[zone][i]
            if not pressed[zone] and p > on_mmhg:
                pressed[zone] = True
                current.append(zone)
            elif pressed[zone] and p < off_mmhg:
                pressed[zone] = False
        if current and not any(pressed.values()):
            bursts.append(current)
            current = []
    if current:
        bursts.append(current)
    return bursts


def pump_runs_s(trace: Trace) -> list[float]:
    """Lengths of every continuous pump-on stretch, from the plant's pump pin."""
    runs: list[float] = []
    start: float | None = None
    for t, out in zip(trace.t, trace.outputs, strict=True):
        on = float(out["pump"]) > 0.0
        if on and start is None:
            start = t
        elif not on and start is not None:
            runs.append(t - start)
            start = None
    if start is not None:
        runs.append(trace.t[-1] + DT - start)
    return runs


def settings_for(config: Config) -> SessionSettings:
    """A new unit's session settings from ``config``, built by the app's own function."""
    return session_settings(config, first_start_preferences(config), builtin_library())


def with_session(config: Config, **values: Any) -> Config:
    """``config`` with other ``[session]`` values (timer limits, defaults)."""
    return config.model_copy(update={"session": config.session.model_copy(update=values)})


class Operator:
    """Takes the session's place in the controller's pass: the test's commands and expectations."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.control: Control = lambda _t, _s: OFF
        self.expect: Expect = lambda _t: NO_HEAT
        self.status = Status.IDLE

    def snapshot(self) -> SimpleNamespace:
        """What the controller reads from the session: the heat target and the setpoints."""
        e = self.expect(self.now())
        return SimpleNamespace(heat_active=e.heat_target_c is not None, heat_target_c=e.heat_target_c,
                               setpoints_mmhg=e.setpoints_mmhg)

    def step(self, now: float, sample: Sample) -> Command:
        """The outputs for this pass (the controller calls it only while no fault is latched)."""
        return self.control(now, sample)

    def enter_fault(self, now: float) -> None:
        """The controller found a latched fault."""
        self.status = Status.FAULT


@dataclass
class Bench:
    """A unit on the production loop, driven by a scripted operator."""

    unit: SimUnit
    operator: Operator = field(init=False)

    def __post_init__(self) -> None:
        self.operator = Operator(self.unit.clock.now)
        self.unit.controller.session = self.operator  # type: ignore[assignment]

    @property
    def plant(self) -> Plant:
        """The simulated physics: the truth."""
        return self.unit.plant

    @property
    def supervisor(self) -> Supervisor:
        """The unit's supervisor."""
        return self.unit.supervisor

    @property
    def last(self) -> Sample | None:
        """The sample the last pass acted on."""
        return self.unit.controller.last_sample

    @property
    def faults(self) -> list[Fault]:
        """Faults the loop reported."""
        return self.unit.faults

    def run(self, seconds: float, control: Control, expect: Expect = lambda _t: NO_HEAT) -> Fault | None:
        """Production passes for ``seconds`` under ``control``; returns the first fault the loop reported."""
        self.operator.control, self.operator.expect = control, expect
        reported = len(self.unit.faults)
        for _ in range(round(seconds / DT)):
            self.unit.tick()
            if len(self.unit.faults) > reported:
                return self.unit.faults[reported]
        return None

    def idle(self, seconds: float) -> None:
        """Keep the loop running with everything off (the fault state's outputs)."""
        self.run(seconds, lambda _t, _s: OFF)

    def reset(self) -> str | None:
        """Ask the supervisor for a reset with the latest sample (the device's reset path, session aside)."""
        assert self.last is not None
        reason = self.supervisor.reset(self.last)
        if reason is None:
            self.operator.status = Status.IDLE
        return reason
