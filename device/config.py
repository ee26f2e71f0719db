"""The configuration: one pydantic model tree loaded from TOML, validated once at start-up."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drivers.pressure import pressure_limits_v
from drivers.thermistor import OPEN_FRACTION
from modes import limits

DEFAULT_CONFIG_PATH = Path("/etc/massager/massager.toml")
LOAD_PINS_LOW, LOAD_PINS_HIGH = 9, 27  # pulled down at reset: loads stay off while the Pi boots
BOOT_PULSING_PINS = frozenset({14, 15})  # UART pins toggle at boot
RAIL_MAX_V = 13.8  # the 12 V actuator rail at its highest (a charging lead-acid supply)
RESERVED_SENSOR_NAMES = frozenset({"bus", *limits.ZONES, "foot_rollers", "calf_rollers", "rail"})

Gpio = Annotated[int, Field(ge=0, le=27, description="BCM GPIO number")]
I2cAddress = Annotated[int, Field(ge=0x48, le=0x4B, description="ADS1115 address")]
AdcChannel = Annotated[int, Field(ge=0, le=3, description="ADS1115 single-ended input AINx")]


class ConfigError(ValueError):
    """A config file could not be read or is not valid; the message names the field."""


def _merged_with_defaults(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A per-zone (or per-motor) table that names some keys keeps the defaults of the others."""
    assert info.field_name is not None
    default = model.model_fields[info.field_name].default
    return {**default, **value} if isinstance(value, dict) else value


class Model(BaseModel):
    """Base of every config section: unknown keys and wrong types are errors, values are frozen."""

    # strict: "45" is not a temperature and true is not a pin; an int is still a valid float.
    # Arrays (TOML lists) and paths (TOML strings) opt out per field with Field(strict=False).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _tighten(value: float, cap: float, name: str, *, upper: bool = True, unit: str = "") -> None:
    """Refuse a value that loosens a hard cap."""
    if (upper and value > cap) or (not upper and value < cap):
        side = "above" if upper else "below"
        raise ValueError(
            f"{name} = {value}{unit} is {side} the hard cap {cap}{unit}; "
            "a config may tighten the safety envelope, never loosen it"
        )


class Pins(Model):
    """BCM pin map. Loads only on GPIO 9-27 (pulled down at reset), never on 14/15."""

    foot_rollers_forward: Gpio = 12
    foot_rollers_backward: Gpio = 13
    calf_rollers_forward: Gpio = 18
    calf_rollers_backward: Gpio = 19
    pump: Gpio = 16
    valve_foot: Gpio = 20
    valve_ankle: Gpio = 21
    valve_calf: Gpio = 26
    heater: Gpio = 23
    relay: Gpio = 24
    heartbeat: Gpio = 25
    button_power: Gpio = 5
    button_program: Gpio = 6
    button_intensity: Gpio = 7
    button_heat: Gpio = 0
    button_timer: Gpio = 1
    led_status_red: Gpio = 9
    led_status_green: Gpio = 10
    led_status_blue: Gpio = 11
    led_heat: Gpio = 17
    led_intensity: tuple[Gpio, Gpio, Gpio, Gpio, Gpio] = Field((22, 27, 14, 15, 8), strict=False)
    buzzer: Gpio = 4

    LOADS: ClassVar[tuple[str, ...]] = (
        "foot_rollers_forward",
        "foot_rollers_backward",
        "calf_rollers_forward",
        "calf_rollers_backward",
        "pump",
        "valve_foot",
        "valve_ankle",
        "valve_calf",
        "heater",
        "relay",
        "heartbeat",
    )

    @model_validator(mode="after")
    def _check_pins(self) -> Self:
        for name in self.LOADS:
            pin = getattr(self, name)
            if not LOAD_PINS_LOW <= pin <= LOAD_PINS_HIGH or pin in BOOT_PULSING_PINS:
                raise ValueError(
                    f"{name} = GPIO{pin}: loads must be on GPIO {LOAD_PINS_LOW}-{LOAD_PINS_HIGH} "
                    "(pulled down at reset), not 14 or 15 (they pulse at boot)"
                )
        seen: dict[int, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            for pin in value if isinstance(value, tuple) else (value,):
                if pin in (2, 3):
                    raise ValueError(f"{name} = GPIO{pin}: GPIO 2 and 3 carry the I2C bus")
                if pin in seen:
                    raise ValueError(f"{name} = GPIO{pin} is already used by {seen[pin]}")
                seen[pin] = name
        return self


class Adc(Model):
    """The ADS1115 converters on the I2C bus."""

    bus: int = Field(1, ge=0, le=22)
    addresses: tuple[I2cAddress, ...] = Field((0x48, 0x49, 0x4A), min_length=1, max_length=4, strict=False)
    full_scale_v: float = 4.096
    data_rate_sps: Literal[8, 16, 32, 64, 128, 250, 475, 860] = 860

    @model_validator(mode="after")
    def _pga(self) -> Self:
        if len(set(self.addresses)) != len(self.addresses):
            raise ValueError(f"addresses lists an address twice: {[hex(a) for a in self.addresses]}")
        if self.full_scale_v not in (6.144, 4.096, 2.048, 1.024, 0.512, 0.256):
            raise ValueError(
                f"full_scale_v = {self.full_scale_v} V is not an ADS1115 range "
                "(6.144, 4.096, 2.048, 1.024, 0.512 or 0.256)"
            )
        return self


class AdcInput(Model):
    """Where a sensor is wired: converter address and input channel."""

    address: I2cAddress
    channel: AdcChannel


class PressureInput(AdcInput):
    """A zone's pressure transducer and its calibration."""

    zero_v: float = Field(0.3, ge=0.1, le=2.0)  # a live zero: 0 V means the wire is open
    full_scale_v: float = Field(3.0, gt=0.5, le=5.0)
    full_scale_mmhg: float = Field(300.0, ge=150.0, le=1000.0)

    @model_validator(mode="after")
    def _span(self) -> Self:
        if self.full_scale_v <= self.zero_v + 0.5:
            raise ValueError(
                f"full_scale_v ({self.full_scale_v} V) must exceed zero_v ({self.zero_v} V) by 0.5 V"
            )
        return self


class ThermistorInput(AdcInput):
    """A heater NTC thermistor in a divider: beta equation parameters."""

    nominal_ohm: float = Field(10_000.0, ge=100.0, le=1_000_000.0)
    nominal_c: float = Field(25.0, ge=0.0, le=50.0)
    beta: float = Field(3950.0, ge=2000.0, le=6000.0)
    series_ohm: float = Field(10_000.0, ge=100.0, le=1_000_000.0)
    supply_v: float = Field(3.3, ge=1.0, le=5.0)


class CurrentInput(AdcInput):
    """A roller motor's current-sense amplifier."""

    volts_per_amp: float = Field(0.5, gt=0.01, le=10.0)


class RailInput(AdcInput):
    """The 12 V actuator rail sensed through a divider (proves the relay switched)."""

    volts_per_volt: float = Field(0.25, gt=0.01, le=1.0)


class SupplyInput(AdcInput):
    """The thermistor dividers' supply, measured so the thermistors read ratiometrically."""

    volts_per_volt: float = Field(1.0, gt=0.1, le=1.0)
    tolerance: float = Field(0.1, gt=0.0, le=0.2)  # a supply further off its nominal is a sensor fault


class Sensors(Model):
    """Every analog input: pressure per zone, two heater thermistors, motor currents, the rail."""

    pressure: dict[limits.Zone, PressureInput] = {
        "foot": PressureInput(address=0x48, channel=0),
        "ankle": PressureInput(address=0x48, channel=1),
        "calf": PressureInput(address=0x48, channel=2),
    }
    thermistors: dict[str, ThermistorInput] = Field(
        default={
            "pad_1": ThermistorInput(address=0x48, channel=3),
            "pad_2": ThermistorInput(address=0x49, channel=0),
        },
        min_length=2,
        max_length=2,
    )
    motor_current: dict[Literal["foot_rollers", "calf_rollers"], CurrentInput] = {
        "foot_rollers": CurrentInput(address=0x49, channel=1),
        "calf_rollers": CurrentInput(address=0x49, channel=2),
    }
    rail: RailInput = RailInput(address=0x49, channel=3)
    divider_supply: SupplyInput | None = SupplyInput(address=0x4A, channel=0)

    @field_validator("pressure", "motor_current", mode="before")
    @classmethod
    def _keep_other_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        return _merged_with_defaults(cls, value, info)

    @model_validator(mode="after")
    def _check_inputs(self) -> Self:
        for name in self.thermistors:
            if name in RESERVED_SENSOR_NAMES or not name.isidentifier() or not name.islower():
                raise ValueError(
                    f"thermistors.{name}: a thermistor name must be lower_case_with_underscores "
                    f"and not one of {', '.join(sorted(RESERVED_SENSOR_NAMES))}"
                )
        used: dict[tuple[int, int], str] = {}
        inputs: list[tuple[str, AdcInput]] = [
            *((f"pressure.{k}", v) for k, v in self.pressure.items()),
            *((f"thermistors.{k}", v) for k, v in self.thermistors.items()),
            *((f"motor_current.{k}", v) for k, v in self.motor_current.items()),
            ("rail", self.rail),
            *((("divider_supply", self.divider_supply),) if self.divider_supply is not None else ()),
        ]
        for name, inp in inputs:
            key = (inp.address, inp.channel)
            if key in used:
                raise ValueError(
                    f"{name} uses ADS1115 {inp.address:#x} AIN{inp.channel}, already used by {used[key]}"
                )
            used[key] = name
        return self


class Heater(Model):
    """The heating pad and its control."""

    max_duty: float = Field(1.0, gt=0.0, le=1.0)
    pwm_hz: int = Field(1, ge=1, le=10)
    default_target_c: float = Field(limits.HEAT_TARGET_DEFAULT_C, ge=limits.HEAT_TARGET_MIN_C)
    # The pad's rated thermal behaviour (energy-balance check): warming at full power with no loss,
    # its tolerance, and the largest loss coefficient to the air and the skin together.
    rated_c_per_s: float = Field(0.0595, ge=0.02, le=0.2)
    power_tolerance: float = Field(0.2, ge=0.0, le=0.2)  # larger would weaken HEAT_BALANCE
    loss_per_s: float = Field(0.0025, gt=0.0, le=0.0025)  # likewise

    @model_validator(mode="after")
    def _cap(self) -> Self:
        _tighten(self.default_target_c, limits.HEAT_TARGET_MAX_C, "default_target_c", unit=" °C")
        return self


class Motors(Model):
    """Roller motors."""

    max_speed: float = Field(1.0, gt=0.1, le=1.0)
    reverse_dwell_s: float = Field(0.3, ge=0.1, le=2.0)
    pwm_hz: int = Field(1000, ge=50, le=20_000)


class Safety(Model):
    """The safety envelope (DESIGN.md section 3). Every value may only be tightened."""

    trip_temp_c: float = Field(limits.TRIP_TEMP_C, ge=30.0)
    heat_target_max_c: float = Field(limits.HEAT_TARGET_MAX_C, ge=limits.HEAT_TARGET_MIN_C)
    over_target_margin_c: float = Field(limits.OVER_TARGET_MARGIN_C, gt=0.0)
    over_target_s: float = Field(limits.OVER_TARGET_S, gt=0.0)
    runaway_rise_c: float = Field(limits.RUNAWAY_RISE_C, gt=0.0)
    runaway_window_s: float = Field(limits.RUNAWAY_WINDOW_S, ge=2.0)
    not_heating_gain_c: float = Field(limits.NOT_HEATING_GAIN_C, le=10.0)
    not_heating_window_s: float = Field(limits.NOT_HEATING_WINDOW_S, ge=10.0)
    sensor_min_c: float = Field(limits.SENSOR_MIN_C, le=20.0)
    sensor_max_c: float = Field(limits.SENSOR_MAX_C, ge=50.0)
    sensor_bad_samples: int = Field(limits.SENSOR_BAD_SAMPLES, ge=1)
    sensor_stale_s: float = Field(limits.SENSOR_STALE_S, ge=0.1)
    sensor_max_rate_c_per_s: float = Field(limits.SENSOR_MAX_RATE_C_PER_S, ge=0.5)
    sensor_disagree_c: float = Field(limits.SENSOR_DISAGREE_C, ge=0.5)
    sensor_disagree_s: float = Field(limits.SENSOR_DISAGREE_S, ge=0.5)
    pressure_trip_mmhg: dict[limits.Zone, float] = dict(limits.PRESSURE_TRIP_MMHG)
    pressure_cap_mmhg: dict[limits.Zone, float] = dict(limits.PRESSURE_CAP_MMHG)
    not_rising_s: float = Field(limits.NOT_RISING_S, ge=0.5)
    not_rising_min_rise_mmhg: float = Field(limits.NOT_RISING_MIN_RISE_MMHG, le=30.0)
    setpoint_reach_s: float = Field(limits.SETPOINT_REACH_S, ge=3.0)
    vented_mmhg: float = Field(limits.VENTED_MMHG, ge=2.0)
    vent_deadline_s: float = Field(limits.VENT_DEADLINE_S, ge=1.0)
    pump_max_on_s: float = Field(limits.PUMP_MAX_ON_S, ge=3.0)
    compression_max_s: float = Field(limits.COMPRESSION_MAX_S, ge=10.0)
    stall_current_a: float = Field(limits.STALL_CURRENT_A, ge=0.5)
    stall_s: float = Field(limits.STALL_S, ge=0.1)
    stall_amps_per_duty: float = Field(limits.STALL_AMPS_PER_DUTY, ge=2.5)
    bus_errors_max: int = Field(limits.BUS_ERRORS_MAX, ge=1)
    loop_stale_s: float = Field(limits.LOOP_STALE_S, ge=0.15)

    @field_validator("pressure_trip_mmhg", "pressure_cap_mmhg", mode="before")
    @classmethod
    def _keep_other_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        return _merged_with_defaults(cls, value, info)

    @model_validator(mode="after")
    def _never_loosen(self) -> Self:
        upper = {  # larger is looser
            "trip_temp_c": limits.TRIP_TEMP_C,
            "heat_target_max_c": limits.HEAT_TARGET_MAX_C,
            "over_target_margin_c": limits.OVER_TARGET_MARGIN_C,
            "over_target_s": limits.OVER_TARGET_S,
            "runaway_rise_c": limits.RUNAWAY_RISE_C,
            "runaway_window_s": limits.RUNAWAY_WINDOW_S,
            "not_heating_window_s": limits.NOT_HEATING_WINDOW_S,
            "sensor_max_c": limits.SENSOR_MAX_C,
            "sensor_bad_samples": limits.SENSOR_BAD_SAMPLES,
            "sensor_stale_s": limits.SENSOR_STALE_S,
            "sensor_max_rate_c_per_s": limits.SENSOR_MAX_RATE_C_PER_S,
            "sensor_disagree_c": limits.SENSOR_DISAGREE_C,
            "sensor_disagree_s": limits.SENSOR_DISAGREE_S,
            "not_rising_s": limits.NOT_RISING_S,
            "setpoint_reach_s": limits.SETPOINT_REACH_S,
            "vented_mmhg": limits.VENTED_MMHG,
            "vent_deadline_s": limits.VENT_DEADLINE_S,
            "pump_max_on_s": limits.PUMP_MAX_ON_S,
            "compression_max_s": limits.COMPRESSION_MAX_S,
            "stall_current_a": limits.STALL_CURRENT_A,
            "stall_s": limits.STALL_S,
            "stall_amps_per_duty": limits.STALL_AMPS_PER_DUTY,
            "bus_errors_max": limits.BUS_ERRORS_MAX,
            "loop_stale_s": limits.LOOP_STALE_S,
        }
        for name, cap in upper.items():
            _tighten(getattr(self, name), cap, name)
        lower = {  # smaller is looser
            "not_heating_gain_c": limits.NOT_HEATING_GAIN_C,
            "sensor_min_c": limits.SENSOR_MIN_C,
            "not_rising_min_rise_mmhg": limits.NOT_RISING_MIN_RISE_MMHG,
        }
        for name, cap in lower.items():
            _tighten(getattr(self, name), cap, name, upper=False)
        # A shorter window with the same rise needs a faster climb to trip: compare rates too.
        rate = self.runaway_rise_c / self.runaway_window_s
        cap_rate = limits.RUNAWAY_RISE_C / limits.RUNAWAY_WINDOW_S
        if rate > cap_rate + 1e-12:
            raise ValueError(
                f"runaway_rise_c / runaway_window_s = {self.runaway_rise_c} °C / {self.runaway_window_s} s "
                f"= {rate:.3f} °C/s is above the hard cap {cap_rate:.3f} °C/s; "
                "a config may tighten the safety envelope, never loosen it"
            )
        for zone in limits.ZONES:
            trip = self.pressure_trip_mmhg[zone]
            cap = self.pressure_cap_mmhg[zone]
            _tighten(trip, limits.PRESSURE_TRIP_MMHG[zone], f"pressure_trip_mmhg.{zone}", unit=" mmHg")
            _tighten(cap, limits.PRESSURE_CAP_MMHG[zone], f"pressure_cap_mmhg.{zone}", unit=" mmHg")
            if cap <= 10.0:
                raise ValueError(f"pressure_cap_mmhg.{zone} = {cap} mmHg is too low to massage")
            if cap >= trip:
                raise ValueError(
                    f"pressure_cap_mmhg.{zone} = {cap} mmHg must be below its trip {trip} mmHg"
                )
        if self.heat_target_max_c >= self.trip_temp_c:
            raise ValueError(
                f"heat_target_max_c = {self.heat_target_max_c} °C must be below "
                f"trip_temp_c = {self.trip_temp_c} °C"
            )
        return self


class Session(Model):
    """Session defaults."""

    timer_default_min: int = Field(limits.TIMER_DEFAULT_MIN, ge=limits.TIMER_MIN_MIN)
    timer_max_min: int = Field(limits.TIMER_MAX_MIN, ge=limits.TIMER_MIN_MIN)
    default_program: str = Field("relax", min_length=1, max_length=40)
    default_intensity: int = Field(2, ge=limits.INTENSITY_MIN, le=limits.INTENSITY_MAX)
    skip_zones: tuple[limits.Zone, ...] = Field((), strict=False)

    @model_validator(mode="after")
    def _caps(self) -> Self:
        _tighten(self.timer_max_min, limits.TIMER_MAX_MIN, "timer_max_min", unit=" min")
        if self.timer_default_min > self.timer_max_min:
            raise ValueError(
                f"timer_default_min = {self.timer_default_min} exceeds timer_max_min = "
                f"{self.timer_max_min}"
            )
        return self


class Panel(Model):
    """Buttons, LEDs and the buzzer."""

    buzzer_muted: bool = False
    bounce_s: float = Field(0.03, ge=0.0, le=0.5)
    long_press_s: float = Field(3.0, ge=1.0, le=10.0)
    child_lock_hold_s: float = Field(3.0, ge=1.0, le=10.0)


class Tls(Model):
    """TLS towards the broker."""

    enabled: bool = False
    ca_file: Path | None = Field(None, strict=False)  # None: the system's CAs
    cert_file: Path | None = Field(None, strict=False)
    key_file: Path | None = Field(None, strict=False)
    insecure: bool = False  # skip host name checks (test brokers only)


class Mqtt(Model):
    """The MQTT broker connection and topics."""

    enabled: bool = True
    host: str = Field("localhost", min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = Field(None, max_length=256)
    password: str | None = Field(None, max_length=1024, repr=False)
    password_file: Path | None = Field(None, strict=False)
    tls: Tls = Tls()
    client_id: str = Field("", max_length=64)  # empty: massager-<device id>
    keepalive_s: int = Field(30, ge=5, le=3600)
    topic_prefix: str = Field("massager", min_length=1, max_length=64, pattern=r"^[^#+/\s]+$")
    protocol: Literal["3.1.1", "5"] = "5"
    discovery: bool = True
    discovery_prefix: str = Field("homeassistant", min_length=1, max_length=64, pattern=r"^[^#+\s]+$")

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self

    def read_password(self) -> str | None:
        """The password from the config or its file (never logged)."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file}: {exc}") from exc
        return self.password


class DeviceInfo(Model):
    """How the unit introduces itself to Home Assistant (the device page) and to people."""

    name: str = Field("", max_length=64)  # "" = "Massager <device id>"
    manufacturer: str = Field("Massager firmware project", min_length=1, max_length=64)
    model: str = Field("Shiatsu foot-and-calf massager", min_length=1, max_length=64)
    hw_version: str = Field("", max_length=32)  # "" = not shown
    serial_number: str = Field("", max_length=64)  # "" = the Pi's serial number, else the device id
    suggested_area: str = Field("", max_length=64)  # "" = none; e.g. "Living room"
    web_remote: bool = False  # the phone remote runs on this unit: its page at http://<host name>.local/
    configuration_url: str = Field("", max_length=256, pattern=r"^(https?://\S+)?$")  # overrides web_remote

    def resolved_name(self, device_id: str) -> str:
        """The friendly name: the configured one, else ``Massager <device id>``."""
        return self.name.strip() or f"Massager {device_id}"

    def resolved_configuration_url(self, hostname: str | None = None) -> str | None:
        """The device's web page for Home Assistant's "Visit" link, or None when it has none."""
        if self.configuration_url:
            return self.configuration_url
        if self.web_remote:
            return f"http://{hostname or socket.gethostname()}.local/"
        return None


class Config(Model):
    """The whole configuration."""

    device_id: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_-]*$")
    state_dir: Path = Field(Path("/var/lib/massager"), strict=False)
    programs_dir: Path | None = Field(Path("/etc/massager/programs"), strict=False)
    pins: Pins = Pins()
    adc: Adc = Adc()
    sensors: Sensors = Sensors()
    heater: Heater = Heater()
    motors: Motors = Motors()
    safety: Safety = Safety()
    session: Session = Session()
    panel: Panel = Panel()
    mqtt: Mqtt = Mqtt()
    device: DeviceInfo = DeviceInfo()

    @model_validator(mode="before")
    @classmethod
    def _no_third_converter(cls, data: Any) -> Any:
        """A unit whose adc.addresses leave out the divider-supply converter reads without it."""
        if not isinstance(data, dict):
            return data
        adc, sensors = data.get("adc"), data.get("sensors")
        addresses = adc.get("addresses") if isinstance(adc, dict) else None
        given = isinstance(sensors, dict) and "divider_supply" in sensors
        default = Sensors.model_fields["divider_supply"].default
        if isinstance(addresses, list | tuple) and not given and default.address not in addresses:
            sensors = sensors if isinstance(sensors, dict) else {}
            data = {**data, "sensors": {**sensors, "divider_supply": None}}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        for name, inp in self._adc_inputs():
            if inp.address not in self.adc.addresses:
                raise ValueError(
                    f"sensors.{name}.address {inp.address:#x} is not one of adc.addresses "
                    f"({', '.join(f'{a:#x}' for a in self.adc.addresses)})"
                )
        self._check_signal_ranges()
        if self.heater.default_target_c > self.safety.heat_target_max_c:
            raise ValueError(
                f"heater.default_target_c = {self.heater.default_target_c} °C is above "
                f"safety.heat_target_max_c = {self.safety.heat_target_max_c} °C"
            )
        return self

    def _check_signal_ranges(self) -> None:
        """Every fault signal must stay inside the ADC's range, or a broken wire reads as a value."""
        fsr = self.adc.full_scale_v
        hint = f"above adc.full_scale_v = {fsr} V, so the ADC would clip it"
        for name, t_in in self.sensors.thermistors.items():
            open_v = t_in.supply_v * OPEN_FRACTION
            if open_v >= fsr:
                raise ValueError(
                    f"sensors.thermistors.{name}.supply_v = {t_in.supply_v} V: an open thermistor "
                    f"reads {open_v:.2f} V, {hint} and an open sensor would read as a cold pad"
                )
        for zone, p_in in self.sensors.pressure.items():
            short_v = pressure_limits_v(p_in.zero_v, p_in.full_scale_v)[1]
            if short_v >= fsr:
                raise ValueError(
                    f"sensors.pressure.{zone}.full_scale_v = {p_in.full_scale_v} V: the short-circuit "
                    f"threshold {short_v:.2f} V is {hint}"
                )
        rail_v = RAIL_MAX_V * self.sensors.rail.volts_per_volt
        if rail_v >= fsr:
            raise ValueError(
                f"sensors.rail.volts_per_volt = {self.sensors.rail.volts_per_volt}: a {RAIL_MAX_V} V rail "
                f"reads {rail_v:.2f} V, {hint}"
            )

    def _adc_inputs(self) -> list[tuple[str, AdcInput]]:
        s = self.sensors
        return [
            *((f"pressure.{k}", v) for k, v in s.pressure.items()),
            *((f"thermistors.{k}", v) for k, v in s.thermistors.items()),
            *((f"motor_current.{k}", v) for k, v in s.motor_current.items()),
            ("rail", s.rail),
            *((("divider_supply", s.divider_supply),) if s.divider_supply is not None else ()),
        ]

    @property
    def resolved_device_id(self) -> str:
        """The device id from the config, else the Pi's serial number, else the host name."""
        return self.device_id or default_device_id()


def pi_serial_number() -> str:
    """The Pi's serial number (without leading zeros), or "" when this is no Pi."""
    serial = ""
    for path in (Path("/sys/firmware/devicetree/base/serial-number"), Path("/proc/cpuinfo")):
        try:
            text = path.read_text(encoding="ascii", errors="ignore")
        except OSError:
            continue
        if path.name == "cpuinfo":
            for line in text.splitlines():
                if line.startswith("Serial"):
                    serial = line.split(":", 1)[1].strip()
        else:
            serial = text.strip("\x00\n ")
        if serial:
            break
    return serial.lstrip("0")


def default_device_id() -> str:
    """The Pi's serial number when there is one, else the host name, reduced to [A-Za-z0-9_-]."""
    raw = pi_serial_number() or socket.gethostname()
    cleaned = "".join(c if c.isalnum() or c in "_-" else "-" for c in raw)
    return cleaned[:64] or "massager"


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: the dotted field path, the reason, and the value given."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see device/default.toml)"
        given = err.get("input")
        secret = any("password" in str(p) for p in err["loc"])
        hidden = secret or isinstance(given, dict) or err["type"] == "missing" or not loc
        shown = "" if hidden else f" (got {given!r})"
        lines.append(f"{source}: {loc}: {msg}{shown}" if loc else f"{source}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a config mapping; raises ConfigError naming each bad field."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a TOML config (built-in defaults when ``path`` is None), then apply overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: bad TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {part}: must be a table to take the override {dotted}")
        node[leaf] = value
    return parse_config(data, source)
