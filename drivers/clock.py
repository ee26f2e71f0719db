"""Injected time: the firmware asks a clock for now and sleeps through it, never the OS."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where the firmware's logic gets its time from."""

    def now(self) -> float:
        """Seconds on this clock's monotonic time line."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class ScaledClock:
    """Real monotonic time, optionally running ``scale`` times faster (``--time-scale``)."""

    def __init__(self, *, scale: float = 1.0) -> None:
        if not 0.01 <= scale <= 1000.0:
            raise ValueError(f"time scale must be between 0.01 and 1000, got {scale}")
        self.scale = scale
        self._origin = time.monotonic()

    def now(self) -> float:
        """Scaled seconds since this clock was made."""
        return (time.monotonic() - self._origin) * self.scale

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of scaled time."""
        await asyncio.sleep(max(0.0, seconds) / self.scale)


class VirtualClock:
    """Fully virtual time that moves only when told to: deterministic tests and fast sims."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        """The current virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backward)."""
        if seconds < 0:
            raise ValueError(f"time cannot go backward (advance by {seconds})")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Advance virtual time by ``seconds`` and yield to other tasks once."""
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
