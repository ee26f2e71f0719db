"""The simulated plant: heater pad, airbags, roller motors and sensors, driven by the mock pins.

The plant reads what the GPIO pins do (never what the firmware meant) and answers through
the analog voltages that the fake ADS1115s convert. Faults are injected here, into the physics.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.pressure import CurrentSense, PressureTransducer
from drivers.sim.fake_bus import FakeADS1115, FakeSMBus
from drivers.thermistor import Thermistor

ZONE_NAMES = ("foot", "ankle", "calf")
MOTOR_NAMES = ("foot_rollers", "calf_rollers")
PLANT_FAULTS = (
    "heater_runaway",
    "heater_open",
    "thermistor_open",
    "thermistor_short",
    "valve_stuck_closed",
    "valve_stuck_open",
    "pump_dead",
    "motor_stall",
    "i2c_dead",
)
MAX_STEP_S = 0.05  # physics sub-step (exponential updates stay stable at this size)


def _ground() -> float:
    """An unconnected input sits near ground."""
    return 0.0


class PlantFaultError(ValueError):
    """An unknown plant fault or a bad fault parameter."""


@dataclass(frozen=True)
class PlantParams:
    """Physical constants of the simulated unit (tuned to DESIGN.md section 3's rates)."""

    air_c: float = 25.0
    skin_c: float = 32.0
    heater_full_c_per_s: float = 0.0595  # warming at full power with no loss
    heater_loss_per_s: float = 0.001026  # loss coefficient to the air and to the skin each
    thermistor_lag_s: tuple[float, float] = (1.0, 2.0)
    temp_noise_c: float = 0.02
    pump_stall_mmhg: float = 300.0
    pump_flow: float = 38.0  # mmHg/s into the foot zone (volume 1) from empty at full duty
    zone_volume: Mapping[str, float] = field(
        default_factory=lambda: {"foot": 1.0, "ankle": 1.65, "calf": 2.24}
    )
    vent_tau_s: float = 0.4  # 120 mmHg to below 10 in about 1 s
    leak_per_s: float = 0.002
    manifold_conductance: float = 2.0
    pressure_noise_mmhg: float = 0.2
    motor_tau_s: float = 0.15
    motor_idle_a: float = 0.15
    motor_load_a: float = 0.9  # extra current at full speed and normal load
    motor_inrush_a: float = 2.0  # extra current per unit of duty the speed lags behind
    motor_stall_a_per_duty: float = 8.0
    motor_stall_max_a: float = 3.5
    current_noise_a: float = 0.01
    rail_v: float = 12.0
    # The external hardware deadman: drops the relay when the heartbeat pin stops toggling for this
    # long (None: not fitted, e.g. bench tests that drive outputs by hand).
    deadman_timeout_s: float | None = None


@dataclass(frozen=True)
class PlantWiring:
    """Which GPIO drives which load, and which ADC input reads which quantity."""

    pins: Mapping[str, int]  # foot_rollers_forward ... relay, heartbeat
    pressure: Mapping[str, tuple[int, int, PressureTransducer]]  # zone -> (address, channel, model)
    thermistors: Mapping[str, tuple[int, int, Thermistor]]
    motor_current: Mapping[str, tuple[int, int, CurrentSense]]
    rail: tuple[int, int, float]  # address, channel, volts per volt


class Plant:
    """The physical unit in simulation: call ``step(dt)``; the fake bus reads its sensors."""

    def __init__(
        self, factory: Any, wiring: PlantWiring, params: PlantParams | None = None, *, seed: int = 1
    ) -> None:
        self.factory = factory
        self.wiring = wiring
        self.params = p = params or PlantParams()
        self._rng = random.Random(seed)
        self.t = 0.0
        self.pad_c = (p.air_c + p.skin_c) / 2.0  # at rest with the feet in
        self.sensor_c = {name: self.pad_c for name in wiring.thermistors}
        self.pressure = dict.fromkeys(ZONE_NAMES, 0.0)
        self.motor_speed = dict.fromkeys(MOTOR_NAMES, 0.0)
        self.motor_amps = dict.fromkeys(MOTOR_NAMES, 0.0)
        self.motor_load = dict.fromkeys(MOTOR_NAMES, 1.0)
        self.faults: dict[str, dict[str, Any]] = {}
        self.bus = FakeSMBus()
        addresses = {a for a, _c, _m in self._all_inputs()}
        self._sources = self._wire_sources()
        for address in sorted(addresses):
            self.bus.devices[address] = FakeADS1115(volts=self._volts_reader(address), busy_polls=0)
        self._pins = {name: factory.pin(pin) for name, pin in wiring.pins.items()}
        self._follow_clock: Callable[[], float] | None = None
        self._follow_max_gap_s = 1.0
        self._followed_at = 0.0
        self._heartbeat_state = False
        self._heartbeat_seen_t = 0.0
        self.deadman_tripped = False

    # -- inputs from the mock pins ------------------------------------------------------------

    def _pin(self, name: str) -> float:
        # The mock pin's own fields (not its gpiozero properties): this runs ~20 times per tick.
        pin = self._pins[name]
        if pin._function != "output":
            return 0.0  # a released pin floats to its pull-down
        return float(pin._state)

    @property
    def relay_on(self) -> bool:
        """True while the actuator power relay is energised (and the external deadman lets it)."""
        return self._pin("relay") > 0.5 and not self.deadman_tripped

    def _step_deadman(self) -> None:
        timeout = self.params.deadman_timeout_s
        if timeout is None:
            return
        beat = self._pin("heartbeat") > 0.5
        if beat != self._heartbeat_state:
            self._heartbeat_state = beat
            self._heartbeat_seen_t = self.t
            self.deadman_tripped = False  # toggling again re-arms the deadman
        elif self.t - self._heartbeat_seen_t > timeout:
            self.deadman_tripped = True

    def heater_power(self) -> float:
        """Fraction of full heating power reaching the pad now."""
        if not self.relay_on or "heater_open" in self.faults:
            return 0.0
        if "heater_runaway" in self.faults:
            return 1.0  # the switch is stuck on: duty no longer matters
        return self._pin("heater")

    def pump_duty(self) -> float:
        """Effective pump duty (0 with the relay open or the pump dead)."""
        if not self.relay_on or "pump_dead" in self.faults:
            return 0.0
        return self._pin("pump")

    def valve_connected(self, zone: str) -> bool:
        """True when the zone's valve connects it to the manifold (vs. venting)."""
        stuck_open = self.faults.get("valve_stuck_open")
        if stuck_open is not None and zone in stuck_open["zones"]:
            return False
        stuck_closed = self.faults.get("valve_stuck_closed")
        if stuck_closed is not None and zone in stuck_closed["zones"]:
            return True
        return self.relay_on and self._pin(f"valve_{zone}") > 0.5

    def motor_duty(self, motor: str) -> float:
        """Signed duty across the motor's H-bridge (0 with the relay open)."""
        if not self.relay_on:
            return 0.0
        return self._pin(f"{motor}_forward") - self._pin(f"{motor}_backward")

    # -- physics ------------------------------------------------------------------------------

    def follow(self, clock: Callable[[], float], *, max_gap_s: float = 1.0) -> None:
        """Advance by itself along ``clock`` whenever it is observed (a sensor conversion, ``truth()``).

        Physics between observations integrates the outputs as the pins held them (a zero-order hold,
        as a real plant sees them), so a running simulation needs no task of its own. A gap longer
        than ``max_gap_s`` (a stalled event loop) is integrated as ``max_gap_s``.
        """
        self._follow_clock = clock
        self._follow_max_gap_s = max_gap_s
        self._followed_at = clock()

    def catch_up(self) -> None:
        """Step to the followed clock's now (no-op when not following or already there)."""
        clock = self._follow_clock
        if clock is None:
            return
        now = clock()
        gap = now - self._followed_at
        if gap > 0.0:
            self._followed_at = now
            self.step(min(gap, self._follow_max_gap_s))

    def step(self, dt: float) -> None:
        """Advance the physics by ``dt`` seconds of plant time."""
        if dt < 0:
            raise ValueError(f"plant time cannot go backward (dt={dt})")
        steps = max(1, math.ceil(dt / MAX_STEP_S - 1e-9))
        h = dt / steps
        for _ in range(steps):
            self._step_deadman()
            self._step_heater(h)
            self._step_airbags(h)
            self._step_motors(h)
            self.t += h

    def _step_heater(self, h: float) -> None:
        p = self.params
        dT = (
            p.heater_full_c_per_s * self.heater_power()
            - p.heater_loss_per_s * (self.pad_c - p.air_c)
            - p.heater_loss_per_s * (self.pad_c - p.skin_c)
        )
        self.pad_c += dT * h
        for i, name in enumerate(self.sensor_c):
            tau = p.thermistor_lag_s[min(i, len(p.thermistor_lag_s) - 1)]
            self.sensor_c[name] += (self.pad_c - self.sensor_c[name]) * (1.0 - math.exp(-h / tau))

    def _step_airbags(self, h: float) -> None:
        p = self.params
        connected = [z for z in ZONE_NAMES if self.valve_connected(z)]
        new = dict(self.pressure)
        duty = self.pump_duty()
        if connected and duty > 0.0:
            head = max(self.pressure[z] for z in connected)
            flow = p.pump_flow * duty * max(0.0, 1.0 - head / p.pump_stall_mmhg)
            for z in connected:
                new[z] += flow / len(connected) / p.zone_volume[z] * h
        for i, a in enumerate(connected):  # the manifold equalises connected zones
            for b in connected[i + 1 :]:
                q = p.manifold_conductance * (self.pressure[a] - self.pressure[b]) * h
                new[a] -= q / p.zone_volume[a]
                new[b] += q / p.zone_volume[b]
        for z in ZONE_NAMES:
            if z in connected:
                new[z] -= new[z] * p.leak_per_s * h
            else:
                new[z] *= math.exp(-h / p.vent_tau_s)
            self.pressure[z] = max(0.0, new[z])

    def _step_motors(self, h: float) -> None:
        p = self.params
        stalled = self.faults.get("motor_stall", {}).get("motors", ())
        for m in MOTOR_NAMES:
            duty = self.motor_duty(m)
            if m in stalled:
                self.motor_speed[m] = 0.0
                amps = min(p.motor_stall_max_a, p.motor_stall_a_per_duty * abs(duty))
            else:
                speed = self.motor_speed[m]
                speed += (duty - speed) * (1.0 - math.exp(-h / p.motor_tau_s))
                self.motor_speed[m] = speed
                amps = 0.0
                if duty != 0.0 or abs(speed) > 0.01:
                    amps = (
                        p.motor_idle_a
                        + p.motor_load_a * self.motor_load[m] * abs(speed)
                        + p.motor_inrush_a * abs(duty - speed)
                    )
            self.motor_amps[m] = amps

    # -- sensors ------------------------------------------------------------------------------

    def _all_inputs(self) -> list[tuple[int, int, object]]:
        w = self.wiring
        return [
            *w.pressure.values(),
            *w.thermistors.values(),
            *w.motor_current.values(),
            (w.rail[0], w.rail[1], None),
        ]

    def _volts_reader(self, address: int) -> Any:
        """The voltage source of one converter: its four inputs looked up once, called per conversion."""
        inputs = [self._sources.get((address, channel), _ground) for channel in range(4)]

        def read(channel: int) -> float:
            self.catch_up()
            return inputs[channel]()

        return read

    def _wire_sources(self) -> dict[tuple[int, int], Any]:
        """Map each wired ADC input to the function that gives its voltage now."""
        w = self.wiring
        sources: dict[tuple[int, int], Any] = {}
        for zone, (a, c, transducer) in w.pressure.items():
            sources[(a, c)] = lambda z=zone, m=transducer: m.volts(
                max(0.0, self.pressure[z] + self._rng.gauss(0.0, self.params.pressure_noise_mmhg))
            )
        for i, (name, (a, c, thermistor)) in enumerate(w.thermistors.items()):
            sources[(a, c)] = lambda i=i, n=name, m=thermistor: self._thermistor_volts(i, n, m)
        for motor, (a, c, sense) in w.motor_current.items():
            sources[(a, c)] = lambda m=motor, cs=sense: cs.volts(self._motor_amps_noisy(m))
        sources[w.rail[:2]] = lambda: (self.params.rail_v if self.relay_on else 0.0) * w.rail[2]
        return sources

    def _motor_amps_noisy(self, motor: str) -> float:
        amps = self.motor_amps[motor]
        return max(0.0, amps + self._rng.gauss(0.0, self.params.current_noise_a)) if amps > 0 else 0.0

    def adc_volts(self, address: int, channel: int) -> float:
        """The voltage at ADS1115 ``address`` input AIN``channel`` right now."""
        source = self._sources.get((address, channel))
        return source() if source is not None else 0.0  # an unconnected input sits near ground

    def _thermistor_volts(self, index: int, name: str, thermistor: Thermistor) -> float:
        for fault, volts in (
            ("thermistor_open", thermistor.supply_v * 0.995),
            ("thermistor_short", 0.001),
        ):
            spec = self.faults.get(fault)
            if spec is not None and name in spec["sensors"]:
                return volts
        celsius = self.sensor_c[name] + self._rng.gauss(0.0, self.params.temp_noise_c)
        return thermistor.volts(celsius)

    # -- fault injection ----------------------------------------------------------------------

    def inject(self, fault: str, **params: Any) -> None:
        """Inject a named physical fault; optional ``zone``, ``motor`` or ``sensor`` narrows it."""
        if fault not in PLANT_FAULTS:
            raise PlantFaultError(
                f"unknown plant fault {fault!r}; known: {', '.join(PLANT_FAULTS)}"
            )
        spec: dict[str, Any] = {}
        if fault in ("valve_stuck_closed", "valve_stuck_open"):
            spec["zones"] = self._names(params.pop("zone", "foot"), ZONE_NAMES, "zone")
        elif fault == "motor_stall":
            spec["motors"] = self._names(params.pop("motor", "foot_rollers"), MOTOR_NAMES, "motor")
        elif fault in ("thermistor_open", "thermistor_short"):
            first = next(iter(self.wiring.thermistors))
            spec["sensors"] = self._names(
                params.pop("sensor", first), tuple(self.wiring.thermistors), "sensor"
            )
        if params:
            raise PlantFaultError(f"{fault} takes no parameter {', '.join(sorted(params))}")
        self.faults[fault] = spec
        if fault == "i2c_dead":
            self.bus.dead = True

    @staticmethod
    def _names(value: Any, known: tuple[str, ...], what: str) -> tuple[str, ...]:
        names = tuple(known) if value == "all" else (value,) if isinstance(value, str) else ()
        if not names or any(n not in known for n in names):
            raise PlantFaultError(f"{what} must be one of {', '.join(known)} or 'all', got {value!r}")
        return names

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.faults.clear()
        self.bus.dead = False

    # -- truth for dashboards and tests --------------------------------------------------------

    def outputs(self) -> dict[str, float | bool]:
        """What the pins drive right now, read from the mock pins."""
        return {
            "foot_rollers": round(self._pin("foot_rollers_forward") - self._pin("foot_rollers_backward"), 4),
            "calf_rollers": round(self._pin("calf_rollers_forward") - self._pin("calf_rollers_backward"), 4),
            "pump": round(self._pin("pump"), 4),
            **{f"valve_{z}": self._pin(f"valve_{z}") > 0.5 for z in ZONE_NAMES},
            "heater": round(self._pin("heater"), 4),
            "relay": self._pin("relay") > 0.5,
            "heartbeat": self._pin("heartbeat") > 0.5,
        }

    def all_off(self) -> bool:
        """True when no pin drives any load (the heartbeat pin aside)."""
        out = self.outputs()
        return all(not v for k, v in out.items() if k != "heartbeat")

    def truth(self) -> dict[str, Any]:
        """The plant's state as published on ``sim/plant``."""
        self.catch_up()
        return {
            "t": round(self.t, 3),
            "temperature_c": {k: round(v, 2) for k, v in self.sensor_c.items()},
            "pad_c": round(self.pad_c, 2),
            "pressure_mmhg": {z: round(v, 1) for z, v in self.pressure.items()},
            "motor_current_a": {m: round(v, 3) for m, v in self.motor_amps.items()},
            "outputs": self.outputs(),
            "faults": sorted(self.faults),
            "deadman_tripped": self.deadman_tripped,
        }
