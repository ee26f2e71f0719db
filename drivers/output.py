"""Common behaviour of every output driver: starts off, closes to off, range-checked values."""

from __future__ import annotations

import logging
import math
from types import TracebackType
from typing import Any, Self

from drivers.errors import DeviceClosedError, OutputBadValue

log = logging.getLogger(__name__)


def check_fraction(name: str, value: float, *, low: float = 0.0, high: float = 1.0) -> float:
    """Return ``value`` if it is a finite number in [low, high], else raise OutputBadValue."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OutputBadValue(f"{name} must be a number between {low} and {high}, got {value!r}")
    if not low <= value <= high:
        raise OutputBadValue(f"{name} must be between {low} and {high}, got {value}")
    return float(value)


class OutputDriver:
    """Base of the output drivers: subclasses set ``name`` and implement ``_off`` and ``_close``."""

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosedError(f"{self.name} is closed")

    def off(self) -> None:
        """Turn the output off; always allowed, even after close()."""
        if not self._closed:
            self._off()

    def close(self) -> None:
        """Turn the output off and release its pins; safe to call more than once."""
        if self._closed:
            return
        try:
            self._off()
        finally:
            self._closed = True
            self._close()

    def _off(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {'closed' if self._closed else 'open'}>"


def close_device(device: Any) -> None:
    """Close a gpiozero device, logging rather than raising (close must not fail the caller)."""
    try:
        device.close()
    except Exception:
        log.exception("closing %r failed", device)
