"""The device as its users see it: one command path for panel, phone and Home Assistant, one state."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device import __version__
from device import commands as cmds
from device.commands import CommandError, Reply
from device.config import Config
from device.controller import Controller
from device.discovery import words
from device.faultlog import FaultLog
from device.persist import LatchedFault, Preferences, StateStore, StoredState
from device.safety import Fault, Supervisor
from modes.limits import ZONES
from modes.session import CommandRefused, Session, Status
from modes.signals import Sample

if TYPE_CHECKING:
    from device.update_agent import UpdateAgent

log = logging.getLogger(__name__)

USAGE_SAVE_EVERY_S = 300.0  # usage counters reach the SD card at most this often while running
SESSION_RUN = "session"  # usage.run_s key: time spent running a session (paused time excluded)
PROBLEMS_KEPT = 16  # problems (refusals, faults, warnings) kept for the MQTT event topic
WIRELESS = Path("/proc/net/wireless")
WIFI_READ_EVERY_S = 10.0
ACTUATORS = ("foot_rollers", "calf_rollers", "pump", "valve_foot", "valve_ankle", "valve_calf", "heater")
Listener = Callable[[str], None]


def iso_time(epoch_s: float) -> str:
    """An epoch time as ISO 8601 in UTC with its offset, to the second (what Home Assistant shows)."""
    return datetime.datetime.fromtimestamp(round(epoch_s), datetime.UTC).isoformat()


@dataclass(frozen=True)
class Problem:
    """Something a user should hear about: a refused command, a latched fault, a new warning."""

    seq: int  # increases by one per problem since start-up
    kind: str  # refused, fault, warning
    code: str  # the fault or warning code; for a refusal the refused action
    message: str
    at: float  # wall-clock epoch seconds

    @property
    def summary(self) -> str:
        """A short line for Home Assistant's state (at most 255 characters there)."""
        if self.kind == "refused":
            return f"{words(self.code)} refused"
        return f"{words(self.kind)}: {words(self.code)}"

    def as_dict(self) -> dict[str, Any]:
        """The public form (state ``last_problem``, the ``event`` topic)."""
        return {"kind": self.kind, "code": self.code, "summary": self.summary, "message": self.message,
                "at": iso_time(self.at)}


def wifi_signal_dbm(path: Path = WIRELESS) -> int | None:
    """The Wi-Fi signal level in dBm from /proc/net/wireless, or None without Wi-Fi."""
    try:
        lines = path.read_text(encoding="ascii", errors="ignore").splitlines()[2:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0].endswith(":"):
            with contextlib.suppress(ValueError):
                level = int(float(fields[3].rstrip(".")))
                return level if level < 0 else None  # a positive level is a quality, not dBm
    return None


@dataclass(frozen=True)
class PendingSet:
    """A ``set`` whose settings are being written: the command, the write, what to restore if it fails."""

    command: Any
    saving: Future[None]
    undo: dict[str, Any]  # the changed settings' old values
    preferences: Preferences


class Device:
    """Commands in, state out; the controller calls ``on_pass`` and ``on_fault`` every sample."""

    def __init__(
        self,
        *,
        config: Config,
        session: Session,
        supervisor: Supervisor,
        controller: Controller,
        store: StateStore,
        stored: StoredState,
        fault_log: FaultLog,
        wifi_signal: Callable[[], int | None] | None = wifi_signal_dbm,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``wifi_signal``: reads the unit's Wi-Fi signal in dBm; None when the unit has none of its own."""
        self.config = config
        self.device_id = config.resolved_device_id
        self.session = session
        self.supervisor = supervisor
        self.controller = controller
        self.store = store
        self.stored = stored
        self.fault_log = fault_log
        self.wifi_signal = wifi_signal
        self.wall_clock = wall_clock
        self._listeners: list[Listener] = []
        self._last_key: tuple[Any, ...] | None = None
        self._last_pass_t: float | None = None
        self._last_usage_save = 0.0
        self._storage_error: str | None = store.error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.boot_at = wall_clock()
        self.problems: collections.deque[Problem] = collections.deque(maxlen=PROBLEMS_KEPT)
        self.problem_seq = 0
        self._warned: set[str] = set()
        self._wifi: tuple[float, int | None] = (-1e9, None)
        self.updates: UpdateAgent | None = None  # field updates (device/update_agent.py), when installed
        controller.on_pass = self.on_pass
        controller.on_fault = self.on_fault
        store.on_result = self._storage_result

    # -- listeners ----------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(reason)`` on every change of state; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def notify(self, reason: str) -> None:
        """Tell every state listener that something changed (``reason``: what), on the calling thread."""
        self._changed(reason)

    def _changed(self, reason: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(reason)
            except Exception:
                log.exception("state listener failed")

    def _save(self, *, critical: bool = False) -> Future[None]:
        """Hand the state to the store's writer (encoded here, written off the event loop)."""
        if self._loop is None:
            with contextlib.suppress(RuntimeError):  # no loop runs (tests, start-up)
                self._loop = asyncio.get_running_loop()
                self._loop_thread = threading.get_ident()
        return self.store.submit(self.stored, critical=critical)

    def _storage_result(self) -> None:
        """From the writer thread: a storage error appeared or cleared: state listeners hear it on the loop."""
        if self.store.error == self._storage_error:
            return
        self._storage_error = self.store.error
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._changed, "storage")
        else:
            self._changed("storage")

    # -- problems -------------------------------------------------------------------------------

    def note_problem(self, kind: str, code: str, message: str) -> Problem:
        """Remember a refusal, fault or warning for the state's ``last_problem`` and the event topic."""
        self.problem_seq += 1
        problem = Problem(self.problem_seq, kind, code, message, self.wall_clock())
        self.problems.append(problem)
        self._changed("problem")
        return problem

    def problems_after(self, seq: int) -> list[Problem]:
        """The problems kept whose sequence number is above ``seq``, oldest first."""
        return [p for p in self.problems if p.seq > seq]

    # -- preferences --------------------------------------------------------------------------

    @property
    def preferences(self) -> Preferences:
        """The user's last choices."""
        return self.stored.preferences

    @property
    def child_lock(self) -> bool:
        """True while the panel is locked (only stop works on it)."""
        return self.stored.preferences.child_lock

    def set_child_lock(self, locked: bool) -> None:
        """Lock or unlock the panel; remembered across restarts."""
        if locked != self.child_lock:
            self.stored.preferences.child_lock = locked
            self._save()
            log.info("child lock %s", "on" if locked else "off")
            self._changed("child_lock")

    def _remember(self) -> Future[None]:
        snap = self.session.snapshot()
        prefs = self.stored.preferences
        prefs.program = snap.program
        prefs.intensity = snap.intensity
        prefs.heat = snap.heat
        prefs.heat_target_c = snap.heat_target_c
        prefs.timer_min = snap.timer_min
        prefs.skip_zones = list(snap.skip_zones)
        return self._save()

    # -- commands -----------------------------------------------------------------------------

    def handle_payload(self, payload: bytes, *, source: str = "mqtt") -> Reply:
        """Decode, validate and run one command message; every outcome is a Reply (``set``: once saved)."""
        begun = self.begin_payload(payload, source=source)
        if isinstance(begun, Reply):
            return begun
        with contextlib.suppress(OSError):
            begun.saving.result()
        return self.finish_set(begun)

    async def handle_payload_async(self, payload: bytes, *, source: str = "mqtt") -> Reply:
        """``handle_payload`` for the event loop: a ``set`` is answered once its write is done."""
        begun = self.begin_payload(payload, source=source)
        if isinstance(begun, Reply):
            return begun
        with contextlib.suppress(OSError):
            await asyncio.wrap_future(begun.saving)
        return self.finish_set(begun)

    def begin_payload(self, payload: bytes, *, source: str) -> Reply | PendingSet:
        """Run a payload: its Reply when that is final, else the ``set`` still being saved (``finish_set``)."""
        data: Any = None
        try:
            data = cmds.decode_payload(payload)
            command = cmds.parse_command(data)
            if command.action != "set":
                self.execute(command, source=source)
                return Reply(command.id, True, None)
            undo = {name: getattr(self.session.snapshot(), name) for name in _SET_FIELDS
                    if getattr(command, name) is not None}
            preferences = self.stored.preferences.model_copy(deep=True)
            saving = self.execute(command, source=source)
        except CommandError as exc:
            log.info("command from %s refused: %s", source, exc)
            self.refused(data, str(exc))
            return Reply(cmds.request_id(data), False, str(exc))
        assert saving is not None
        return PendingSet(command, saving, undo, preferences)

    def refused(self, data: Any, error: str) -> None:
        """Note a refused command message (``data``: its decoded JSON, if any) as a problem."""
        action = data.get("action") if isinstance(data, dict) else None
        known = action if isinstance(action, str) and action in cmds.ACTIONS else "command"
        self.note_problem("refused", known, error)

    def finish_set(self, pending: PendingSet) -> Reply:
        """The reply to a ``set`` once its write is done: ``ok`` only when saved, else undone and refused."""
        exc = pending.saving.exception()
        if exc is None:
            return Reply(pending.command.id, True, None)
        if not isinstance(exc, OSError):
            raise exc
        return self._not_saved(pending.command, pending, exc)

    def _not_saved(self, command: Any, saving: PendingSet, exc: OSError) -> Reply:
        """A ``set`` that could not be kept is undone and refused (never ``ok`` for what was not saved)."""
        if "skip_zones" in saving.undo:
            saving.undo["skip_zones"] = frozenset(saving.undo["skip_zones"])
        try:
            self.session.update(self.controller.clock.now(), **saving.undo)
        except CommandRefused as undo_exc:  # the session moved on meanwhile (finished, faulted)
            log.warning("could not undo an unsaved set: %s", undo_exc)
        self.stored.preferences = saving.preferences
        self._act_now()
        self._changed("set")
        error = f"storage: the settings could not be saved ({exc.strerror or exc}); nothing changed"
        log.error("set refused: %s", error)
        self.note_problem("refused", "set", error)
        return Reply(command.id, False, error)

    def execute(self, command: Any, *, source: str) -> Future[None] | None:
        """Run a validated command; raises CommandError (naming the field) and then changes nothing.

        Returns the write of the settings it changed (None for ``reset_fault``).
        """
        now = self.controller.clock.now()
        action = command.action
        if self.supervisor.latched is not None and action not in ("stop", "reset_fault"):
            fault = self.supervisor.latched
            raise CommandError("action", f"{action} refused: fault {fault.code} is latched; "
                               "reset it first (reset_fault)")
        doubt = self.supervisor.doubt
        if doubt is not None and action in ("start", "resume"):
            raise CommandError("action", f"{action} refused: a sensor is implausible: {doubt}")
        log.info("command %s from %s", action, source)
        try:
            if action == "start":
                self.session.start(  # what the command leaves out: the session's current selection
                    now,
                    program=command.program,
                    intensity=command.intensity,
                    heat=command.heat,
                    timer_min=command.timer_min,
                    heat_target_c=command.heat_target_c,
                )
                self.stored.usage.sessions += 1
            elif action == "stop":
                if self.session.status in (Status.RUNNING, Status.PAUSED):
                    self.session.stop(now)
            elif action == "pause":
                self.session.pause(now)
            elif action == "resume":
                self.session.resume(now)
            elif action == "set":
                self.session.update(
                    now,
                    program=command.program,
                    intensity=command.intensity,
                    heat=command.heat,
                    timer_min=command.timer_min,
                    heat_target_c=command.heat_target_c,
                    skip_zones=frozenset(command.skip_zones) if command.skip_zones is not None else None,
                )
                if command.child_lock is not None:
                    self.set_child_lock(command.child_lock)
            elif action == "reset_fault":
                self.reset_fault()
                return None
            elif action == "update":
                if self.updates is None:
                    raise CommandError("action", "update refused: updates are not available here")
                self.updates.request(command.url)
                self._changed("update")
                return None
            else:  # pragma: no cover - the command models allow no other action
                raise CommandError("action", f"unknown action {action!r}")
        except CommandRefused as exc:
            raise CommandError(exc.field, exc.message) from None
        saving = self._remember()
        self._act_now()
        self._changed(action)
        return saving

    def _act_now(self) -> None:
        """Run a control pass at once so a command reaches the outputs without waiting for the next tick.

        The pass is the same as a scheduled one: sensors, every safety check, then outputs.
        """
        if self.controller.last_sample is not None:
            self.controller.tick()

    def reset_fault(self) -> None:
        """Clear the latched fault if its condition has cleared; raises CommandError with the reason."""
        fault = self.supervisor.latched
        if fault is None:
            raise CommandError("action", "no fault is latched")
        sample = self.controller.last_sample
        if sample is None:
            raise CommandError("action", "no sensor reading yet; try again")
        reason = self.supervisor.reset(sample)
        if reason is not None:
            raise CommandError("action", f"reset refused: {reason}")
        self.session.clear_fault(self.controller.clock.now())
        log.info("fault %s reset", fault.code)
        self.stored.latched_fault = None
        self._save(critical=True)
        self._act_now()
        self._changed("reset_fault")

    # -- controller callbacks -----------------------------------------------------------------

    def on_fault(self, fault: Fault) -> None:
        """A new fault latched: log it persistently, count it, tell every listener."""
        entry = fault.as_dict()
        snap = self.session.snapshot()
        entry.update({"device_id": self.device_id, "program": snap.program, "t": round(fault.t, 3)})
        appended = self.store.run_critical(lambda: self.fault_log.append(entry))
        appended.add_done_callback(self._fault_log_result)
        self.stored.usage.faults += 1
        self.stored.usage.last_fault = str(fault.code)
        self.stored.latched_fault = LatchedFault(code=str(fault.code), message=fault.message,
                                                 since=fault.since)
        self._save(critical=True)
        self._changed("fault")
        self.note_problem("fault", str(fault.code), fault.message)

    def _fault_log_result(self, appended: Future[None]) -> None:
        """From the writer thread: a fault record that did not reach the fault log is a storage error."""
        exc = None if appended.cancelled() else appended.exception()
        if exc is not None:
            log.error("cannot append to the fault log: %s", exc)
            self.store.error = f"cannot append to the fault log: {getattr(exc, 'strerror', None) or exc}"
            self._storage_result()

    def on_pass(self, sample: Sample) -> None:
        """After every control pass: usage counters, change detection."""
        if self._last_pass_t is not None:
            dt = sample.t - self._last_pass_t
            run_s = self.stored.usage.run_s
            for name in ACTUATORS:
                if sample.outputs.get(name):
                    run_s[name] = round(run_s.get(name, 0.0) + dt, 3)
            if self.session.status is Status.RUNNING:
                run_s[SESSION_RUN] = round(run_s.get(SESSION_RUN, 0.0) + dt, 3)
        self._last_pass_t = sample.t
        warnings = self.supervisor.warnings
        if warnings.keys() != self._warned:
            for code in warnings.keys() - self._warned:
                self.note_problem("warning", code, warnings[code])
            self._warned = set(warnings)
        snap = self.session.snapshot()
        key = (snap.status, snap.program, snap.phase, snap.intensity, snap.heat, snap.timer_min,
               self.supervisor.latched, self.child_lock, snap.skip_zones,
               tuple(self.supervisor.warnings), self.supervisor.doubt)
        if key != self._last_key:
            ended = snap.status in (Status.IDLE, Status.FAULT)  # (the session logs transitions)
            if self._last_key is not None and self._last_key[0] != snap.status and ended:
                self._save()  # usage counters at the end of every session
            self._last_key = key
            self._changed("status")
        elif snap.status is Status.RUNNING and sample.t - self._last_usage_save > USAGE_SAVE_EVERY_S:
            self._last_usage_save = sample.t
            self._save()

    # -- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The ``state`` payload of the MQTT contract (DESIGN.md section 5)."""
        snap = self.session.snapshot()
        sample = self.controller.last_sample
        fault = self.supervisor.latched
        return {
            "status": str(snap.status),
            "program": snap.program,
            "phase": snap.phase,
            "intensity": snap.intensity,
            "heat": snap.heat,
            "heat_target_c": snap.heat_target_c,
            "timer_min": snap.timer_min,
            "remaining_s": None if snap.remaining_s is None else round(snap.remaining_s),
            "skip_zones": list(snap.skip_zones),
            "temperature_c": _rounded(sample.temperature_c if sample else {}, 1),
            "pressure_mmhg": _rounded(sample.pressure_mmhg if sample else dict.fromkeys(ZONES), 1),
            "outputs": dict(sample.outputs) if sample else {},
            "fault": fault.as_dict() if fault else None,
            "warnings": [{"code": code, "message": text} for code, text in self.supervisor.warnings.items()],
            "sensor_doubt": self.supervisor.doubt,  # why a start is refused now (a sensor implausible)
            "child_lock": self.child_lock,
            "storage_error": self.store.error,
            "ends_at": (iso_time(self.wall_clock() + snap.remaining_s)
                        if snap.status is Status.RUNNING and snap.remaining_s is not None else None),
            "last_problem": self.problems[-1].as_dict() if self.problems else None,
            "boot_at": iso_time(self.boot_at),
            "firmware": __version__,
            "usage": self._usage(),
            "wifi_dbm": self._wifi_dbm(),
            "firmware_update": self.updates.state() if self.updates is not None else None,
        }

    def _usage(self) -> dict[str, Any]:
        usage = self.stored.usage
        return {
            "sessions": usage.sessions,
            "session_h": round(usage.run_s.get(SESSION_RUN, 0.0) / 3600.0, 2),
            "faults": usage.faults,
            "last_fault": usage.last_fault,
        }

    def _wifi_dbm(self) -> int | None:
        """The Wi-Fi signal, read at most every WIFI_READ_EVERY_S (None without Wi-Fi of the unit's own)."""
        if self.wifi_signal is None:
            return None
        read_at, dbm = self._wifi
        now = time.monotonic()
        if now - read_at >= WIFI_READ_EVERY_S:
            dbm = self.wifi_signal()
            self._wifi = (now, dbm)
        return dbm


_SET_FIELDS = ("program", "intensity", "heat", "timer_min", "heat_target_c", "skip_zones")


def _rounded(values: Any, digits: int) -> dict[str, float | None]:
    return {k: (None if v is None else round(v, digits)) for k, v in values.items()}
