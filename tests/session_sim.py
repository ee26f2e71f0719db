"""Helpers for the program, session and control tests: drive a Session on the simulated plant."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from device.config import Config
from device.safety import Expectations, Fault, Supervisor
from device.sim import SimRig
from drivers.clock import VirtualClock
from modes.library import ProgramLibrary, load_library
from modes.limits import SAMPLE_PERIOD_S, ZONES, Zone
from modes.session import Session, SessionSettings, Status

DT = SAMPLE_PERIOD_S

_LIBRARY: ProgramLibrary | None = None


def builtin_library() -> ProgramLibrary:
    """The built-in programs (loaded once per test process)."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY, problems = load_library(None)
        assert problems == []
    return _LIBRARY


def settings_for(config: Config, **overrides: object) -> SessionSettings:
    """SessionSettings built from the config the way the app builds them."""
    values: dict[str, object] = {
        "pressure_cap_mmhg": dict(config.safety.pressure_cap_mmhg),
        "heat_target_c": config.heater.default_target_c,
        "heat_target_max_c": config.safety.heat_target_max_c,
        "heater_max_duty": config.heater.max_duty,
        "roller_max_speed": config.motors.max_speed,
        "timer_default_min": config.session.timer_default_min,
        "timer_max_min": config.session.timer_max_min,
        "default_program": config.session.default_program,
        "default_intensity": config.session.default_intensity,
        "skip_zones": frozenset(config.session.skip_zones),
    }
    values.update(overrides)
    return SessionSettings(**values)  # type: ignore[arg-type]


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
    """A Session wired to the simulated rig and the real safety supervisor, in virtual time."""

    def __init__(
        self,
        rig: SimRig,
        clock: VirtualClock,
        config: Config,
        *,
        library: ProgramLibrary | None = None,
        settings: SessionSettings | None = None,
        supervise: bool = True,
        record_outputs: bool = True,
    ) -> None:
        self.rig = rig
        self.clock = clock
        self.config = config
        self.session = Session(library=library or builtin_library(), settings=settings or settings_for(config))
        self.supervisor = (
            Supervisor(config.safety, thermistors=list(config.sensors.thermistors)) if supervise else None
        )
        self.trace = Trace()
        self.record_outputs = record_outputs
        self.step_s = 0.0  # wall time spent in Session.step (the firmware's own per-tick logic)

    def tick(self, record: bool = True) -> None:
        """One 20 Hz pass: read, check, step, apply, then advance the plant and the clock."""
        rig, session, clock = self.rig, self.session, self.clock
        now = clock.now()
        sample = rig.hardware.read_sample()
        snap = session.snapshot()
        if self.supervisor is not None:
            fault = self.supervisor.check(
                sample,
                Expectations(
                    heat_target_c=snap.heat_target_c if snap.heat_active else None,
                    setpoints_mmhg=snap.setpoints_mmhg,
                ),
            )
            if fault is not None:
                self.trace.faults.append(fault)
        started = time.perf_counter()
        command = session.step(now, sample)
        self.step_s += time.perf_counter() - started
        rig.hardware.apply(command)
        if record:
            trace = self.trace
            plant = rig.plant
            trace.t.append(now)
            for zone in ZONES:
                trace.pressure[zone].append(plant.pressure[zone])
                trace.setpoint[zone].append(snap.setpoints_mmhg[zone])
            if self.record_outputs:
                trace.outputs.append(plant.outputs())
            trace.sensor_c.append(max(plant.sensor_c.values()))
            trace.status.append(session.status)
        rig.plant.step(DT)
        clock.advance(DT)

    def run(self, seconds: float, *, until: Callable[[], bool] | None = None, record: bool = True) -> None:
        """Tick for ``seconds`` of virtual time, or until ``until()`` is true."""
        for _ in range(round(seconds / DT)):
            if until is not None and until():
                return
            self.tick(record)

    def run_until_idle(self, limit_s: float) -> float:
        """Tick until the session is idle (at most ``limit_s``); returns the virtual time it took."""
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
