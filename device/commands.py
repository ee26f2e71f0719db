"""Commands from the phone, Home Assistant and the panel: validated with pydantic, answered with a Reply."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from modes import limits

MAX_PAYLOAD_BYTES = 4096
MAX_ERROR_CHARS = 1000  # a reply's error text (and its log line) is cut here
_PLAIN_FIELD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def printable(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` with every non-printable character (newline, ESC, U+2028...) escaped, cut to ``limit``."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def quote_field(name: str) -> str:
    """A field name from outside as a reply or log may show it: plain names bare, anything else quoted."""
    if _PLAIN_FIELD.fullmatch(name):
        return name
    return printable(json.dumps(name, ensure_ascii=True), 80)


class CommandError(ValueError):
    """A refused command; ``field`` names the part at fault (None: the whole message); both escaped."""

    def __init__(self, field: str | None, message: str) -> None:
        field = None if field is None else printable(field, 200)
        message = printable(message)
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str | None = Field(None, max_length=128)


Intensity = Annotated[int, Field(ge=limits.INTENSITY_MIN, le=limits.INTENSITY_MAX)]
TimerMin = Annotated[int, Field(ge=limits.TIMER_MIN_MIN, le=limits.TIMER_MAX_MIN)]
ProgramName = Annotated[str, Field(min_length=1, max_length=40)]
HeatTarget = Annotated[float, Field(ge=limits.HEAT_TARGET_MIN_C, le=limits.HEAT_TARGET_MAX_C)]


class Start(_Base):
    """Start a session (values not given come from the last used settings)."""

    action: Literal["start"]
    program: ProgramName | None = None
    intensity: Intensity | None = None
    heat: bool | None = None
    heat_target_c: HeatTarget | None = None
    timer_min: TimerMin | None = None


class Set(_Base):
    """Change settings now (idle) or at the next safe point (running)."""

    action: Literal["set"]
    program: ProgramName | None = None
    intensity: Intensity | None = None
    heat: bool | None = None
    heat_target_c: HeatTarget | None = None
    timer_min: TimerMin | None = None
    skip_zones: list[limits.Zone] | None = Field(None, max_length=3)
    child_lock: bool | None = None  # lock or unlock the panel (only stop works on it while locked)


class Stop(_Base):
    """Stop: deflate, stop rollers, heat off, back to idle."""

    action: Literal["stop"]


class Pause(_Base):
    """Pause a running session."""

    action: Literal["pause"]


class Resume(_Base):
    """Resume a paused session."""

    action: Literal["resume"]


class ResetFault(_Base):
    """Clear a latched fault once its condition has cleared."""

    action: Literal["reset_fault"]


class Update(_Base):
    """Install a signed firmware update (idle, no fault latched): from ``url``, else the announced one."""

    action: Literal["update"]
    url: str | None = Field(None, min_length=8, max_length=2048)


Command = Annotated[Start | Set | Stop | Pause | Resume | ResetFault | Update, Field(discriminator="action")]
ACTIONS = ("start", "stop", "pause", "resume", "set", "reset_fault", "update")
_COMMAND = TypeAdapter(Command)


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one command message."""

    id: str | None
    ok: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON payload of ``cmd/reply``."""
        return {"id": self.id, "ok": self.ok, "error": self.error}


def _first_error(exc: ValidationError) -> CommandError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # Drop the tagged-union branch name pydantic puts first (e.g. "start").
    if loc and loc[0] in ACTIONS:
        loc = loc[1:]
    field = ".".join(quote_field(p) for p in loc) or None
    kind = err["type"]
    if kind == "extra_forbidden":
        return CommandError(field, "unknown field for this action")
    if kind == "union_tag_invalid":
        return CommandError("action", f"unknown action; expected one of {', '.join(ACTIONS)}")
    if kind == "union_tag_not_found":
        return CommandError("action", "missing; expected one of " + ", ".join(ACTIONS))
    if kind == "missing":
        return CommandError(field, "missing")
    return CommandError(field, f"{err['msg']} (got {err.get('input')!r})")


def parse_command(data: Any) -> Start | Set | Stop | Pause | Resume | ResetFault | Update:
    """Validate a decoded JSON value as a command; raises CommandError naming the field."""
    if not isinstance(data, dict):
        raise CommandError(None, f"expected a JSON object, got {type(data).__name__}")
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as exc:
        raise _first_error(exc) from None


def decode_payload(payload: bytes) -> Any:
    """Bytes of a ``cmd`` message to a JSON value; raises CommandError on size, encoding or syntax."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(None, f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(None, f"payload is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CommandError(None, f"payload is not valid JSON: {exc}") from None


def request_id(data: Any) -> str | None:
    """The ``id`` of a command to echo in its reply, when there is a usable one."""
    if isinstance(data, dict):
        value = data.get("id")
        if isinstance(value, str) and len(value) <= 128:
            return value
    return None
