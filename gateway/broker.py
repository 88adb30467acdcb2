"""The embedded MQTT broker: amqtt, in-process, with jisaku's accounts and ACL.

This is the "nothing to install" broker of `jisaku demo` and `jisaku broker`. A real
deployment runs Mosquitto with files from `jisaku.gateway.mosquitto`; both enforce the same
rule, `device_acl`, so devices behave the same against either.

amqtt 0.12 needed these corrections to be safe for that job; each is explained where it is
made, in `_JisakuBroker` and `_CallbackAuthPlugin`:

- a failed login could take over the session of a connected client with the same client id;
- a topic-check plugin lets amqtt lose messages whenever a subscription comes or goes;
- every connecting client was sent the retained messages of *everyone's* subscriptions;
- wills were published without any topic check;
- shutting down while clients were still sending could hang forever;
- a QoS 1 message on its way to a client that died before acknowledging it (a gateway
  killed mid-stream) was forgotten instead of being sent again when the client came back.

Beyond amqtt, and like Mosquitto on a reload (`jisaku mosquitto sync`): a client whose
credentials stop working (secret rotated, device revoked) is cut off, within a second of the
change when the broker is given `version` (e.g. `Registry.version`). Unlike Mosquitto, a
client cannot take over a session (the same client id) that belongs to another account.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.constants import QOS_1
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

__all__ = ["EmbeddedBroker", "device_acl"]

log = logging.getLogger(__name__)

Authenticate = Callable[[str, str], bool]
Authorize = Callable[[str, str, str], bool]
Version = Callable[[], int]

# A client that opens a socket must send CONNECT within this time (amqtt waits forever).
CONNECT_TIMEOUT_S = 10.0
# How long stop() lets amqtt wind down the sessions of connections it has just cut.
DRAIN_TIMEOUT_S = 5.0
MQTT_311 = 4
# How often the broker asks `version` whether accounts changed (the registry: one row read).
RECHECK_EVERY_S = 1.0

# What a device may do, relative to its own prefix `jisaku/<username>/` (wire contract v1).
DEVICE_PUBLISH = frozenset({"data", "event", "status", "config/ack", "cmd/ack"})
DEVICE_SUBSCRIBE = frozenset({"config", "cmd"})


def _strip_shared(topic_filter: str) -> str:
    """`$share/<group>/<filter>` -> `<filter>`: the ACL is about what is read, not how."""
    parts = topic_filter.split("/", 2)
    if len(parts) == 3 and parts[0] == "$share" and parts[1] and not set(parts[1]) & set("+#"):
        return parts[2]
    return topic_filter


def device_acl(username: str, action: str, topic: str) -> bool:
    """Decide whether `username` may "publish" to / "subscribe" to `topic` (a filter for subscribe).

    Service accounts (names starting with "_", e.g. "_gateway") may use anything under
    `jisaku/`. A device may only write its own data/event/status/acks and only read its own
    config and cmd, so a stolen device secret cannot impersonate or eavesdrop on other devices.
    """
    # A name with MQTT separators or wildcards would turn "its own topic" into someone
    # else's (a device called "+" subscribing to jisaku/+/config), so such names get nothing.
    if not username or set(username) & set("/+#\0"):
        return False
    if action == "subscribe":
        topic = _strip_shared(topic)
    elif action == "publish":
        if set(topic) & set("+#"):
            return False
    else:
        return False

    if username.startswith("_"):
        return topic.startswith("jisaku/")

    own_prefix = f"jisaku/{username}/"
    if not topic.startswith(own_prefix):
        return False
    allowed = DEVICE_PUBLISH if action == "publish" else DEVICE_SUBSCRIBE
    return topic[len(own_prefix):] in allowed


def _allowed(authorize: Authorize, username: str, action: str, topic: str) -> bool:
    """Call the ACL; a crashing ACL refuses instead of taking the broker down."""
    try:
        return bool(authorize(username, action, topic))
    except Exception:
        log.exception("authorize(%r, %r, %r) failed; refusing", username, action, topic)
        return False


def _credentials_ok(authenticate: Authenticate, username: str | None, password: str | None) -> bool:
    """A username and a password that `authenticate` accepts: no anonymous clients, ever."""
    if not username or password is None:
        return False
    try:
        if authenticate(username, password):
            return True
    except Exception:
        log.exception("authenticate(%r) failed; refusing the connection", username)
        return False
    log.info("refused CONNECT of %r: bad credentials", username)
    return False


@dataclass
class _Callbacks:
    """The auth plugin's config: amqtt builds it from the plugin's entry in `plugins`."""

    authenticate: Any = None
    authorize: Any = None


@dataclass
class _Connection:
    """One client's socket and the credentials it logged in with, to check them again later."""

    writer: asyncio.StreamWriter
    username: str | None = None
    password: str | None = None


class _CallbackAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: our `authenticate` decides, and a will the client may not publish is dropped.

    `_JisakuBroker` has already refused bad credentials before amqtt saw the CONNECT; amqtt
    still needs an auth plugin to say yes, and checking twice costs one more hash.
    """

    Config = _Callbacks

    async def authenticate(self, *, session: Session) -> bool:
        if not _credentials_ok(self.config.authenticate, session.username, session.password):
            return False
        # amqtt publishes a will without any topic check. Mosquitto accepts such a client
        # but drops the will, and so do we.
        will_topic = session.will_topic or ""
        if session.will_flag and not _allowed(self.config.authorize, session.username, "publish", will_topic):
            log.info("dropping the will of %r: may not publish to %r", session.username, will_topic)
            session.will_flag = False
        return True


class _ReplayReader(ReaderAdapter):
    """Records what is read until `replay()`, then serves those bytes again before the stream's."""

    def __init__(self, inner: ReaderAdapter) -> None:
        self._inner = inner
        self._recorded = bytearray()
        self._recording = True

    def replay(self) -> None:
        self._recording = False

    async def read(self, n: int = -1) -> bytes:
        if self._recording:
            data = await self._inner.read(n)
            self._recorded += data
            return data
        if not self._recorded:
            return await self._inner.read(n)
        size = len(self._recorded) if n < 0 else min(n, len(self._recorded))
        head = bytes(self._recorded[:size])
        del self._recorded[:size]
        if n < 0:
            return head + await self._inner.read(n)
        if size < n:
            return head + await self._inner.read(n - size)
        return head

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class _UntilAcknowledged(OrderedDict):
    """A session's messages in flight to its client, kept until the client acknowledges them.

    amqtt 0.12 removes a QoS 1 message from ``Session.inflight_out`` when its wait for the
    PUBACK ends, however it ends: when the client died first (a gateway killed mid-stream),
    the message was lost, although the client's persistent session should get it again on
    reconnecting [MQTT-4.4.0-1]. Here that removal is ignored until the PUBACK has come;
    amqtt's reconnect sends what is still here, marked DUP (the gateway drops copies).
    """

    def pop(self, packet_id: int, *default: Any) -> Any:
        message = self.get(packet_id)
        if message is not None and message.qos == QOS_1 and message.puback_packet is None:
            return message
        return super().pop(packet_id, *default)


class _JisakuBroker(Broker):
    """amqtt's Broker with jisaku's ACL and the corrections listed in the module docstring.

    The overridden methods are private to amqtt 0.12 (pyproject pins amqtt < 0.13); the
    tests in tests/test_broker.py fail if any of the corrections stops working.
    """

    def __init__(self, config: BrokerConfig, callbacks: _Callbacks) -> None:
        super().__init__(config)
        self._jisaku = callbacks
        self._jisaku_tasks: set[asyncio.Task[Any]] = set()
        self._jisaku_connections: dict[asyncio.Task[Any], _Connection] = {}
        self._jisaku_closing = False

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """Check the credentials of a CONNECT before amqtt's session handling sees it.

        amqtt deletes or merges the session with the same client id *before* it
        authenticates, so a failed login with a known client id (device ids are public on
        the map) silently cut a connected client off its subscriptions. The CONNECT is read
        here, checked, and then handed to amqtt, which reads the same bytes again.
        """
        if self._jisaku_closing:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        connection = self._jisaku_connections[task] = _Connection(writer)
        try:
            await self._jisaku_connected(reader, writer, listener_name, connection)
        finally:
            del self._jisaku_connections[task]

    async def _jisaku_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str,
        connection: _Connection,
    ) -> None:
        replay = _ReplayReader(StreamReaderAdapter(reader))
        out = StreamWriterAdapter(writer)
        try:
            connect = await asyncio.wait_for(ConnectPacket.from_stream(replay), CONNECT_TIMEOUT_S)
        except Exception as exc:  # garbage, timeout or a closed socket: nothing to answer
            log.info("dropped a connection that sent no valid CONNECT: %r", exc)
            await out.close()
            return
        # Other protocol versions go through: amqtt refuses them before touching sessions.
        if connect.proto_level == MQTT_311 and not _credentials_ok(
            self._jisaku.authenticate, connect.username, connect.password
        ):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(out)
            await out.close()
            return
        if connect.proto_level == MQTT_311 and self._jisaku_held_by_other(connect.client_id, connect.username):
            # Mosquitto lets any valid login kick the session with the same client id, so a
            # stolen device secret could keep another device (or the gateway) offline, or
            # throw away the gateway's queued readings. Here the client id is refused instead.
            log.warning("refused CONNECT of %r: client id %r belongs to another account",
                        connect.username, connect.client_id)
            await ConnackPacket.build(0, IDENTIFIER_REJECTED).to_stream(out)
            await out.close()
            return
        connection.username, connection.password = connect.username, connect.password
        replay.replay()
        await self.external_connected(replay, out, listener_name)

    def _jisaku_held_by_other(self, client_id: str | None, username: str | None) -> bool:
        """Whether `client_id` is a live or kept (persistent) session of another account."""
        if not client_id or client_id not in self._sessions:
            return False
        session, _ = self._sessions[client_id]
        if session.username == username:
            return False
        # A disconnected clean session is only waiting to be deleted: anyone may reuse the id.
        return bool(session.transitions.is_connected() or not session.clean_session)

    def _jisaku_cut_off_refused(self) -> list[str]:
        """Cut the connections whose credentials `authenticate` no longer accepts; return their usernames.

        The client sees its connection drop (its will is published, as with Mosquitto); its
        reconnect is then refused. Everyone else stays connected.
        """
        cut = []
        for connection in list(self._jisaku_connections.values()):
            if connection.username is None:
                continue  # still logging in: its CONNECT is checked against the new state anyway
            if not _credentials_ok(self._jisaku.authenticate, connection.username, connection.password):
                log.warning("cut off %r: its credentials no longer work", connection.username)
                connection.writer.transport.abort()
                cut.append(connection.username)
                connection.username = None  # checked once: the socket is already gone
        return cut

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Session, *args: Any,
                                     **kwargs: Any) -> None:
        if not isinstance(client_session.inflight_out, _UntilAcknowledged):  # a new session, or amqtt's own
            client_session.inflight_out = _UntilAcknowledged(client_session.inflight_out)
        await super()._handle_client_session(reader, writer, client_session, *args, **kwargs)

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """Our ACL for publish, subscribe and every delivery, without yielding to the loop.

        amqtt calls this while iterating over its subscriptions; a topic plugin (amqtt runs
        those through asyncio.gather) yields there, and any SUBSCRIBE or disconnect in that
        moment aborted the whole broadcast: readings were lost. Without an await the
        iteration cannot be interrupted.
        """
        return self._jisaku_allows(session, topic, action)

    def _jisaku_allows(self, session: Session | None, topic: str, action: Action) -> bool:
        if session is None or not session.username or not topic:
            return False
        if action == Action.SUBSCRIBE and topic.startswith("$share/"):
            # amqtt has no shared subscriptions: it would accept the filter and then never
            # match anything. A failure code in SUBACK is better than silence.
            log.warning("%r subscribed to %r: the embedded broker has no shared subscriptions",
                        session.username, topic)
            return False
        # Like Mosquitto, deliveries are checked as reads too, not only the SUBSCRIBE.
        verb = "publish" if action == Action.PUBLISH else "subscribe"
        return _allowed(self._jisaku.authorize, session.username, verb, topic)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Send `session` the retained messages for one of *its own* subscriptions.

        On every CONNECT amqtt calls this for every filter that *any* client subscribed to,
        so a device received, say, every other device's retained config whenever the
        gateway was subscribed to jisaku/#. Here a filter the session does not hold sends
        nothing, and each retained topic is checked like a delivery.
        """
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        if all(holder.client_id != session.client_id for holder, _ in holders):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and self._jisaku_allows(session, topic, Action.RECEIVE):
                # Not awaited: the caller iterates over the subscriptions, see _topic_filtering.
                send_qos = min(qos, retained.qos or qos)
                self._spawn(handler.mqtt_publish(topic, retained.data, send_qos, retain=True))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._jisaku_tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._jisaku_tasks.discard(task)
        # A client that goes away mid-delivery is normal; just don't leave the error unread.
        if not task.cancelled() and task.exception() is not None:
            log.debug("delivering a retained message failed: %r", task.exception())

    async def shutdown(self) -> None:
        """Cut every connection first, let amqtt end those sessions, then shut amqtt down.

        amqtt's own shutdown cancels each session's reader task and waits for it to stop.
        Before Python 3.12, asyncio.wait_for swallows a cancellation that arrives just as a
        packet does, so with clients still sending, the shutdown waited forever. A reader
        that sees end-of-file stops by itself.
        """
        self._jisaku_closing = True
        for connection in self._jisaku_connections.values():
            connection.writer.transport.abort()
        if self._jisaku_connections:
            await asyncio.wait(list(self._jisaku_connections), timeout=DRAIN_TIMEOUT_S)
        await super().shutdown()
        for task in self._jisaku_tasks:
            task.cancel()
        await asyncio.gather(*self._jisaku_tasks, return_exceptions=True)


def _plugin_path(cls: type) -> str:
    """amqtt loads plugins by dotted path, so name them wherever this module is imported from."""
    return f"{cls.__module__}.{cls.__qualname__}"


class EmbeddedBroker:
    """An MQTT 3.1.1 broker running in the caller's asyncio loop, with jisaku's security rules.

    Every CONNECT must carry a username and a password accepted by `authenticate`; every
    publish, subscription and delivery is checked with `authorize` (default: `device_acl`).
    Refused publishes are dropped silently, refused subscriptions get a failure code.
    Retained messages and sessions live in memory only and are gone after `stop()`.

    With `version` (a number that grows whenever accounts change, such as
    `Registry.version`), the broker reads it every second and, when it has grown, checks
    every connected client's credentials again: a rotated or revoked device is cut off, the
    others stay connected. `recheck()` does the same on demand.

    Example::

        registry = Registry(Database(Path("data/jisaku.db")))
        broker = EmbeddedBroker("127.0.0.1", 1883, authenticate=registry.check_credentials,
                                version=registry.version)
        await broker.start()
        ...  # devices, gateway and dashboard connect to mqtt://127.0.0.1:1883
        await broker.stop()
    """

    def __init__(
        self,
        host: str,
        port: int,
        authenticate: Authenticate,
        authorize: Authorize = device_acl,
        version: Version | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._callbacks = _Callbacks(authenticate, authorize)
        self._version = version
        self._broker: _JisakuBroker | None = None
        self._watcher: asyncio.Task[None] | None = None
        # The `version` whose accounts every connected client has been checked against.
        self.checked_version: int | None = None

    def recheck(self) -> list[str]:
        """Cut off every client whose credentials `authenticate` no longer accepts; return their usernames."""
        return self._broker._jisaku_cut_off_refused() if self._broker is not None else []

    async def _watch(self, version: Version) -> None:
        while True:
            await asyncio.sleep(RECHECK_EVERY_S)
            try:
                now = version()
                if now != self.checked_version:
                    self.recheck()
                    self.checked_version = now
            except Exception:  # e.g. the database briefly locked: try again next time
                log.exception("checking for changed accounts failed; trying again")

    def _config(self) -> BrokerConfig:
        return BrokerConfig(
            # Only our TCP listener: no websocket listener, no 0.0.0.0 default.
            listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=f"{self.host}:{self.port}")},
            # Giving `plugins` replaces amqtt's defaults, which include anonymous access, a
            # $SYS publisher and packet/event loggers; we want none of them.
            plugins={
                _plugin_path(_CallbackAuthPlugin): {
                    "authenticate": self._callbacks.authenticate,
                    "authorize": self._callbacks.authorize,
                },
            },
        )

    async def start(self) -> None:
        """Listen on host:port; returns once the socket is bound."""
        if self._broker is not None:
            raise RuntimeError("EmbeddedBroker already started")
        # amqtt logs every connection, and `transitions` every session state change, at INFO;
        # keep them quiet unless the application set their levels itself.
        for name in ("amqtt", "transitions"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        broker = _JisakuBroker(self._config(), self._callbacks)
        await broker.start()
        self._broker = broker
        if self._version is not None:
            self.checked_version = self._version()  # every CONNECT from now on is checked against it
            self._watcher = asyncio.ensure_future(self._watch(self._version))

    async def stop(self) -> None:
        """Disconnect every client and close the listener."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
