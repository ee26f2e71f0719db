"""The MQTT bridge (DESIGN.md section 5): state out, commands in, Home Assistant discovery, extra topics.

MQTT never runs inside the safety loop: the Device calls ``_on_change`` from the control loop and it
only sets an event. A slow or dead broker delays nothing but this task, and broker trouble never
raises out of it: the bridge reconnects with a capped exponential backoff.

Extra topics (``TaskContext.mqtt_extensions``: the simulator's, for one) are served as the device's own:
requests admitted like commands and answered on their reply topic, feeds published periodically.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import aiomqtt
from aiomqtt import Message, MqttCodeError, MqttError, ProtocolVersion, TLSParameters, Will
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device import commands as cmds
from device.api import PendingSet
from device.commands import MAX_PAYLOAD_BYTES, CommandError, Reply, printable
from device.config import pi_serial_number
from device.discovery import DeviceTopics, discovery_messages
from device.tasks import MqttFeed, MqttRequest, TaskContext

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.8  # reconnect delay min(1.8 ** tries, BACKOFF_CAP_S)
BACKOFF_CAP_S = 30.0
OPERATION_TIMEOUT_S = 5.0  # CONNACK, SUBACK, PUBACK
SHUTDOWN_TIMEOUT_S = 1.5  # for the last "offline" and for the disconnect, each
CANCEL_RETRY_S = 0.1
GOODBYE_MAX_S = 2 * SHUTDOWN_TIMEOUT_S + 1.0  # the goodbye's publish and disconnect, each bounded, and a margin
STATE_MIN_GAP_S = 0.2  # state is coalesced to at most 5 messages per second
STATE_ACTIVE_EVERY_S = 1.0  # while a session runs (pressures move), at least this often
STATE_IDLE_EVERY_S = 5.0  # otherwise
COMMAND_RATE_PER_S = 20.0  # token bucket for cmd (stop and pause aside) and extension request messages
COMMAND_BURST = 40
INCOMING_QUEUE_MAX = 1000  # other messages beyond this (a flood the bucket cannot drain) are dropped
URGENT_ACTIONS = frozenset({"stop", "pause"})  # jump the queue; never rate-limited nor dropped behind others
URGENT_QUEUE_MAX = 256  # stop / pause messages waiting; a stop may push out a waiting pause, never a stop
# MQTT 5 CONNECT "maximum packet size": the broker sends nothing bigger (a cmd payload at its limit, plus
# topic and properties, fits), so a huge publish never reaches the firmware's memory or event loop.
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 4096
DISCOVERY_MIN_GAP_S = 5.0  # Home Assistant "online" re-publishes discovery at most this often
DROP_LOG_EVERY_S = 10.0
RETAINED_REFUSAL = ("retained command ignored: a command acts only when it is sent; clear it with an "
                    "empty retained publish on this topic")
RATE_LIMITED = "rate limited"
AUTH_REFUSED = frozenset({4, 5, 134, 135})  # CONNACK: bad user name or password / not authorised
ACTIVE = frozenset({"running", "paused", "finishing"})

# When each incoming message reached the client's queue (for the MQTT 5 message expiry).
_ARRIVED: weakref.WeakKeyDictionary[Message, float] = weakref.WeakKeyDictionary()


def urgent_action(topic: str, payload: Any, retain: bool, command_topic: str) -> str | None:
    """``stop`` / ``pause`` when a fresh ``cmd`` message asks for it (a cheap look, unvalidated), else None."""
    if retain or topic != command_topic or not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD_BYTES:
        return None
    if b"stop" not in payload and b"pause" not in payload:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    action = data.get("action") if isinstance(data, dict) else None
    return action if isinstance(action, str) and action in URGENT_ACTIONS else None


class TriageQueue(asyncio.Queue[Message]):
    """The client's incoming queue: stop / pause first and apart, others bounded; notes arrival times.

    aiomqtt puts every message in from the network callback: a flood of other messages fills only its
    own part (the rest is dropped and counted, without a warning per message), never the stop path.
    """

    command_topic = ""  # set by the bridge's subclass

    def _init(self, maxsize: int) -> None:
        self._urgent: collections.deque[Message] = collections.deque()
        self._other: collections.deque[Message] = collections.deque()
        self._queue = self._other  # asyncio.Queue's repr reads it
        self._incoming_urgent: str | None = None
        self.urgent_ready = asyncio.Event()  # a stop / pause waits (for a receiver busy with a slow save)
        self.dropped = 0  # other messages dropped because their part was full
        self.largest = 0  # the largest payload that reached this queue, in bytes
        self._drop_logged_at = -1e9

    def _qsize(self) -> int:
        return len(self._urgent) + len(self._other)

    def qsize(self) -> int:
        """Messages waiting in both parts."""
        return self._qsize()

    def empty(self) -> bool:
        """Whether no message waits in either part."""
        return not self._urgent and not self._other

    def _put(self, item: Message) -> None:
        if self._incoming_urgent:
            self._urgent.append(item)
            self.urgent_ready.set()
        else:
            self._other.append(item)

    def _get(self) -> Message:
        return self.pop_urgent() or self._other.popleft()

    def pop_urgent(self) -> Message | None:
        """The oldest waiting stop / pause, taken out of the queue, or None."""
        item = self._urgent.popleft() if self._urgent else None
        if not self._urgent:
            self.urgent_ready.clear()
        return item

    def full(self) -> bool:
        """Whether the part the message being put belongs to is full."""
        if self._incoming_urgent:
            return len(self._urgent) >= URGENT_QUEUE_MAX
        return self.maxsize > 0 and len(self._other) >= self.maxsize

    def put_nowait(self, item: Message) -> None:
        """Queue ``item`` in its part, remember when it arrived; drop it (counted) when its part is full."""
        now = time.monotonic()
        _ARRIVED[item] = now
        payload = item.payload
        if isinstance(payload, bytes):
            self.largest = max(self.largest, len(payload))
        self._incoming_urgent = urgent_action(str(item.topic), payload, item.retain, self.command_topic)
        try:
            if self._incoming_urgent == "stop" and self.full():
                self._push_out_a_pause()
            super().put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if now - self._drop_logged_at >= DROP_LOG_EVERY_S:
                self._drop_logged_at = now
                log.warning("MQTT: incoming flood: %d messages dropped so far (stop and pause are kept)",
                            self.dropped)
        finally:
            self._incoming_urgent = None

    def _push_out_a_pause(self) -> None:
        """Make room for a stop in a full stop / pause part by dropping the oldest waiting pause."""
        for index, waiting in enumerate(self._urgent):
            if urgent_action(str(waiting.topic), waiting.payload, False, self.command_topic) == "pause":
                del self._urgent[index]
                self.dropped += 1
                return


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take()`` is False when the bucket is empty."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def backoff_s(tries: int) -> float:
    """Delay before reconnect attempt number ``tries`` (1 = after the first failure)."""
    return min(BACKOFF_BASE ** tries, BACKOFF_CAP_S)


def expiry_problem(properties: Properties | None, arrived_s: float, now_s: float) -> str | None:
    """Why a message must not be executed because its MQTT 5 message expiry has passed, else None."""
    interval = getattr(properties, "MessageExpiryInterval", None) if properties is not None else None
    if interval is None:
        return None
    waited = now_s - arrived_s
    if interval <= 0 or waited >= interval:
        return f"message expired (MQTT 5 message expiry {interval} s) before it could run; not executed"
    return None


def is_auth_refusal(exc: BaseException) -> bool:
    """True when the broker refused the CONNECT for the credentials (CONNACK 4/5 or 134/135)."""
    if not isinstance(exc, MqttConnectError):
        return False
    rc = exc.rc
    value = getattr(rc, "value", rc)
    return isinstance(value, int) and value in AUTH_REFUSED


def _broker_trouble(raised: BaseException) -> MqttError:
    """The MqttError behind ``raised`` (bare, or from the serving task group); re-raises anything else."""
    if isinstance(raised, MqttError):
        return raised
    assert isinstance(raised, ExceptionGroup)
    trouble, rest = raised.split(MqttError)
    if rest is not None or trouble is None:
        raise raised
    first: BaseException = trouble
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, MqttError)
    return first


def response_topic_allowed(topic: str, reply_topic: str) -> bool:
    """Whether an MQTT 5 response topic lies under ``reply_topic`` (what the ACL grants), without wildcards."""
    if any(c in topic for c in "+#\0") or len(topic.encode()) > 1024:
        return False
    return topic.startswith(reply_topic + "/") and len(topic) > len(reply_topic) + 1


def _peek_id(payload: bytes) -> str | None:
    """The ``id`` of a command payload, if it has a usable one (for replies to refused messages)."""
    try:
        return cmds.request_id(cmds.decode_payload(payload))
    except CommandError:
        return None


def _decoded_or_none(payload: bytes) -> Any:
    """The payload's JSON, or None when it is not a readable command message."""
    try:
        return cmds.decode_payload(payload)
    except CommandError:
        return None


def _encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


class MqttBridge:
    """Connects the Device to a broker and keeps it connected until the app stops."""

    def __init__(
        self,
        context: TaskContext,
        *,
        command_rate_per_s: float = COMMAND_RATE_PER_S,
        command_burst: int = COMMAND_BURST,
        state_min_gap_s: float = STATE_MIN_GAP_S,
        discovery_min_gap_s: float = DISCOVERY_MIN_GAP_S,
    ) -> None:
        self.context = context
        self.device = context.device
        settings = context.config.mqtt
        self.settings = settings
        self.topics = DeviceTopics.of(settings.topic_prefix, self.device.device_id)
        self.ha_status_topic = f"{settings.discovery_prefix}/status"
        extensions = context.mqtt_extensions
        self.requests: dict[str, MqttRequest] = {  # full topic -> request
            self._under_base(r.topic): r for extension in extensions for r in extension.requests
        }
        self.feeds: list[MqttFeed] = [feed for extension in extensions for feed in extension.feeds]
        for topic in [r.reply for r in self.requests.values()] + [f.topic for f in self.feeds]:
            self._under_base(topic)  # a bad topic fails here, at start, not on the first message
        self.updates_topic = f"{settings.topic_prefix}/updates/latest"  # fleet-wide, retained
        self.bucket = TokenBucket(rate=command_rate_per_s, burst=command_burst)
        self.state_min_gap_s = state_min_gap_s
        self.discovery_min_gap_s = discovery_min_gap_s
        self.discovery_rounds = 0  # discovery publishes (every config once) so far
        self.incoming: TriageQueue | None = None  # the client's incoming queue, once created
        self.connects = 0  # successful connections so far (for tests and the dashboard)
        self.announced = 0  # connections that got as far as subscribed + online + state + discovery
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._last_state_at = -1e9
        self._discovery_wanted = asyncio.Event()
        self._last_discovery_at = -1e9
        self._limit_logged_at = -1e9  # a flood logs its first rate-limited command at INFO, the rest at DEBUG
        self._auth_error_logged = False
        self._problems_sent = self.device.problem_seq  # problems before the bridge started are not events
        self._stopping = False  # the app is stopping: every loop of this bridge ends
        self._closing = False  # the goodbye (offline, disconnect) has begun

    def _under_base(self, topic: str) -> str:
        """An extension's topic under the device's base (it cannot reach beyond it)."""
        if not topic or any(c in topic for c in "+#\0") or topic.startswith("/"):
            raise ValueError(f"extension topic {topic!r}: expected a plain topic under the device's base")
        return f"{self.topics.base}/{topic}"

    # -- from the control loop -----------------------------------------------------------------

    def _on_change(self, _reason: str) -> None:
        """Device listener: only flags the change (never awaits, never blocks)."""
        if threading.get_ident() == self._loop_thread:
            self._changed.set()
        elif self._loop is not None:  # a button thread: hand over to the event loop
            self._loop.call_soon_threadsafe(self._changed.set)

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Wait for start-up, then stay connected until ``app.stop_event``; never raises on broker trouble."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        stop = self.context.stop_event
        ready = asyncio.ensure_future(self.context.ready.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((ready, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stopped.cancel()
        if stop.is_set():
            return
        client = self._make_client()
        if client is None:
            await stop.wait()
            return
        unsubscribe = self.device.subscribe(self._on_change)
        connection = asyncio.create_task(self._keep_connected(client), name="mqtt-connection")
        try:
            await stop.wait()
        finally:
            log.debug("MQTT: stopping")
            self._stopping = True
            give_up = time.monotonic() + GOODBYE_MAX_S
            while not connection.done():
                # Python 3.11's asyncio.wait_for (inside aiomqtt) can swallow a cancellation that
                # coincides with the operation finishing: repeat it until the connection task ends,
                # but leave the bounded goodbye (offline, disconnect) alone once it has begun, until
                # it has had its time (a broker dying at the same moment must not hold the stop).
                if not self._closing or time.monotonic() > give_up:
                    connection.cancel()
                await asyncio.wait({connection}, timeout=CANCEL_RETRY_S)
            unsubscribe()
        error = None if connection.cancelled() else connection.exception()
        if error is not None:
            raise error  # a bug, not broker trouble (that never leaves the connection task)
        log.debug("MQTT: stopped")

    def _make_client(self) -> aiomqtt.Client | None:
        """The one client of this bridge, reused across reconnects; None when the settings are unusable."""
        s = self.settings
        try:
            password = s.read_password()
        except ValueError as exc:  # ConfigError: the password file cannot be read
            log.error("MQTT disabled: %s", exc)
            return None
        tls_params = None
        if s.tls.enabled:
            tls_params = TLSParameters(
                ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,  # None: the system's CAs
                certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                keyfile=str(s.tls.key_file) if s.tls.key_file else None,
            )
        will = Will(self.topics.availability, b"offline", qos=1, retain=True)
        bridge = self

        class Incoming(TriageQueue):
            command_topic = self.topics.cmd

            def _init(self, maxsize: int) -> None:
                super()._init(maxsize)
                bridge.incoming = self

        properties = None
        if s.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.MaximumPacketSize = MAX_PACKET_BYTES
        return aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=password,
            identifier=s.client_id or f"massager-{self.device.device_id}",
            protocol=ProtocolVersion.V5 if s.protocol == "5" else ProtocolVersion.V311,
            will=will,
            keepalive=s.keepalive_s,
            timeout=OPERATION_TIMEOUT_S,
            tls_params=tls_params,
            tls_insecure=s.tls.insecure if s.tls.enabled else None,
            queue_type=Incoming,
            max_queued_incoming_messages=INCOMING_QUEUE_MAX,
            properties=properties,
            # small packets go out at once: without this a reply can wait for a delayed ACK (~40 ms)
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    def _where(self) -> str:
        s = self.settings
        who = f" as user {s.username!r}" if s.username else ""
        return f"{s.host}:{s.port}{' (TLS)' if s.tls.enabled else ''}{who}"

    async def _keep_connected(self, client: aiomqtt.Client) -> None:
        """Connect, serve, and on any broker trouble reconnect after a capped exponential backoff."""
        tries = 0
        while not self._stopping:
            try:
                async with client:
                    self.connects += 1
                    log.info("MQTT connected to %s%s", self._where(), " again" if tries else "")
                    tries = 0
                    self._auth_error_logged = False
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        await self._goodbye(client)
                        raise
                    if self._stopping:  # the loops ended on the flag (a cancellation was swallowed)
                        await self._goodbye(client)
                        return
            except (MqttError, ExceptionGroup) as raised:
                exc = _broker_trouble(raised)
                if self._closing:
                    log.debug("MQTT: disconnect at shutdown: %s", exc)
                    return
                if is_auth_refusal(exc):
                    delay = BACKOFF_CAP_S
                    if not self._auth_error_logged:
                        self._auth_error_logged = True
                        log.error("MQTT broker %s refused the credentials (%s); check mqtt.username and "
                                  "mqtt.password / mqtt.password_file. Retrying every %.0f s",
                                  self._where(), exc, delay)
                    else:
                        log.debug("MQTT credentials refused again (%s)", exc)
                else:
                    tries += 1
                    delay = backoff_s(tries)
                    level = logging.WARNING if tries == 1 else logging.DEBUG
                    log.log(level, "MQTT broker %s: %s; retrying in %.1f s (attempt %d)",
                            self._where(), exc or type(exc).__name__, delay, tries)
            await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """After every connect: subscribe, announce, then run receiver and publishers until disconnected."""
        subscriptions = [self.topics.cmd, *self.requests]
        if self.settings.discovery:
            subscriptions.append(self.ha_status_topic)
        if self.device.updates is not None:
            subscriptions.append(self.updates_topic)
        for topic in subscriptions:
            await client.subscribe(topic, qos=1)
        await client.publish(self.topics.availability, b"online", qos=1, retain=True)
        await self._publish_state(client)
        await self._publish_discovery(client)
        self.announced += 1
        if self.device.updates is not None:
            self.device.updates.on_mqtt_online()  # the health gate of a new release
        async with asyncio.TaskGroup() as group:
            group.create_task(self._receive(client), name="mqtt-receive")
            group.create_task(self._state_loop(client), name="mqtt-state")
            group.create_task(self._discovery_loop(client), name="mqtt-discovery")
            for feed in self.feeds:
                group.create_task(self._feed_loop(client, feed), name=f"mqtt-feed {feed.topic}")

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """A clean disconnect suppresses the Will: publish the retained ``offline`` ourselves, bounded."""
        self._closing = True
        client.timeout = SHUTDOWN_TIMEOUT_S  # also bounds the disconnect that follows
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await self._publish_state(client)
                await client.publish(self.topics.availability, b"offline", qos=1, retain=True)
            log.info("MQTT: published offline")
        except (MqttError, TimeoutError) as exc:
            log.warning("MQTT: could not publish offline before disconnecting: %s", exc or "timed out")

    # -- publishers ----------------------------------------------------------------------------

    async def _publish_state(self, client: aiomqtt.Client) -> str:
        """Publish the retained state now; returns its status."""
        self._changed.clear()
        state = self.device.state()
        self._last_state_at = time.monotonic()
        await client.publish(self.topics.state, _encode(state), qos=0, retain=True)
        for problem in self.device.problems_after(self._problems_sent):
            self._problems_sent = problem.seq
            event = {"event_type": problem.kind, **problem.as_dict()}
            await client.publish(self.topics.event, _encode(event), qos=1)
        return str(state["status"])

    async def _state_loop(self, client: aiomqtt.Client) -> None:
        """State on every change (coalesced) and periodically: every 1 s in a session, 5 s otherwise."""
        status = str(self.device.state()["status"])
        while not self._stopping:
            every = STATE_ACTIVE_EVERY_S if status in ACTIVE else STATE_IDLE_EVERY_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._changed.wait()
            gap = self._last_state_at + self.state_min_gap_s - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            status = await self._publish_state(client)

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        """Every Home Assistant discovery config, retained (none when discovery is off)."""
        if not self.settings.discovery:
            return
        config = self.context.config
        messages = discovery_messages(
            device_id=self.device.device_id,
            topic_prefix=self.settings.topic_prefix,
            discovery_prefix=self.settings.discovery_prefix,
            programs=list(self.context.library.names()),
            thermistors=list(config.sensors.thermistors),
            timer_max_min=config.session.timer_max_min,
            heat_target_max_c=config.safety.heat_target_max_c,
            info=config.device,
            serial_number=pi_serial_number(),
            configuration_url=config.device.resolved_configuration_url(),
        )
        self._last_discovery_at = time.monotonic()
        self.discovery_rounds += 1
        for message in messages:
            await client.publish(message.topic, message.payload(), qos=1, retain=True)
        log.debug("MQTT: %d discovery configs published", len(messages))

    async def _discovery_loop(self, client: aiomqtt.Client) -> None:
        """Re-publish discovery on Home Assistant's ``online``, at most once per gap, apart from commands."""
        while not self._stopping:
            await self._discovery_wanted.wait()
            gap = self._last_discovery_at + self.discovery_min_gap_s - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            self._discovery_wanted.clear()
            log.info("MQTT: Home Assistant is online; re-publishing discovery")
            await self._publish_discovery(client)
            self._changed.set()  # and the state, through the coalescing state loop

    async def _feed_loop(self, client: aiomqtt.Client, feed: MqttFeed) -> None:
        """An extension's feed: ``feed.read()`` published every ``feed.every_s`` (QoS 0, not retained)."""
        topic = self._under_base(feed.topic)
        next_at = time.monotonic()
        while not self._stopping:
            await client.publish(topic, _encode(feed.read()), qos=0)
            next_at = max(next_at + feed.every_s, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    # -- receiver ------------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Route every incoming message; yields to the safety loop between messages."""
        async for message in client.messages:
            topic = message.topic
            if topic.matches(self.topics.cmd):
                await self._command(client, message)
            elif (request := self.requests.get(str(topic))) is not None:
                await self._request(client, message, request)
            elif topic.matches(self.ha_status_topic) and message.payload == b"online" and not message.retain:
                self._discovery_wanted.set()  # coalesced and paced by the discovery task
            elif topic.matches(self.updates_topic) and self.device.updates is not None:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self.device.updates.on_announcement(payload)  # retained: what the fleet should run
                self._changed.set()
            if self._stopping:
                return
            await asyncio.sleep(0)

    def _admit(self, message: Message, *, urgent: bool = False) -> str | None:
        """Why a message may not run (retained, rate limit but for stop / pause, MQTT 5 expiry), else None."""
        if message.retain:
            return RETAINED_REFUSAL
        if not urgent and not self.bucket.take():
            return (f"{RATE_LIMITED}: more than {self.bucket.rate:g} commands per second "
                    f"(burst {self.bucket.burst:g}; stop and pause are never limited); not executed")
        arrived = _ARRIVED.get(message, time.monotonic())
        return expiry_problem(message.properties, arrived, time.monotonic())

    async def _command(self, client: aiomqtt.Client, message: Message) -> None:
        """Run one ``cmd`` message and answer it on ``cmd/reply`` (and the MQTT 5 response topic)."""
        payload = message.payload if isinstance(message.payload, bytes) else b""
        urgent = urgent_action(str(message.topic), payload, message.retain, self.topics.cmd) is not None
        refused = self._admit(message, urgent=urgent)
        if refused is not None:
            now = time.monotonic()
            quiet = refused.startswith("rate limited") and now - self._limit_logged_at < DROP_LOG_EVERY_S
            if not quiet and refused.startswith("rate limited"):
                self._limit_logged_at = now
            log.log(logging.DEBUG if quiet else logging.INFO, "command refused: %s", refused)
            reply = Reply(_peek_id(payload), False, refused)
            if not refused.startswith(RATE_LIMITED):  # a flood is no news for Home Assistant's logbook
                self.device.refused(_decoded_or_none(payload), refused)
        else:
            begun = self.device.begin_payload(payload, source="mqtt")
            if isinstance(begun, PendingSet):  # a set is answered once saved; stop / pause go on meanwhile
                await self._serve_urgent_until(client, begun.saving)
                reply = self.device.finish_set(begun)
            else:
                reply = begun
        await self._reply(client, self.topics.cmd_reply, reply.as_dict(), message.properties)

    async def _serve_urgent_until(
        self, client: aiomqtt.Client, saving: concurrent.futures.Future[None]
    ) -> None:
        """Wait for a write (a slow SD card) while running every stop / pause that arrives meanwhile."""
        written: asyncio.Future[Any] = asyncio.wrap_future(saving)
        try:
            while not written.done():
                queue = self.incoming
                if queue is None:
                    await asyncio.wait({written})
                    break
                urgent: asyncio.Future[Any] = asyncio.ensure_future(queue.urgent_ready.wait())
                try:
                    await asyncio.wait({written, urgent}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    urgent.cancel()
                while (message := queue.pop_urgent()) is not None:
                    await self._command(client, message)
        finally:
            if written.done() and not written.cancelled():
                written.exception()  # retrieved here; the device reads it from the write itself

    async def _request(self, client: aiomqtt.Client, message: Message, request: MqttRequest) -> None:
        """Run one message of an extension's request topic (admitted as a command) and answer it."""
        payload = message.payload if isinstance(message.payload, bytes) else b""
        refused = self._admit(message)
        if refused is not None:
            answer: dict[str, Any] = {"id": _peek_id(payload), "ok": False, "error": refused}
        else:
            answer = request.answer(payload)
        if not answer.get("ok"):
            log.info("%s refused: %s", request.topic, printable(str(answer.get("error"))))
        await self._reply(client, self._under_base(request.reply), answer, message.properties)

    async def _reply(
        self, client: aiomqtt.Client, topic: str, answer: dict[str, Any], request: Properties | None
    ) -> None:
        """Publish ``answer`` once on ``topic`` and on an allowed MQTT 5 response topic (with correlation)."""
        payload = _encode(answer)
        response_topic = getattr(request, "ResponseTopic", None) if request is not None else None
        properties = None
        if response_topic:
            properties = Properties(PacketTypes.PUBLISH)
            correlation = getattr(request, "CorrelationData", None)
            if correlation is not None:
                properties.CorrelationData = correlation
        if response_topic == topic:
            await client.publish(topic, payload, qos=0, properties=properties)
            return
        if not response_topic:
            await client.publish(topic, payload, qos=0)
            return
        if not response_topic_allowed(response_topic, topic):
            await client.publish(topic, payload, qos=0)
            log.info("MQTT: response topic %s refused: it must lie under %s/", json.dumps(response_topic),
                     topic)
            return
        # Both queued at once and written together: awaiting each QoS 0 publish until it is written took
        # a few loop turns apiece, and every other ready task ran in between (p99 +8 ms on the reply).
        results: tuple[BaseException | None, BaseException | None] = await asyncio.gather(
            client.publish(topic, payload, qos=0),
            client.publish(response_topic, payload, qos=0, properties=properties),
            return_exceptions=True,
        )
        shared, response = results
        if isinstance(response, ValueError | MqttCodeError):
            log.info("MQTT: cannot reply on response topic %s: %s", json.dumps(response_topic), response)
        elif isinstance(response, BaseException):
            raise response
        if isinstance(shared, BaseException):
            raise shared


async def mqtt_task(context: TaskContext) -> None:
    """The firmware's MQTT bridge task (installed by the app when ``mqtt.enabled``)."""
    await MqttBridge(context).run()
