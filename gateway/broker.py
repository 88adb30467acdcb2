"""The embedded MQTT broker: amqtt, in-process, with jisaku's accounts and rights.

This is the "nothing to install" broker of `jisaku demo` and `jisaku broker`. A real
deployment runs Mosquitto with files from `jisaku.gateway.mosquitto`; both take their rules
from `jisaku.contract.rights`, so devices behave the same against either. The corrections
amqtt 0.12 needed for this job are in `jisaku.gateway.broker_fixes`, one class each.

Beyond amqtt, and like Mosquitto on a reload (`jisaku mosquitto sync`): a client whose
credentials stop working (secret rotated, device revoked) is cut off, within a second of the
change when the broker is given `version` (e.g. `Registry.version`). Unlike Mosquitto, a
client cannot take over a session (the same client id) that belongs to another account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import BrokerError
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED
from amqtt.mqtt.connect import ConnectPacket
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from jisaku.contract import rights
from jisaku.gateway.broker_fixes import (
    CutConnectionsOnShutdown,
    KeepUnacknowledged,
    RetainedForOwnSubscriptions,
    drop_forbidden_will,
)

__all__ = ["EmbeddedBroker"]

log = logging.getLogger(__name__)

Authenticate = Callable[[str, str], bool]
Authorize = Callable[[str, str, str], bool]
Version = Callable[[], int]

MQTT_311 = 4
# How often the broker asks `version` whether accounts changed (the registry: one row read).
RECHECK_EVERY_S = 1.0


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


class _CallbackAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: our `authenticate` decides, and a will the client may not publish is dropped.

    `_JisakuBroker` has already refused bad credentials before amqtt saw the CONNECT; amqtt
    still needs an auth plugin to say yes, and checking twice costs one more hash.
    """

    Config = _Callbacks

    async def authenticate(self, *, session: Session) -> bool:
        if not _credentials_ok(self.config.authenticate, session.username, session.password):
            return False
        drop_forbidden_will(session, lambda username, topic: _allowed(
            self.config.authorize, username, rights.PUBLISH, topic))
        return True


class _JisakuBroker(CutConnectionsOnShutdown, RetainedForOwnSubscriptions, KeepUnacknowledged):
    """amqtt's Broker with jisaku's accounts and rights, and the corrections of broker_fixes.

    The tests in tests/test_broker.py fail if any of the corrections stops working.
    """

    def __init__(self, config: BrokerConfig, callbacks: _Callbacks) -> None:
        super().__init__(config)
        self._callbacks = callbacks

    def refuse_connect(self, connect: ConnectPacket) -> int | None:
        """No anonymous clients, no bad secrets, no client id that belongs to another account."""
        if connect.proto_level != MQTT_311:
            return None  # amqtt refuses other protocol versions before touching sessions
        if not _credentials_ok(self._callbacks.authenticate, connect.username, connect.password):
            return NOT_AUTHORIZED
        if self._held_by_other(connect.client_id, connect.username):
            # Mosquitto lets any valid login kick the session with the same client id, so a
            # stolen device secret could keep another device (or the gateway) offline, or
            # throw away the gateway's queued readings. Here the client id is refused instead.
            log.warning("refused CONNECT of %r: client id %r belongs to another account",
                        connect.username, connect.client_id)
            return IDENTIFIER_REJECTED
        return None

    def _held_by_other(self, client_id: str | None, username: str | None) -> bool:
        """Whether `client_id` is a live or kept (persistent) session of another account."""
        if not client_id or client_id not in self._sessions:
            return False
        session, _ = self._sessions[client_id]
        if session.username == username:
            return False
        # A disconnected clean session is only waiting to be deleted: anyone may reuse the id.
        return bool(session.transitions.is_connected() or not session.clean_session)

    def cut_off_refused(self) -> list[str]:
        """Cut the connections whose credentials `authenticate` no longer accepts; return their usernames.

        The client sees its connection drop (its will is published, as with Mosquitto); its
        reconnect is then refused. Everyone else stays connected.
        """
        cut = []
        for connection in list(self.connections.values()):
            if connection.username is None:
                continue  # still logging in: its CONNECT is checked against the new state anyway
            if not _credentials_ok(self._callbacks.authenticate, connection.username, connection.password):
                log.warning("cut off %r: its credentials no longer work", connection.username)
                connection.writer.transport.abort()
                cut.append(connection.username)
                connection.username = None  # checked once: the socket is already gone
        return cut

    def topic_allowed(self, session: Session | None, topic: str, action: Action) -> bool:
        """The rights, for publish, subscribe and every delivery (see broker_fixes: never awaits)."""
        if session is None or not session.username or not topic:
            return False
        if action == Action.SUBSCRIBE and topic.startswith("$share/"):
            # amqtt has no shared subscriptions: it would accept the filter and then never
            # match anything. A failure code in SUBACK is better than silence.
            log.warning("%r subscribed to %r: the embedded broker has no shared subscriptions",
                        session.username, topic)
            return False
        # Like Mosquitto, deliveries are checked as reads too, not only the SUBSCRIBE.
        verb = rights.PUBLISH if action == Action.PUBLISH else rights.SUBSCRIBE
        return _allowed(self._callbacks.authorize, session.username, verb, topic)


def _plugin_path(cls: type) -> str:
    """amqtt loads plugins by dotted path, so name them wherever this module is imported from."""
    return f"{cls.__module__}.{cls.__qualname__}"


class EmbeddedBroker:
    """An MQTT 3.1.1 broker running in the caller's asyncio loop, with jisaku's security rules.

    Every CONNECT must carry a username and a password accepted by `authenticate`; every
    publish, subscription and delivery is checked with `authorize` (default: `rights.allowed`).
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
        authorize: Authorize = rights.allowed,
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
        return self._broker.cut_off_refused() if self._broker is not None else []

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
        quiet = logging.getLogger("amqtt.broker")
        was_disabled, quiet.disabled = quiet.disabled, True  # it logs a failed start as a traceback: we say it in words
        try:
            await broker.start()
        except BrokerError as err:
            # amqtt wraps the socket's error: give callers the OSError they can tell "port taken" by.
            if isinstance(err.__cause__, OSError):
                raise err.__cause__ from None
            raise
        finally:
            quiet.disabled = was_disabled
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
