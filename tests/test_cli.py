"""The command line: argument errors, config overrides, run without GPIO, safe-off."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from device import app as app_module
from device import sim
from device.app import sim_app_from_args
from device.cli import build_parser, config_from_args, main
from drivers.sim.plant import PlantParams


def test_cli_run_without_gpio_says_to_use_sim(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(app_module, "has_gpio", lambda: False)
    assert main(["run", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no GPIO" in err and "massager run --sim" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--sim", "--mqtt-port", "70000"], "--mqtt-port: must be 1-65535, got 70000"),
        (["run", "--sim", "--mqtt-port", "many"], "--mqtt-port: must be a whole number"),
        (["bench", "--repeat", "0"], "--repeat: must be 1-50, got 0"),
        (["bench", "--repeat", "2.5"], "--repeat: must be a whole number, got '2.5'"),
        (["run", "--sim", "--time-scale", "0"], "--time-scale: must be between 0.1 and 1000"),
        (["run", "--sim", "--log-level", "loud"], "--log-level: invalid choice"),
        (["programs", "--colour"], "unrecognized arguments: --colour"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_cli_bad_arguments_exit_2_naming_the_option(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert words in capsys.readouterr().err


def test_cli_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "massager.toml"
    config_file.write_text('device_id = "from-file"\n[mqtt]\nhost = "broker.local"\nport = 1884\n')
    args = build_parser().parse_args(
        ["programs", "--config", str(config_file), "--mqtt-port", "2883", "--state-dir", str(tmp_path)]
    )
    config = config_from_args(args)
    assert config.device_id == "from-file"
    assert config.mqtt.host == "broker.local"
    assert config.mqtt.port == 2883
    assert config.state_dir == tmp_path


def test_cli_bad_override_is_a_config_error_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--device-id", "has spaces"]) == 1
    assert "device_id" in capsys.readouterr().err


def test_cli_safe_off_on_mock_pins_reports_every_output_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["safe-off", "--sim"]) == 0
    assert "every output is off" in capsys.readouterr().out


def test_cli_safe_off_without_gpio_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(app_module, "has_gpio", lambda: False)
    assert main(["safe-off"]) == 2
    assert "no GPIO" in capsys.readouterr().err


def test_cli_every_documented_command_has_a_parser() -> None:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(actions[0].choices)
    assert {"run", "check-config", "programs", "selftest", "faults", "bench", "info", "safe-off"} <= commands


def test_cli_run_on_a_pi_without_i2c_says_how_to_enable_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import smbus2

    def no_bus(bus: int) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(app_module, "has_gpio", lambda: True)
    monkeypatch.setattr(smbus2, "SMBus", no_bus)
    assert main(["run", "--state-dir", str(tmp_path)]) == 1
    assert "cannot open I2C bus 1 (/dev/i2c-1)" in caplog.text
    assert "dtparam=i2c_arm=on" in caplog.text


def test_cli_safe_off_switches_outputs_off_even_without_the_i2c_bus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ExecStopPost runs safe-off after a crash; a dead I2C bus must not stop it driving pins off."""
    import smbus2
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    def no_bus(bus: int) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    factory = MockFactory(pin_class=MockPWMPin)
    monkeypatch.setattr(Device, "pin_factory", factory)
    monkeypatch.setattr(app_module, "has_gpio", lambda: True)
    monkeypatch.setattr(smbus2, "SMBus", no_bus)
    assert main(["safe-off"]) == 0
    assert "every output is off" in capsys.readouterr().out
    relay = factory.pin(24)
    assert relay.state == 0 and relay.function == "input"  # driven off, then released


def test_cli_plant_seed_must_be_a_whole_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--sim", "--plant-seed", "lucky"])
    assert exited.value.code == 2
    assert "--plant-seed: must be a whole number, got 'lucky'" in capsys.readouterr().err


def test_cli_plant_seed_without_sim_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--plant-seed", "3", "--state-dir", str(tmp_path)]) == 2
    assert "--plant-seed works only with --sim" in capsys.readouterr().err


def test_cli_no_plant_feed_without_sim_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--no-plant-feed", "--state-dir", str(tmp_path)]) == 2
    assert "--no-plant-feed works only with --sim" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [[], ["--no-plant-feed"]])
def test_cli_no_plant_feed_leaves_out_sim_plant_only(flag: list[str], tmp_path: Path) -> None:
    args = build_parser().parse_args(["run", "--sim", "--state-dir", str(tmp_path), *flag])
    app = sim_app_from_args(args, config_from_args(args))
    try:
        [extension] = app.mqtt_extensions
        assert [feed.topic for feed in extension.feeds] == ([] if flag else [sim.PLANT_TOPIC])
        assert [request.topic for request in extension.requests] == [sim.FAULT_TOPIC]  # faults still injectable
    finally:
        app.rig.close()


@pytest.mark.parametrize("seed", [None, 11])
def test_cli_plant_seed_draws_the_apps_plant(seed: int | None, tmp_path: Path) -> None:
    seed_args = ["--plant-seed", str(seed)] if seed is not None else []
    args = build_parser().parse_args(["run", "--sim", "--state-dir", str(tmp_path), *seed_args])
    assert args.plant_seed == seed
    app = sim_app_from_args(args, config_from_args(args))
    try:
        expected = PlantParams() if seed is None else PlantParams.draw(seed)
        assert app.rig.plant.params == dataclasses.replace(expected, deadman_timeout_s=sim.DEADMAN_HW_S)
    finally:
        app.rig.close()
