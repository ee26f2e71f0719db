"""The configuration: the shipped example, every kind of bad config, and ``massager check-config``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from device import cli
from device.config import Config, ConfigError, load_config
from modes import limits

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "device" / "default.toml"
MASSAGER = Path(sys.executable).parent / "massager"


def write(tmp_path: Path, text: str, name: str = "massager.toml") -> Path:
    """A config file with ``text`` in it."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the shipped example --------------------------------------------------------------------------


def test_example_config_validates_and_equals_the_built_in_defaults() -> None:
    assert load_config(EXAMPLE) == Config()


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_example_config_writes_out_every_key() -> None:
    """Every setting appears in the example; unset ones (None) as a commented-out line."""
    text = EXAMPLE.read_text(encoding="utf-8")
    written = flatten(tomllib.loads(text))
    for key, value in flatten(Config().model_dump()).items():
        if value is None:
            assert f"# {key.rsplit('.', 1)[-1]} = " in text, f"{key} is not shown"
        else:
            assert key in written, f"{key} is missing from {EXAMPLE.name}"


def test_defaults_match_the_hard_caps() -> None:
    c = Config()
    assert c.safety.trip_temp_c == limits.TRIP_TEMP_C == 45.0
    assert c.safety.pressure_trip_mmhg == {"foot": 135.0, "ankle": 95.0, "calf": 75.0}
    assert c.safety.pressure_cap_mmhg == {"foot": 120.0, "ankle": 80.0, "calf": 60.0}
    assert c.session.timer_max_min == 30 and c.session.timer_default_min == 15
    assert c.heater.default_target_c == 40.0 and c.safety.heat_target_max_c == 42.0
    loads = [getattr(c.pins, name) for name in c.pins.LOADS]
    assert all(9 <= pin <= 27 and pin not in (14, 15) for pin in loads)
    assert c.adc.addresses == (0x48, 0x49, 0x4A)  # the third reads the thermistor divider supply
    assert c.sensors.thermistors["pad_1"].beta == 3950.0


def test_tightened_config_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, """
[safety]
trip_temp_c = 43
heat_target_max_c = 39.5
runaway_rise_c = 0.2
runaway_window_s = 5
not_heating_gain_c = 2
pump_max_on_s = 8
[safety.pressure_trip_mmhg]
calf = 50
[safety.pressure_cap_mmhg]
calf = 40
foot = 90
[heater]
default_target_c = 38
[session]
timer_max_min = 20
timer_default_min = 10
skip_zones = ["calf"]
""")
    c = load_config(path)
    assert c.safety.trip_temp_c == 43.0
    assert c.safety.pressure_cap_mmhg == {"foot": 90.0, "ankle": 80.0, "calf": 40.0}
    assert c.session.skip_zones == ("calf",)


def test_a_zone_table_keeps_the_defaults_of_the_zones_it_does_not_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
[adc]
full_scale_v = 6.144  # a 0.5-4.5 V transducer needs the widest range
[safety.pressure_cap_mmhg]
calf = 40
[sensors.pressure.foot]
address = 0x48
channel = 0
zero_v = 0.5
full_scale_v = 4.5
""")
    c = load_config(path)
    assert c.safety.pressure_cap_mmhg == {"foot": 120.0, "ankle": 80.0, "calf": 40.0}
    assert c.safety.pressure_trip_mmhg == limits.PRESSURE_TRIP_MMHG
    assert c.sensors.pressure["foot"].full_scale_v == 4.5
    assert c.sensors.pressure["calf"] == Config().sensors.pressure["calf"]


def test_overrides_apply_on_top_of_the_file() -> None:
    c = load_config(EXAMPLE, {"mqtt.port": 1999, "mqtt.host": "broker.lan", "device_id": "unit-7"})
    assert (c.mqtt.port, c.mqtt.host, c.device_id) == (1999, "broker.lan", "unit-7")
    assert c.resolved_device_id == "unit-7"


# -- bad configs: each names the field and the reason ---------------------------------------------

BAD_CONFIGS = [
    pytest.param('colour = "red"\n', "colour", "unknown key", id="unknown-top-level-key"),
    pytest.param("[heater]\nmax_dutty = 0.5\n", "heater.max_dutty", "unknown key", id="unknown-nested-key"),
    pytest.param("[heaters]\nmax_duty = 0.5\n", "heaters", "unknown key", id="unknown-section"),
    pytest.param("[heater]\nmax_duty = 1.5\n", "heater.max_duty", "less than or equal to 1",
                 id="out-of-range"),
    pytest.param("[mqtt]\nport = 70000\n", "mqtt.port", "less than or equal to 65535", id="port-range"),
    pytest.param('[mqtt]\nport = "1883"\n', "mqtt.port", "valid integer", id="wrong-type-string-port"),
    pytest.param('[safety]\ntrip_temp_c = "44"\n', "safety.trip_temp_c", "valid number",
                 id="wrong-type-string-number"),
    pytest.param("[pins]\npump = true\n", "pins.pump", "valid integer", id="wrong-type-bool-pin"),
    pytest.param("pins = 5\n", "pins", "valid dictionary", id="wrong-type-section"),
    pytest.param("[safety]\ntrip_temp_c = 50\n", "trip_temp_c", "above the hard cap 45.0",
                 id="loosen-trip-temp"),
    pytest.param("[safety]\nheat_target_max_c = 44\n", "heat_target_max_c", "above the hard cap 42.0",
                 id="loosen-heat-target"),
    pytest.param("[safety.pressure_trip_mmhg]\ncalf = 80\n", "pressure_trip_mmhg.calf",
                 "above the hard cap 75.0", id="loosen-pressure-trip"),
    pytest.param("[safety.pressure_cap_mmhg]\nfoot = 125\n", "pressure_cap_mmhg.foot",
                 "above the hard cap 120.0", id="loosen-pressure-cap"),
    pytest.param("[session]\ntimer_max_min = 45\n", "timer_max_min", "above the hard cap 30",
                 id="loosen-timer-max"),
    pytest.param("[safety]\nstall_current_a = 3\n", "stall_current_a", "above the hard cap 2.0",
                 id="loosen-stall-current"),
    pytest.param("[safety]\nsensor_min_c = -20\n", "sensor_min_c", "below the hard cap -10.0",
                 id="loosen-sensor-min"),
    pytest.param("[safety]\nrunaway_window_s = 2\n", "runaway_rise_c / runaway_window_s",
                 "above the hard cap 0.050 °C/s", id="loosen-runaway-rate"),
    pytest.param("[safety.pressure_cap_mmhg]\ncalf = 60\n[safety.pressure_trip_mmhg]\ncalf = 55\n",
                 "pressure_cap_mmhg.calf", "must be below its trip 55.0", id="cap-above-trip"),
    pytest.param("[safety.pressure_trip_mmhg]\nknee = 40\n", "safety.pressure_trip_mmhg.knee",
                 "'foot', 'ankle' or 'calf'", id="unknown-zone"),
    pytest.param("[pins]\npump = 20\n", "valve_foot = GPIO20", "already used by pump", id="duplicate-pin"),
    pytest.param("[pins]\nrelay = 5\n", "relay = GPIO5", "loads must be on GPIO 9-27",
                 id="load-below-gpio-9"),
    pytest.param("[pins]\nheater = 14\n", "heater = GPIO14", "not 14 or 15", id="load-on-uart-pin"),
    pytest.param("[pins]\nbuzzer = 3\n", "buzzer = GPIO3", "I2C bus", id="pin-on-i2c"),
    pytest.param("[pins]\npump = 28\n", "pins.pump", "less than or equal to 27", id="pin-beyond-27"),
    pytest.param("[adc]\naddresses = [0x48]\n", "sensors.thermistors.pad_2.address 0x49",
                 "not one of adc.addresses", id="adc-address-not-listed"),
    pytest.param("[adc]\naddresses = [0x48, 0x48]\n", "addresses", "lists an address twice",
                 id="adc-address-twice"),
    pytest.param("[adc]\nfull_scale_v = 3.3\n", "adc", "not an ADS1115 range", id="bad-pga"),
    pytest.param("[adc]\ndata_rate_sps = 100\n", "adc.data_rate_sps", "Input should be 8, 16",
                 id="bad-data-rate"),
    pytest.param("[sensors.rail]\naddress = 0x48\nchannel = 0\n",
                 "rail uses ADS1115 0x48 AIN0", "already used by pressure.foot", id="two-sensors-one-input"),
    pytest.param("[sensors.thermistors.pad_1]\naddress = 0x48\nchannel = 3\nsupply_v = 5.0\n"
                 "[sensors.thermistors.pad_2]\naddress = 0x49\nchannel = 0\n",
                 "sensors.thermistors.pad_1.supply_v", "the ADC would clip it", id="open-thermistor-clipped"),
    pytest.param("[adc]\nfull_scale_v = 2.048\n", "supply_v", "the ADC would clip it",
                 id="pga-too-small-for-signals"),
    pytest.param("[sensors.pressure.foot]\naddress = 0x48\nchannel = 0\nzero_v = 0.0\n",
                 "sensors.pressure.foot.zero_v", "greater than or equal to 0.1", id="pressure-dead-zero"),
    pytest.param("[sensors.thermistors.pad_1]\naddress = 0x48\nchannel = 3\n", "sensors.thermistors",
                 "at least 2 items", id="one-thermistor"),
    pytest.param("[sensors.pressure.foot]\nchannel = 0\n", "sensors.pressure.foot.address",
                 "Field required", id="missing-required-key"),
    pytest.param("[sensors.thermistors.foot]\naddress = 0x48\nchannel = 3\n"
                 "[sensors.thermistors.pad_2]\naddress = 0x49\nchannel = 0\n",
                 "thermistors.foot", "a thermistor name must be", id="thermistor-name-clash"),
    pytest.param("[heater]\ndefault_target_c = 41\n[safety]\nheat_target_max_c = 39\n",
                 "heater.default_target_c = 41.0", "above safety.heat_target_max_c", id="target-above-max"),
    pytest.param("[session]\ntimer_default_min = 25\ntimer_max_min = 20\n", "timer_default_min = 25",
                 "exceeds timer_max_min", id="timer-default-above-max"),
    pytest.param('[mqtt]\ntopic_prefix = "a/b"\n', "mqtt.topic_prefix", "should match pattern",
                 id="topic-prefix-slash"),
    pytest.param('[mqtt]\npassword = "x"\npassword_file = "/etc/p"\n', "mqtt", "not both",
                 id="two-passwords"),
]


@pytest.mark.parametrize(("text", "field", "reason"), BAD_CONFIGS)
def test_bad_config_names_the_field_and_the_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(f"{path}: ")
    assert field in message
    assert reason in message


def test_every_problem_of_a_file_is_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "[heater]\nmax_duty = 2\npwm_hz = 0\n[mqtt]\nport = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["heater.max_duty", "heater.pwm_hz", "mqtt.port"]


def test_bad_password_is_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\npassword = 31415926\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "mqtt.password" in str(info.value) and "valid string" in str(info.value)
    assert "31415926" not in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read the config file: No such file"):
        load_config(missing)
    with pytest.raises(ConfigError, match=r"cannot read the config file: Is a directory"):
        load_config(tmp_path)


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[pins\npump = 16\n")
    with pytest.raises(ConfigError, match=r"massager.toml: bad TOML: .*line 1"):
        load_config(path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('device_id = "fußmassage"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text"):
        load_config(path)


def test_override_into_a_value_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt = 5\n")
    with pytest.raises(ConfigError, match=r"mqtt: must be a table"):
        load_config(path, {"mqtt.port": 1884})


# -- massager check-config ------------------------------------------------------------------------


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr()
    assert f"{EXAMPLE}: OK" in out.out
    assert out.err == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[safety]\ntrip_temp_c = 50\n", "safety: trip_temp_c = 50.0 is above the hard cap 45.0"),
        ("[pins]\nheatr = 23\n", "pins.heatr: unknown key"),
        ("[pins\n", "bad TOML"),
    ],
)
def test_check_config_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    assert cli.main(["check-config", str(path)]) == 1
    out = capsys.readouterr()
    assert expected in out.err
    assert out.out == ""


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(tmp_path / "gone.toml")]) == 1
    assert "gone.toml: cannot read the config file" in capsys.readouterr().err


def test_check_config_console_script(tmp_path: Path) -> None:
    good = subprocess.run([str(MASSAGER), "check-config", str(EXAMPLE)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = write(tmp_path, "[safety.pressure_cap_mmhg]\nankle = 90\n")
    result = subprocess.run([str(MASSAGER), "check-config", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "pressure_cap_mmhg.ankle = 90.0 mmHg is above the hard cap 80.0 mmHg" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_config_non_finite_per_zone_pressure_is_refused(tmp_path: Path, value: str) -> None:
    """TOML allows nan/inf; a nan trip would compare false forever and disable OVER_PRESSURE."""
    path = tmp_path / "massager.toml"
    path.write_text(f"[safety.pressure_trip_mmhg]\nfoot = {value}\n")
    with pytest.raises(ConfigError, match=r"safety\.pressure_trip_mmhg\.foot: Input should be a finite number"):
        load_config(path)


def test_a_unit_without_the_third_converter_reads_thermistors_without_the_supply(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text("[adc]\naddresses = [0x48, 0x49]\n", encoding="utf-8")
    assert load_config(path).sensors.divider_supply is None
    path.write_text("[adc]\naddresses = [0x48, 0x49]\n[sensors.divider_supply]\naddress = 0x4A\nchannel = 0\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"divider_supply\.address 0x4a is not one of adc\.addresses"):
        load_config(path)


@pytest.mark.parametrize(("key", "value"), [("power_tolerance", 0.3), ("loss_per_s", 0.004)])
def test_heat_balance_model_may_only_be_tightened(tmp_path: Path, key: str, value: float) -> None:
    path = tmp_path / "loose.toml"
    path.write_text(f"[heater]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"heater\.{key}"):
        load_config(path)
