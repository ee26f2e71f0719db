"""Shared fixtures: config, virtual clock, the simulated rig, and a real mosquitto broker."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device

from device.config import Config, load_config
from device.harness import SimUnit
from device.sim import SimRig, build_sim
from drivers.clock import VirtualClock
from tests.session_sim import Bench

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# The modules of the longest simulations (5-10 s each). They run first, so that in parallel runs every worker
# ends its share on short tests instead of one core idling while the other finishes a long one.
LONG_FIRST = ("test_runner.py", "test_campaign.py", "test_heat_control.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules of LONG_FIRST first (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)


@pytest.fixture(autouse=True)
def _no_default_pin_factory() -> Iterator[None]:
    """Keep gpiozero's global factory from leaking between tests."""
    saved = Device.pin_factory
    try:
        yield
    finally:
        Device.pin_factory = saved


@pytest.fixture(autouse=True)
def _no_leftover_log_handlers() -> Iterator[None]:
    """``massager`` mains call logging.basicConfig on the test's captured stderr: undo it afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Built-in defaults with state in a temporary directory and no user programs."""
    return load_config(None, {"state_dir": str(tmp_path / "state"), "programs_dir": None})


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock starting at 0."""
    return VirtualClock()


@pytest.fixture
def rig(config: Config, clock: VirtualClock) -> Iterator[SimRig]:
    """Drivers over mock pins wired to the simulated plant; closed (outputs off) afterwards."""
    sim = build_sim(config, clock=clock.now)
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture
def bench(config: Config) -> Iterator[Bench]:
    """A unit on the default envelope, its production loop driven by the test's own control law."""
    unit = SimUnit(config)
    try:
        yield Bench(unit)
    finally:
        unit.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """mosquitto could not bind its port: another process took it first."""


class Broker:
    """A mosquitto process on loopback, started and stopped by the tests."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.workdir = workdir
        self._own_port = port is None
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"mosquitto-{self.port}.log"

    def start(self) -> Broker:
        """Start the broker and wait until it accepts connections.

        Parallel test workers pick free ports independently: a port taken between the pick and the
        bind is picked again (when the port was not chosen by the test).
        """
        for _attempt in range(5):
            try:
                return self._start()
            except PortTaken:
                if not self._own_port:
                    raise
                self.port = free_port()
                self.log = self.workdir / f"mosquitto-{self.port}.log"
        return self._start()

    def _start(self) -> Broker:
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        # As root, mosquitto drops to its own user, which cannot read files under pytest's tmp dirs.
        as_root = "user root\n" if os.geteuid() == 0 and "user " not in self.extra_conf else ""
        conf.write_text(
            as_root
            + f"listener {self.port} 127.0.0.1\n"
            + ("allow_anonymous true\n" if "allow_anonymous" not in self.extra_conf else "")
            + "persistence false\n"
            + self.extra_conf
        )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log.read_text()
                if "Address already in use" in text:
                    raise PortTaken(text)
                raise RuntimeError(f"mosquitto exited: {text}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        """Stop the broker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run scripts/bootstrap")
    b = Broker(tmp_path).start()
    try:
        yield b
    finally:
        b.stop()
