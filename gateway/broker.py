"""The embedded MQTT broker: amqtt, in-process, with jisaku's accounts and ACL.

This is the "nothing to install" broker of `jisaku demo` and `jisaku broker`. A real
deployment runs Mosquitto with files from `jisaku.gateway.mosquitto`; both enforce the same
rule, `device_acl`, so devices behave the same against either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

__all__ = ["EmbeddedBroker", "device_acl"]

log = logging.getLogger(__name__)

# A client that opens a socket must send CONNECT within this time (amqtt itself waits forever).
CONNECT_TIMEOUT_S = 10.0
MQTT_311 = 4

Authenticate = Callable[[str, str], bool]
Authorize = Callable[[str, str, str], bool]

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
    channel = topic[len(own_prefix):]
    allowed = DEVICE_PUBLISH if action == "publish" else DEVICE_SUBSCRIBE
    return channel in allowed


@dataclass
class _Callbacks:
    """Plugin config shape shared by both plugins: amqtt builds it from the plugin's dict."""

    authenticate: Any = None
    authorize: Any = None


def _credentials_ok(authenticate: Authenticate, username: str | None, password: str | None) -> bool:
    """The CONNECT rule: a username and a password that `authenticate` accepts."""
    if not username or password is None:
        return False  # no anonymous clients, ever
    try:
        if authenticate(username, password):
            return True
    except Exception:
        log.exception("authenticate(%r) failed; refusing the connection", username)
        return False
    log.info("refused CONNECT of %r: bad credentials", username)
    return False


class _CallbackAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin that asks our `authenticate` callable about every CONNECT."""

    Config = _Callbacks

    async def authenticate(self, *, session: Session) -> bool:
        if not _credentials_ok(self.config.authenticate, session.username, session.password):
            return False
        # amqtt publishes a will without any topic check. Mosquitto accepts the client but
        # drops a will it may not publish, and so do we.
        if session.will_flag and not _allowed(self.config.authorize, session.username, "publish",
                                              session.will_topic or ""):
            log.info("dropping the will of %r: may not publish to %r", session.username, session.will_topic)
            session.will_flag = False
        return True


class _CallbackTopicPlugin(BaseTopicPlugin):
    """amqtt topic plugin that asks our `authorize` callable about publish/subscribe/delivery."""

    Config = _Callbacks

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or not session.username or not topic:
            return False
        if action == Action.SUBSCRIBE and topic.startswith("$share/"):
            # amqtt 0.12 has no shared subscriptions: it would accept the filter and then
            # never match anything. A failure code in SUBACK is better than silence.
            log.warning("%r subscribed to %r: the embedded broker has no shared subscriptions",
                        session.username, topic)
            return False
        # Like Mosquitto, check every delivery as a read too, not only the SUBSCRIBE.
        verb = "publish" if action == Action.PUBLISH else "subscribe"
        return _allowed(self.config.authorize, session.username, verb, topic)


def _allowed(authorize: Authorize, username: str, action: str, topic: str) -> bool:
    """Call the ACL; a crashing ACL refuses instead of taking the broker down."""
    try:
        return bool(authorize(username, action, topic))
    except Exception:
        log.exception("authorize(%r, %r, %r) failed; refusing", username, action, topic)
        return False


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


class _GatedBroker(Broker):
    """amqtt's Broker, but a CONNECT with bad credentials never reaches its session handling.

    amqtt 0.12 merges or deletes the existing session with the same client id *before* it
    authenticates, so a failed login with a known client id (device ids are public on the
    map) silently cut a connected client off its subscriptions. Here the CONNECT is read
    and checked first, and only then handed to amqtt, which reads it again.
    """

    def __init__(self, config: BrokerConfig, callbacks: _Callbacks) -> None:
        super().__init__(config)
        self._jisaku_callbacks = callbacks

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
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
        if connect.proto_level == MQTT_311:
            if not _credentials_ok(self._jisaku_callbacks.authenticate, connect.username, connect.password):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(out)
                await out.close()
                return
        replay.replay()
        await self.external_connected(replay, out, listener_name)


def _plugin_path(cls: type) -> str:
    """amqtt loads plugins by dotted path, so name them wherever this module is imported from."""
    return f"{cls.__module__}.{cls.__qualname__}"


class EmbeddedBroker:
    """An MQTT 3.1.1 broker running in the caller's asyncio loop, with jisaku's security rules.

    Every CONNECT must carry a username and a password accepted by `authenticate`; every
    publish, subscription and delivery is checked with `authorize` (default: `device_acl`).
    Refused publishes are dropped silently, refused subscriptions get a failure code.
    Retained messages live in memory only and are gone after `stop()`.

    Example::

        broker = EmbeddedBroker("127.0.0.1", 1883, authenticate=lambda u, p: secrets.get(u) == p)
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
    ) -> None:
        self.host = host
        self.port = port
        self._authenticate = authenticate
        self._authorize = authorize
        self._broker: Broker | None = None

    def _config(self) -> BrokerConfig:
        callbacks = {"authenticate": self._authenticate, "authorize": self._authorize}
        return BrokerConfig(
            # Only our TCP listener: no websocket listener, no 0.0.0.0 default.
            listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=f"{self.host}:{self.port}")},
            # Giving `plugins` replaces amqtt's defaults, which include anonymous access and a
            # $SYS publisher; we want neither.
            plugins={
                _plugin_path(_CallbackAuthPlugin): dict(callbacks),
                _plugin_path(_CallbackTopicPlugin): dict(callbacks),
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
        broker = _GatedBroker(self._config(), _Callbacks(self._authenticate, self._authorize))
        await broker.start()
        self._broker = broker

    async def stop(self) -> None:
        """Disconnect every client and close the listener."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
