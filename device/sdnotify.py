"""A small hand-written sd_notify: one datagram to $NOTIFY_SOCKET; nothing when it is unset."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

_failed_before = False  # the first failure logs at WARNING, repeats at DEBUG


def notify(message: str) -> bool:
    """Send ``message`` to the service manager; False (and no error) when not under systemd or on failure."""
    global _failed_before
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]  # an abstract socket
    elif address.startswith("/"):
        target = address
    else:
        _report("NOTIFY_SOCKET %r is neither a path nor an abstract socket (@name)", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        _report("sd_notify to %s failed: %s", address, exc)
        return False
    if _failed_before:
        log.info("sd_notify works again")
        _failed_before = False
    return True


def _report(fmt: str, *args: object) -> None:
    global _failed_before
    log.log(logging.DEBUG if _failed_before else logging.WARNING, fmt, *args)
    _failed_before = True


def ready() -> bool:
    """Tell systemd start-up is complete (outputs verified off, sensors read)."""
    return notify("READY=1")


def watchdog() -> bool:
    """Pet the systemd watchdog; call only after a fresh, passing safety pass."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell systemd the service is shutting down."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify("STATUS=" + text.replace("\n", " "))


def watchdog_period_s() -> float | None:
    """The watchdog timeout systemd asked for ($WATCHDOG_USEC, for this process), else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a whole number of microseconds", usec)
        return None
    return value / 1e6 if value > 0 else None
