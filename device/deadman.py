"""The software deadman: a thread, independent of the asyncio loop, that trips when the loop goes quiet.

The safety loop calls ``feed()`` after every healthy pass. If no feed arrives for longer than
``timeout_s`` (the loop hung in a blocking call, a deadlock, an endless await), the thread calls
``on_trip`` once for that silence; the app passes a function that latches the outputs off through the
drivers and latches CONTROL_LOOP_STALL. It keeps watching afterwards: the next silence trips again.
A silence the thread did not see in time (the OS starved it too) trips at the feed that ends it: every
gap between feeds longer than ``timeout_s`` trips, however the threads were scheduled (an external
deadman on the heartbeat pin has dropped the relay in such a gap).
``tripped`` is set only after ``on_trip`` has returned, so whoever waits for it sees the outputs off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Deadman:
    """Calls ``on_trip`` once, from its own thread, when ``feed()`` stops for more than ``timeout_s``."""

    def __init__(
        self,
        *,
        timeout_s: float,
        on_trip: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
        poll_s: float = 0.05,
    ) -> None:
        if not timeout_s > 0.0:
            raise ValueError(f"timeout_s must be above 0 s, got {timeout_s}")
        if not 0.0 < poll_s <= timeout_s:
            raise ValueError(f"poll_s must be above 0 s and at most timeout_s ({timeout_s} s), got {poll_s}")
        self.timeout_s = timeout_s
        self._on_trip = on_trip
        self._monotonic = monotonic
        self._poll_s = poll_s
        self._last_feed = monotonic()
        self._tripped_feed: float | None = None  # the feed time whose silence has tripped
        self.trips = 0
        self._tripped = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()

    @property
    def tripped(self) -> bool:
        """True once the deadman has tripped (until ``rearm``)."""
        return self._tripped.is_set()

    @property
    def running(self) -> bool:
        """True while the watching thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def feed(self) -> None:
        """The loop is alive: called after every healthy safety pass (a silence too long trips first)."""
        self.poll()
        self._last_feed = self._monotonic()

    def silent_s(self) -> float:
        """Seconds since the last feed."""
        return self._monotonic() - self._last_feed

    def start(self) -> None:
        """Start watching (the timeout counts from now); starting twice is an error."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the deadman is already started")
            self._stopping.clear()
            self._last_feed = self._monotonic()
            self._thread = threading.Thread(target=self._watch, name="deadman", daemon=True)
            self._thread.start()
        log.info("deadman watching the control loop (timeout %.2f s)", self.timeout_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop watching and wait for the thread; safe to call twice or before start."""
        self._stopping.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("deadman thread did not stop within %.1f s", timeout_s)

    def rearm(self) -> None:
        """After a reset: clear ``tripped`` (watching never stopped) and count from now."""
        self._last_feed = self._monotonic()
        self._tripped.clear()

    def wait_tripped(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` real seconds for a trip (tests, shutdown); True if tripped."""
        return self._tripped.wait(timeout_s)

    def poll(self) -> bool:
        """Check once (the thread at each deadline, ``feed`` before it feeds); True when this call tripped."""
        with self._poll_lock:  # the thread and the loop may both find the same silence: one trips
            last_feed = self._last_feed
            silent = self._monotonic() - last_feed
            if silent <= self.timeout_s or self._tripped_feed == last_feed:
                return False  # fed in time, or this silence has tripped already
            self._tripped_feed = last_feed
        log.critical("deadman: control loop silent for %.2f s (limit %.2f s); forcing outputs off",
                     silent, self.timeout_s)
        try:
            self._on_trip()
        except Exception:
            log.exception("deadman: on_trip failed")
        self.trips += 1
        self._tripped.set()  # after the trip: a waiter sees the outputs off and the fault latched
        return True

    def _watch(self) -> None:
        # Sleep until the current deadline (last feed + timeout), not a fixed poll: a fed deadman
        # wakes about twice a second, and a starved one trips right at its timeout. After a trip it
        # keeps watching for the next silence. ``poll_s`` bounds the sleep so an injected clock in
        # tests is followed closely.
        while True:
            if self._tripped_feed == self._last_feed:
                wait = self._poll_s
            else:
                wait = min(max(self.timeout_s - self.silent_s(), 0.0) + 0.001, self._poll_s * 10)
            if self._stopping.wait(wait):
                return
            self.poll()
