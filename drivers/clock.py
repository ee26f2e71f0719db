"""Injected time: the firmware asks a clock for now and sleeps through it, never the OS."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol


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


class LoopClock:
    """The running asyncio loop's clock: real time normally, virtual under VirtualTimeLoop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        """The event loop's time (also from other threads, once the loop has asked once)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    async def sleep(self, seconds: float) -> None:
        """An ordinary asyncio sleep on the loop's time line."""
        await asyncio.sleep(max(0.0, seconds))


class _VirtualSelector:
    """Wraps a selector: instead of blocking for a timer, jumps the virtual clock to it."""

    def __init__(self, selector: Any, clock: VirtualClock) -> None:
        self._selector = selector
        self._clock = clock

    def select(self, timeout: float | None = None) -> Any:
        events = self._selector.select(0)
        if events:
            return events
        if timeout is None:
            return self._selector.select(None)  # nothing scheduled: wait for real I/O
        if timeout > 0:
            self._clock.advance(timeout)
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: every sleep completes at once, in order, deterministically.

    For tests and fast simulations without network I/O (timers jump; sockets would see time fly).
    """

    def __init__(self, clock: VirtualClock | None = None) -> None:
        super().__init__()
        self.virtual_clock = clock or VirtualClock()
        self._selector = _VirtualSelector(self._selector, self.virtual_clock)  # type: ignore[has-type]

    def time(self) -> float:
        """Virtual time."""
        return self.virtual_clock.now()


def run_virtual(coro: Any, clock: VirtualClock | None = None) -> Any:
    """Run ``coro`` to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop(clock)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
