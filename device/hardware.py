"""Wiring: builds every driver from the config and reads every sensor into one Sample."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from device.config import Config
from drivers.ads1115 import ADS1115, SMBusLike
from drivers.errors import SensorBusError, SensorFault
from drivers.heater import HeaterPad
from drivers.motor import RollerMotor
from drivers.pressure import CurrentSense, PressureTransducer
from drivers.pump import AirPump
from drivers.switches import HeartbeatPin, PowerRelay, ZoneValve
from drivers.thermistor import Thermistor
from modes.limits import ZONES, Zone
from modes.signals import Command, Sample

log = logging.getLogger(__name__)


def sensor_models(config: Config) -> dict[str, Any]:
    """The conversion models of every analog input, keyed the way the Sample names them."""
    s = config.sensors
    return {
        "pressure": {
            z: PressureTransducer(z, zero_v=i.zero_v, full_scale_v=i.full_scale_v,
                                  full_scale_mmhg=i.full_scale_mmhg)
            for z, i in s.pressure.items()
        },
        "thermistors": {
            n: Thermistor(n, nominal_ohm=i.nominal_ohm, nominal_c=i.nominal_c, beta=i.beta,
                          series_ohm=i.series_ohm, supply_v=i.supply_v)
            for n, i in s.thermistors.items()
        },
        "motor_current": {
            m: CurrentSense(m, volts_per_amp=i.volts_per_amp) for m, i in s.motor_current.items()
        },
    }


class Hardware:
    """Every actuator and sensor of the unit, built from the config over a pin factory and a bus."""

    def __init__(
        self,
        config: Config,
        *,
        pin_factory: Any,
        bus: SMBusLike,
        clock: Callable[[], float],
        adc_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._clock = clock
        pins = config.pins
        self._opened: list[Any] = []
        # The relay comes first and closes last: nothing gets power before its driver is off.
        self.relay = self._add(PowerRelay("relay", pins.relay, pin_factory=pin_factory))
        self.heartbeat = self._add(HeartbeatPin("heartbeat", pins.heartbeat, pin_factory=pin_factory))
        self.pump = self._add(AirPump("pump", pins.pump, pin_factory=pin_factory))
        self.valves: dict[Zone, ZoneValve] = {
            z: self._add(ZoneValve(f"valve_{z}", getattr(pins, f"valve_{z}"), pin_factory=pin_factory))
            for z in ZONES
        }
        self.heater = self._add(
            HeaterPad("heater", pins.heater, relay=self.relay, pin_factory=pin_factory,
                      max_duty=config.heater.max_duty, pwm_frequency_hz=config.heater.pwm_hz)
        )
        self._last_current: dict[str, float] = {"foot_rollers": 0.0, "calf_rollers": 0.0}
        self.rollers: dict[str, RollerMotor] = {}
        for name in ("foot_rollers", "calf_rollers"):
            self.rollers[name] = self._add(
                RollerMotor(
                    name,
                    getattr(pins, f"{name}_forward"),
                    getattr(pins, f"{name}_backward"),
                    clock=clock,
                    pin_factory=pin_factory,
                    max_speed=config.motors.max_speed,
                    reverse_dwell_s=config.motors.reverse_dwell_s,
                    pwm_frequency_hz=config.motors.pwm_hz,
                    current_reader=lambda n=name: self._last_current[n],  # type: ignore[misc]
                )
            )
        self.bus = bus
        self.adcs = {
            address: ADS1115(bus, address, full_scale_v=config.adc.full_scale_v,
                             data_rate_sps=config.adc.data_rate_sps, sleep=adc_sleep)
            for address in config.adc.addresses
        }
        self.models = sensor_models(config)
        self._applied: Command | None = None  # the last command applied in full
        # Every output write holds this lock and checks the trip latch under it, so a pass that was
        # stalled mid-way (the deadman tripped meanwhile) can never re-energise anything.
        self._output_lock = threading.RLock()
        self._tripped = False

    def _add(self, driver: Any) -> Any:
        self._opened.append(driver)
        return driver

    # -- outputs ------------------------------------------------------------------------------

    def outputs(self) -> dict[str, float | bool]:
        """Every actuator's state as read back from its driver."""
        return {
            "foot_rollers": round(self.rollers["foot_rollers"].speed, 4),
            "calf_rollers": round(self.rollers["calf_rollers"].speed, 4),
            "pump": round(self.pump.duty, 4),
            **{f"valve_{z}": self.valves[z].is_connected for z in ZONES},
            "heater": round(self.heater.duty, 4),
            "relay": self.relay.is_on,
        }

    @property
    def tripped(self) -> bool:
        """True while the outputs are latched off by ``trip()`` (until ``release()``)."""
        return self._tripped

    def trip(self) -> None:
        """Latch the outputs off: safe state now, and ``apply`` keeps them off until ``release()``."""
        with self._output_lock:
            self._tripped = True
            self.safe_off()

    def release(self) -> None:
        """After an accepted fault reset: ``apply`` may drive outputs again."""
        with self._output_lock:
            self._tripped = False

    def apply(self, command: Command) -> None:
        """Drive the outputs to ``command`` (everything off while tripped or without the relay)."""
        with self._output_lock:
            if self._tripped:
                self.safe_off()
                return
            self._apply(command)

    def _apply(self, command: Command) -> None:
        if not command.relay:
            if self._applied is not None or self.relay.is_on:
                self.safe_off()
            self._applied = None
            return
        last = self._applied if self.relay.is_on else None  # after a safe_off, write everything
        self._applied = None
        if last is None:
            self.relay.energise()
        if last is None or command.connected != last.connected:
            for zone, valve in self.valves.items():
                if zone in command.connected:
                    valve.connect()
                else:
                    valve.vent()
        pump = command.pump if command.connected else 0.0
        if last is None or pump != (last.pump if last.connected else 0.0):
            if pump > 0.0:
                self.pump.run(pump)
            else:
                self.pump.off()
        # Rollers every pass: a reversal completes only after its dwell.
        self.rollers["foot_rollers"].drive(command.foot_rollers)
        self.rollers["calf_rollers"].drive(command.calf_rollers)
        if last is None or command.heater != last.heater:
            self.heater.set_duty(min(command.heater, self.heater.max_duty))  # max_duty: a wiring limit
        self._applied = command

    def safe_off(self) -> None:
        """The driver-level safe state: heater, pump and rollers off, every zone venting, relay open.

        Each step runs even if an earlier one raised, so one failing driver cannot keep another on.
        """
        with self._output_lock:
            self._safe_off()

    def _safe_off(self) -> None:
        self._applied = None
        steps: list[Callable[[], None]] = [
            self.heater.off,
            self.pump.off,
            *(r.off for r in self.rollers.values()),
            *(v.vent for v in self.valves.values()),
            self.relay.drop,
        ]
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("safe_off: a step failed")

    def close(self) -> None:
        """Everything off, then release every pin (relay last); safe to call twice."""
        self.safe_off()
        for driver in reversed(self._opened):
            driver.close()

    # -- sensors ------------------------------------------------------------------------------

    def read_sample(self) -> Sample:
        """Read every sensor once; a bus failure yields a Sample with ``bus_error`` set."""
        now = self._clock()
        s = self.config.sensors
        models = self.models
        errors: dict[str, str] = {}
        temperature: dict[str, float | None] = {}
        pressure: dict[Zone, float | None] = {}
        current: dict[str, float | None] = {}
        rail: float | None = None
        try:
            for zone, p_in in s.pressure.items():
                volts = self.adcs[p_in.address].read_volts(p_in.channel)
                pressure[zone] = self._convert(models["pressure"][zone].mmhg, volts, zone, errors)
            supply = s.divider_supply
            supply_v = (
                self.adcs[supply.address].read_volts(supply.channel) / supply.volts_per_volt
                if supply is not None else None
            )
            for name, t_in in s.thermistors.items():
                volts = self.adcs[t_in.address].read_volts(t_in.channel)
                if supply is not None and supply_v is not None and (
                    abs(supply_v - t_in.supply_v) > t_in.supply_v * supply.tolerance
                ):
                    temperature[name] = None
                    errors[name] = (
                        f"divider supply reads {supply_v:.3f} V, not {t_in.supply_v} V "
                        f"± {supply.tolerance:.0%}"
                    )
                    continue
                thermistor: Thermistor = models["thermistors"][name]
                temperature[name] = self._convert(
                    partial(thermistor.celsius, supply_v=supply_v), volts, name, errors
                )
            for motor, c_in in s.motor_current.items():
                volts = self.adcs[c_in.address].read_volts(c_in.channel)
                amps = models["motor_current"][motor].amps(volts)
                current[motor] = amps
                self._last_current[motor] = amps
            rail = self.adcs[s.rail.address].read_volts(s.rail.channel) / s.rail.volts_per_volt
        except SensorBusError as exc:
            return Sample(
                t=now,
                temperature_c={n: None for n in s.thermistors},
                pressure_mmhg={z: None for z in ZONES},
                motor_current_a={m: None for m in s.motor_current},
                rail_v=None,
                outputs=self.outputs(),
                errors={"bus": str(exc)},
                bus_error=str(exc),
            )
        return Sample(
            t=now,
            temperature_c=temperature,
            pressure_mmhg=pressure,
            motor_current_a=current,
            rail_v=rail,
            outputs=self.outputs(),
            # A pass can be held between its time stamp and its reads (the OS took the core): the rate
            # rules judge over the longest time two readings can be apart.
            read_s=max(0.0, self._clock() - now),
            errors=errors,
        )

    @staticmethod
    def _convert(
        convert: Callable[[float], float], volts: float, name: str, errors: dict[str, str]
    ) -> float | None:
        try:
            return convert(volts)
        except SensorFault as exc:
            errors[name] = str(exc)
            return None


class Rig(Protocol):
    """What the app runs on: the unit's drivers and what comes with them (the Pi's own, or a simulation)."""

    @property
    def hardware(self) -> Hardware:
        """Every driver, built from the config."""

    @property
    def pin_factory(self) -> Any:
        """The panel's gpiozero pin factory; None for gpiozero's default (the Pi's GPIO)."""

    @property
    def wifi_signal(self) -> Callable[[], int | None] | None:
        """Reads the unit's Wi-Fi signal in dBm; None when the unit has no Wi-Fi of its own."""

    @property
    def description(self) -> str:
        """What the unit runs on, in a word or two, for the log."""

    def after_pass(self, passes: int) -> None:
        """After every pass of the running loop (``passes`` so far); must be quick."""

    def close(self) -> None:
        """After the outputs are off: close the hardware and whatever else the rig holds."""
