"""The simulated plant: heater pad, airbags, roller motors and sensors, driven by the mock pins.

The plant reads what the GPIO pins do (never what the firmware meant) and answers through
the analog voltages that the fake ADS1115s convert. Faults are injected here, into the physics.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
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
# Faults of wear and of the sensors, most with required parameters (see FAULT_PARAMETERS). They are
# kept apart from PLANT_FAULTS, whose nine the selftest's expectations and the dashboard's keys cover.
EXTRA_PLANT_FAULTS = (
    "pressure_sensor_stuck",
    "pressure_sensor_zero",
    "pressure_sensor_drift",
    "leak",
    "thermistor_drift",
    "thermistor_detached",
    "relay_welded",
    "pump_weak",
    "heater_weak",
    "divider_supply",
)
ALL_PLANT_FAULTS = PLANT_FAULTS + EXTRA_PLANT_FAULTS
# The parameters each fault takes: name -> (parameter, what it must be). The zone and sensor of the
# first nine are optional (default: the first one); every parameter of the others is required.
FAULT_PARAMETERS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "valve_stuck_closed": {"zone": "foot, ankle, calf or all (default foot)"},
    "valve_stuck_open": {"zone": "foot, ankle, calf or all (default foot)"},
    "motor_stall": {"motor": "foot_rollers, calf_rollers or all (default foot_rollers)"},
    "thermistor_open": {"sensor": "a thermistor name, both or all (default the first)"},
    "thermistor_short": {"sensor": "a thermistor name, both or all (default the first)"},
    "pressure_sensor_stuck": {"zone": "foot, ankle, calf or all"},
    "pressure_sensor_zero": {"zone": "foot, ankle, calf or all"},
    "pressure_sensor_drift": {"zone": "foot, ankle, calf or all",
                              "rate_mmhg_per_s": "mmHg/s, nonzero, -20..20"},
    "leak": {"zone": "foot, ankle, calf or all", "rate": "share of the pressure lost per s, (0, 5]"},
    "thermistor_drift": {"sensor": "a thermistor name, both or all",
                         "rate_c_per_s": "°C/s, nonzero, -1..1"},
    "thermistor_detached": {"sensor": "a thermistor name, both or all"},
    "pump_weak": {"flow": "factor of the pump's flow, (0, 1]"},
    "heater_weak": {"power": "factor of the heater's power, (0, 1]"},
    "divider_supply": {"factor": "factor of the thermistor divider supply, 0.8..1.2, not 1"},
})
DRIFT_MAX_MMHG_PER_S = 20.0
DRIFT_MAX_C_PER_S = 1.0
LEAK_MAX_PER_S = 5.0
DIVIDER_FACTOR_RANGE = (0.8, 1.2)
THERMISTOR_MIN_C, THERMISTOR_MAX_C = -100.0, 500.0  # a drifting reading stays in a physical voltage
SENSOR_RAIL_V = 3.3  # the analog sensors' supply: no sensor output leaves 0..this
THERMAL_CUTOFF_RESET_C = 5.0  # a tripped thermal cutoff closes again this far below its rating
MAX_STEP_S = 0.05  # physics sub-step (exponential updates stay stable at this size)
# A conversion this soon after the last step reads the physics as it was: the eight conversions of one pass
# (some 50 us apart) cost one step, not eight; the plant's fastest time constant is 0.3 s.
OBSERVE_MIN_STEP_S = 0.001


def _ground() -> float:
    """An unconnected input sits near ground."""
    return 0.0


class PlantFaultError(ValueError):
    """An unknown plant fault or a bad fault parameter; ``field`` names the parameter at fault."""

    def __init__(self, message: str, *, field: str = "fault") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DrawRange:
    """Where ``PlantParams.draw`` puts one parameter: uniform in [lo, hi], as a factor of the nominal
    value when ``relative``, and drawn for each item independently when the parameter is per zone,
    sensor or motor."""

    lo: float
    hi: float
    relative: bool
    unit: str

    def bounds(self, nominal: float) -> tuple[float, float]:
        """The absolute bounds around ``nominal``."""
        return (self.lo * nominal, self.hi * nominal) if self.relative else (self.lo, self.hi)


# The documented variation of a drawn plant (``massager run --sim --plant-seed N``).
PLANT_RANGES: Mapping[str, DrawRange] = MappingProxyType({
    "pump_flow": DrawRange(0.75, 1.25, relative=True, unit="mmHg/s"),
    "heater_full_c_per_s": DrawRange(0.85, 1.15, relative=True, unit="°C/s"),
    "air_c": DrawRange(15.0, 30.0, relative=False, unit="°C"),
    "skin_c": DrawRange(30.0, 34.0, relative=False, unit="°C"),
    "zone_volume": DrawRange(0.85, 1.15, relative=True, unit="per zone"),
    "vent_tau_s": DrawRange(0.75, 1.25, relative=True, unit="s"),
    "thermistor_lag_s": DrawRange(0.5, 3.0, relative=False, unit="s per sensor"),
    "motor_load": DrawRange(0.7, 1.4, relative=False, unit="× normal load per motor"),
    "leak_per_s": DrawRange(0.0, 0.02, relative=False, unit="per s"),
})


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


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
    motor_load: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(MOTOR_NAMES, 1.0)
    )  # roller load per motor (1: a normal pair of legs)
    divider_supply_v: float = 3.3  # the thermistor dividers' true supply (the divider_supply fault scales it)
    detached_tau_s: float = 20.0  # a thermistor off the pad relaxes to the air this fast
    # The external hardware deadman: drops the relay when the heartbeat pin stops toggling for this
    # long (None: not fitted, e.g. bench tests that drive outputs by hand).
    deadman_timeout_s: float | None = None
    # The pad's thermal cutoff, a bimetal in series with the heater (the hardware layer for what the
    # thermistors cannot see): opens at this temperature, closes again THERMAL_CUTOFF_RESET_C below.
    # None: not fitted (the default, so firmware faults are not masked in tests).
    thermal_cutoff_c: float | None = None

    @classmethod
    def draw(cls, seed: int) -> PlantParams:
        """A unit drawn from PLANT_RANGES around the nominal values; the same seed, the same unit."""
        rng = random.Random(seed)
        nominal = cls()

        def one(name: str, value: float) -> float:
            lo, hi = PLANT_RANGES[name].bounds(value)
            return rng.uniform(lo, hi)

        return cls(
            pump_flow=one("pump_flow", nominal.pump_flow),
            heater_full_c_per_s=one("heater_full_c_per_s", nominal.heater_full_c_per_s),
            air_c=one("air_c", nominal.air_c),
            skin_c=one("skin_c", nominal.skin_c),
            zone_volume={z: one("zone_volume", v) for z, v in nominal.zone_volume.items()},
            vent_tau_s=one("vent_tau_s", nominal.vent_tau_s),
            thermistor_lag_s=(one("thermistor_lag_s", nominal.thermistor_lag_s[0]),
                              one("thermistor_lag_s", nominal.thermistor_lag_s[1])),
            motor_load={m: one("motor_load", v) for m, v in nominal.motor_load.items()},
            leak_per_s=one("leak_per_s", nominal.leak_per_s),
        )

    def as_dict(self) -> dict[str, Any]:
        """Every parameter, JSON-able (mappings as objects, tuples as lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class PlantWiring:
    """Which GPIO drives which load, and which ADC input reads which quantity."""

    pins: Mapping[str, int]  # foot_rollers_forward ... relay, heartbeat
    pressure: Mapping[str, tuple[int, int, PressureTransducer]]  # zone -> (address, channel, model)
    thermistors: Mapping[str, tuple[int, int, Thermistor]]
    motor_current: Mapping[str, tuple[int, int, CurrentSense]]
    rail: tuple[int, int, float]  # address, channel, volts per volt
    divider_supply: tuple[int, int, float] | None = None  # the thermistor divider supply, sensed


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
        self.motor_load = {m: float(p.motor_load.get(m, 1.0)) for m in MOTOR_NAMES}
        self.faults: dict[str, dict[str, Any]] = {}  # name -> spec; keys starting "_" are internal
        self._params_dict = p.as_dict()
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
        self.cutoff_open = False  # the thermal cutoff (PlantParams.thermal_cutoff_c) has opened

    # -- inputs from the mock pins ------------------------------------------------------------

    def _pin(self, name: str) -> float:
        # The mock pin's own fields (not its gpiozero properties): this runs ~20 times per tick.
        pin = self._pins[name]
        if pin._function != "output":
            return 0.0  # a released pin floats to its pull-down
        return float(pin._state)

    @property
    def relay_on(self) -> bool:
        """True while the relay's contacts are closed: energised (and the deadman lets it), or welded."""
        if "relay_welded" in self.faults:
            return True
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
        if not self.relay_on or "heater_open" in self.faults or self.cutoff_open:
            return 0.0
        # A runaway's switch is stuck on: duty no longer matters.
        power = 1.0 if "heater_runaway" in self.faults else self._pin("heater")
        weak = self.faults.get("heater_weak")
        return power * weak["power"] if weak is not None else power

    def pump_duty(self) -> float:
        """Effective pump duty (0 with the relay open or the pump dead)."""
        if not self.relay_on or "pump_dead" in self.faults:
            return 0.0
        weak = self.faults.get("pump_weak")
        return self._pin("pump") * (weak["flow"] if weak is not None else 1.0)

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

    def catch_up(self, min_step_s: float = 0.0) -> None:
        """Step to the followed clock's now (no-op when not following, or less than ``min_step_s`` behind)."""
        clock = self._follow_clock
        if clock is None:
            return
        now = clock()
        gap = now - self._followed_at
        if gap > min_step_s:
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
        cutoff = p.thermal_cutoff_c
        if cutoff is not None:
            if self.pad_c >= cutoff:
                self.cutoff_open = True
            elif self.pad_c < cutoff - THERMAL_CUTOFF_RESET_C:
                self.cutoff_open = False
        dT = (
            p.heater_full_c_per_s * self.heater_power()
            - p.heater_loss_per_s * (self.pad_c - p.air_c)
            - p.heater_loss_per_s * (self.pad_c - p.skin_c)
        )
        self.pad_c += dT * h
        detached = self.faults.get("thermistor_detached", {}).get("_sensors", ())
        for i, name in enumerate(self.sensor_c):
            if name in detached:  # off the pad: it follows the air instead
                target, tau = p.air_c, p.detached_tau_s
            else:
                target, tau = self.pad_c, p.thermistor_lag_s[min(i, len(p.thermistor_lag_s) - 1)]
            self.sensor_c[name] += (target - self.sensor_c[name]) * (1.0 - math.exp(-h / tau))

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
        leak = self.faults.get("leak")
        for z in ZONE_NAMES:
            if z in connected:
                new[z] -= new[z] * p.leak_per_s * h
            else:
                new[z] *= math.exp(-h / p.vent_tau_s)
            if leak is not None and z in leak["_zones"]:  # a hole loses air whatever the valve does
                new[z] *= math.exp(-leak["rate"] * h)
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
            *([(w.divider_supply[0], w.divider_supply[1], None)] if w.divider_supply else []),
        ]

    def _volts_reader(self, address: int) -> Any:
        """The voltage source of one converter: its four inputs looked up once, called per conversion."""
        inputs = [self._sources.get((address, channel), _ground) for channel in range(4)]

        def read(channel: int) -> float:
            self.catch_up(OBSERVE_MIN_STEP_S)
            return inputs[channel]()

        return read

    def _wire_sources(self) -> dict[tuple[int, int], Any]:
        """Map each wired ADC input to the function that gives its voltage now."""
        w = self.wiring
        sources: dict[tuple[int, int], Any] = {}
        for zone, (a, c, transducer) in w.pressure.items():
            sources[(a, c)] = lambda z=zone, m=transducer: self._pressure_volts(z, m)
        for i, (name, (a, c, thermistor)) in enumerate(w.thermistors.items()):
            sources[(a, c)] = lambda i=i, n=name, m=thermistor: self._thermistor_volts(i, n, m)
        for motor, (a, c, sense) in w.motor_current.items():
            sources[(a, c)] = lambda m=motor, cs=sense: cs.volts(self._motor_amps_noisy(m))
        sources[w.rail[:2]] = lambda: (self.params.rail_v if self.relay_on else 0.0) * w.rail[2]
        if w.divider_supply is not None:
            ratio = w.divider_supply[2]
            sources[w.divider_supply[:2]] = lambda: self.divider_supply_v() * ratio
        return sources

    def divider_supply_v(self) -> float:
        """The thermistor dividers' true supply voltage now (the divider_supply fault scales it)."""
        fault = self.faults.get("divider_supply")
        return self.params.divider_supply_v * (fault["factor"] if fault is not None else 1.0)

    def _pressure_volts(self, zone: str, transducer: PressureTransducer, *, noise: bool = True) -> float:
        """The transducer's output now: the true pressure, as the pressure sensor faults bend it."""
        stuck = self.faults.get("pressure_sensor_stuck")
        if stuck is not None and zone in stuck["_volts"]:
            return float(stuck["_volts"][zone])
        zero = self.faults.get("pressure_sensor_zero")
        mmhg = 0.0 if zero is not None and zone in zero["_zones"] else self.pressure[zone]
        if noise:
            mmhg += self._rng.gauss(0.0, self.params.pressure_noise_mmhg)
        volts = transducer.volts(max(0.0, mmhg))
        drift = self.faults.get("pressure_sensor_drift")
        if drift is not None and zone in drift["_zones"]:
            offset_mmhg = drift["rate_mmhg_per_s"] * (self.t - drift["_since"])
            volts += transducer.volts(offset_mmhg) - transducer.volts(0.0)
        return min(SENSOR_RAIL_V, max(0.0, volts))

    def _motor_amps_noisy(self, motor: str) -> float:
        amps = self.motor_amps[motor]
        return max(0.0, amps + self._rng.gauss(0.0, self.params.current_noise_a)) if amps > 0 else 0.0

    def adc_volts(self, address: int, channel: int) -> float:
        """The voltage at ADS1115 ``address`` input AIN``channel`` right now."""
        source = self._sources.get((address, channel))
        return source() if source is not None else 0.0  # an unconnected input sits near ground

    def _thermistor_volts(self, index: int, name: str, thermistor: Thermistor) -> float:
        supply = self.divider_supply_v()
        for fault, volts in (
            ("thermistor_open", supply * 0.995),
            ("thermistor_short", 0.001),
        ):
            spec = self.faults.get(fault)
            if spec is not None and name in spec["sensors"]:
                return volts
        celsius = self.sensor_c[name] + self._rng.gauss(0.0, self.params.temp_noise_c)
        drift = self.faults.get("thermistor_drift")
        if drift is not None and name in drift["_sensors"]:
            celsius += drift["rate_c_per_s"] * (self.t - drift["_since"])
            celsius = min(THERMISTOR_MAX_C, max(THERMISTOR_MIN_C, celsius))  # the voltage stays physical
        # The model's volts() assumes the configured supply; the divider sees the true one.
        return thermistor.volts(celsius) * supply / thermistor.supply_v

    # -- fault injection ----------------------------------------------------------------------

    def inject(self, fault: str, **params: Any) -> None:
        """Inject a named physical fault with its parameters (FAULT_PARAMETERS); a second injection of
        the same fault replaces the first. Raises PlantFaultError naming the parameter at fault."""
        if fault not in ALL_PLANT_FAULTS:
            raise PlantFaultError(
                f"unknown plant fault {fault!r}; known: {', '.join(ALL_PLANT_FAULTS)}", field="fault"
            )
        self.catch_up()  # stuck values and drift start from now
        given = dict(params)
        spec: dict[str, Any] = {}
        sensors = tuple(self.wiring.thermistors)
        if fault in ("valve_stuck_closed", "valve_stuck_open"):
            spec["zones"] = self._names(given.pop("zone", "foot"), ZONE_NAMES, "zone")
        elif fault == "motor_stall":
            spec["motors"] = self._names(given.pop("motor", "foot_rollers"), MOTOR_NAMES, "motor")
        elif fault in ("thermistor_open", "thermistor_short"):
            spec["sensors"] = self._names(given.pop("sensor", sensors[0]), sensors, "sensor")
        elif fault in ("pressure_sensor_stuck", "pressure_sensor_zero", "pressure_sensor_drift", "leak"):
            zone = self._required(fault, given, "zone")
            spec["zone"], spec["_zones"] = zone, self._names(zone, ZONE_NAMES, "zone")
            if fault == "pressure_sensor_drift":
                spec["rate_mmhg_per_s"] = self._number(
                    fault, given, "rate_mmhg_per_s", -DRIFT_MAX_MMHG_PER_S, DRIFT_MAX_MMHG_PER_S,
                    nonzero=True, unit="mmHg/s",
                )
            elif fault == "leak":
                spec["rate"] = self._number(fault, given, "rate", 0.0, LEAK_MAX_PER_S, lo_open=True,
                                            unit="per s")
            elif fault == "pressure_sensor_stuck":
                spec["_volts"] = {
                    z: self._pressure_volts(z, m, noise=False)
                    for z, (_a, _c, m) in self.wiring.pressure.items() if z in spec["_zones"]
                }
        elif fault in ("thermistor_drift", "thermistor_detached"):
            sensor = self._required(fault, given, "sensor")
            spec["sensor"], spec["_sensors"] = sensor, self._names(sensor, sensors, "sensor")
            if fault == "thermistor_drift":
                spec["rate_c_per_s"] = self._number(
                    fault, given, "rate_c_per_s", -DRIFT_MAX_C_PER_S, DRIFT_MAX_C_PER_S, nonzero=True,
                    unit="°C/s",
                )
        elif fault == "pump_weak":
            spec["flow"] = self._number(fault, given, "flow", 0.0, 1.0, lo_open=True, unit="factor")
        elif fault == "heater_weak":
            spec["power"] = self._number(fault, given, "power", 0.0, 1.0, lo_open=True, unit="factor")
        elif fault == "divider_supply":
            lo, hi = DIVIDER_FACTOR_RANGE
            spec["factor"] = self._number(fault, given, "factor", lo, hi, unit="factor", not_one=True)
        if given:
            name = sorted(given)[0]
            raise PlantFaultError(f"{fault} takes no parameter {', '.join(sorted(given))}", field=name)
        if fault in ("pressure_sensor_drift", "thermistor_drift"):
            spec["_since"] = self.t
        spec["since_s"] = round(self.t, 3)
        self.faults[fault] = spec
        if fault == "i2c_dead":
            self.bus.dead = True

    @staticmethod
    def _required(fault: str, given: dict[str, Any], name: str) -> Any:
        if name not in given:
            raise PlantFaultError(f"{fault}: {name} is missing ({FAULT_PARAMETERS[fault][name]})",
                                  field=name)
        return given.pop(name)

    @classmethod
    def _number(
        cls, fault: str, given: dict[str, Any], name: str, lo: float, hi: float, *, unit: str,
        lo_open: bool = False, nonzero: bool = False, not_one: bool = False,
    ) -> float:
        """A required numeric parameter in [lo, hi] (``(lo, hi]`` when ``lo_open``)."""
        value = cls._required(fault, given, name)
        bounds = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        extra = ", not 0" if nonzero else ", not 1" if not_one else ""
        want = f"a number in {bounds}{extra} ({unit})"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PlantFaultError(f"{fault}: {name} must be {want}, got {value!r}", field=name)
        number = float(value)
        inside = (lo < number if lo_open else lo <= number) and number <= hi
        if not math.isfinite(number) or not inside or (nonzero and number == 0.0) or (
            not_one and number == 1.0
        ):
            raise PlantFaultError(f"{fault}: {name} must be {want}, got {value!r}", field=name)
        return number

    @staticmethod
    def _names(value: Any, known: tuple[str, ...], what: str) -> tuple[str, ...]:
        everything = value == "all" or (what == "sensor" and value == "both")
        names = tuple(known) if everything else (value,) if isinstance(value, str) else ()
        if not names or any(n not in known for n in names):
            choices = f"{', '.join(known)}, 'both' or 'all'" if what == "sensor" else (
                f"{', '.join(known)} or 'all'"
            )
            raise PlantFaultError(f"{what} must be one of {choices}, got {value!r}", field=what)
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
            "relay_closed": self.relay_on,
            "faults": sorted(self.faults),
            "fault_params": self.fault_params(),
            "deadman_tripped": self.deadman_tripped,
            "params": self._params_dict,
        }

    def fault_params(self) -> dict[str, dict[str, Any]]:
        """Each injected fault with its parameters, JSON-able."""
        return {
            name: {k: _jsonable(v) for k, v in spec.items() if not k.startswith("_")}
            for name, spec in sorted(self.faults.items())
        }
