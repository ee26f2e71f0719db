"""What the app hands its tasks (panel, MQTT bridge, dashboard), and the MQTT topics a rig may add.

A task is given only what it uses (``TaskContext``), never the whole app: the command path, the config,
the clock, the programs, the start-up and stop events. The ``App`` is one such context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from device.api import Device
    from device.config import Config
    from drivers.clock import Clock
    from modes.library import ProgramLibrary


@dataclass(frozen=True)
class MqttRequest:
    """A request topic under the device's base: the bridge admits each message, ``answer`` makes the reply.

    Admission is the command topic's (retained refused, the shared rate limit, MQTT 5 expiry); the reply
    goes to ``reply`` and to an allowed MQTT 5 response topic, as for ``cmd``.
    """

    topic: str  # relative to the device's base, e.g. "sim/fault"
    reply: str  # relative to the device's base, e.g. "sim/fault/reply"
    answer: Callable[[bytes], dict[str, Any]]  # {"id", "ok", "error", ...}; never raises for bad input


@dataclass(frozen=True)
class MqttFeed:
    """A topic under the device's base published every ``every_s`` while connected (QoS 0, not retained)."""

    topic: str  # relative to the device's base, e.g. "sim/plant"
    every_s: float
    read: Callable[[], Any]  # the JSON-ready payload, read at publish time


@dataclass(frozen=True)
class MqttExtension:
    """Topics the bridge serves besides the device's own: requests answered and feeds published."""

    requests: Sequence[MqttRequest] = ()
    feeds: Sequence[MqttFeed] = ()


class TaskContext(Protocol):
    """What a task of the app may use (the ``App`` is one)."""

    @property
    def device(self) -> Device:
        """The one command path and state."""

    @property
    def config(self) -> Config:
        """The unit's validated config."""

    @property
    def clock(self) -> Clock:
        """The app's clock (virtual or scaled in the simulation)."""

    @property
    def library(self) -> ProgramLibrary:
        """The programs the unit offers."""

    @property
    def ready(self) -> asyncio.Event:
        """Set once start-up has proven the unit safe."""

    @property
    def stop_event(self) -> asyncio.Event:
        """Set when the app stops: every task ends."""

    @property
    def first_start(self) -> bool:
        """True on a new unit's first start (the safety notice is shown)."""

    @property
    def pin_factory(self) -> Any:
        """The panel's gpiozero pin factory; None for gpiozero's default (the Pi's GPIO)."""

    @property
    def mqtt_extensions(self) -> Sequence[MqttExtension]:
        """Topics the MQTT bridge serves besides the device's own (the simulator's, for one)."""

    def request_stop(self) -> None:
        """Stop the app gracefully (a second call stops it at once, outputs off)."""

