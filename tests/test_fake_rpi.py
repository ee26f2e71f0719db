"""The RPi.GPIO pin backend path, driven through one of our drivers with fake_rpi's fake RPi.GPIO."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from drivers.switches import ZoneValve

PI_3B_REVISION = 0xA02082  # a Raspberry Pi 3 Model B: gpiozero reads its header layout from this
MODULES = ("RPi", "RPi.GPIO", "gpiozero.pins.rpigpio")


@pytest.fixture
def fake_gpio() -> Iterator[Any]:
    """fake_rpi's RPi.GPIO in sys.modules for the test; the real module table restored afterwards."""
    fake_rpi = pytest.importorskip("fake_rpi")
    saved: dict[str, ModuleType | None] = {name: sys.modules.get(name) for name in MODULES}
    sys.modules["RPi"] = fake_rpi.RPi
    sys.modules["RPi.GPIO"] = fake_rpi.RPi.GPIO
    sys.modules.pop("gpiozero.pins.rpigpio", None)  # import it fresh, against the fake
    try:
        yield fake_rpi.RPi.GPIO
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_rpigpio_backend_drives_a_valve_through_fake_rpi(
    fake_gpio: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rpigpio = importlib.import_module("gpiozero.pins.rpigpio")
    assert rpigpio.GPIO is fake_gpio
    setups: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real_setup = fake_gpio.setup

    def recording_setup(*args: Any, **kwargs: Any) -> None:
        setups.append((args, kwargs))  # fake_rpi prints positional arguments only
        real_setup(*args, **kwargs)

    monkeypatch.setattr(fake_gpio, "setup", recording_setup)

    class FakePiFactory(rpigpio.RPiGPIOFactory):  # type: ignore[name-defined]
        """RPiGPIOFactory on a machine that is not a Pi: the board revision is supplied, not read."""

        def _get_revision(self) -> int:
            return PI_3B_REVISION

    factory = FakePiFactory()
    try:
        capsys.readouterr()  # fake_rpi prints every call it receives: start from a clean slate
        valve = ZoneValve("valve_foot", 20, pin_factory=factory)
        setup = capsys.readouterr().out
        valve.connect()
        connected = capsys.readouterr().out
        valve.vent()
        vented = capsys.readouterr().out
        valve.close()
        closed = capsys.readouterr().out
    finally:
        factory.close()
    assert "_GPIO.setup(20, 0)" in setup  # BCM 20 as an output (GPIO.OUT == 0)
    assert ((20, fake_gpio.OUT), {"initial": False}) in setups  # ... that starts low
    assert "_GPIO.output(20, " not in setup  # nothing drove it high on the way
    assert connected.strip().endswith("_GPIO.output(20, True)")
    assert vented.strip().endswith("_GPIO.output(20, False)")
    assert closed.splitlines()[0].endswith("_GPIO.output(20, False)")  # close() turns it off first
    assert "_GPIO.cleanup(20,)" in closed  # ... then releases the pin
    assert factory.board_info.model == "3B"
    assert sys.modules["RPi.GPIO"] is fake_gpio  # the fixture restores the table after the test
