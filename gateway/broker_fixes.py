"""The corrections amqtt 0.12 needs to be jisaku's embedded broker, each in one place.

Each class below overrides the amqtt methods of one correction and nothing else; its
docstring says what amqtt did, the upstream issue where there is one, and the test that
fails without it. `jisaku.gateway.broker._JisakuBroker` puts them together and supplies
jisaku's rules through two hooks, `refuse_connect` and `topic_allowed`.

The overridden methods are private to amqtt 0.12 (pyproject pins amqtt < 0.13): check each
correction again when amqtt is upgraded, and drop it when upstream has fixed the problem.

Example::

    class MyBroker(CutConnectionsOnShutdown, RetainedForOwnSubscriptions, KeepUnacknowledged):
        def refuse_connect(self, connect): return None if good(connect) else NOT_AUTHORIZED
        def topic_allowed(self, session, topic, action): return my_rule(session.username, topic)
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
from amqtt.contexts import Action
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.constants import QOS_1
from amqtt.session import Session

__all__ = ["CheckConnectFirst", "CutConnectionsOnShutdown", "CheckTopicsWithoutYielding",
           "RetainedForOwnSubscriptions", "KeepUnacknowledged", "drop_forbidden_will", "Connection"]

log = logging.getLogger(__name__)

# A client that opens a socket must send CONNECT within this time (amqtt waits forever).
CONNECT_TIMEOUT_S = 10.0
# How long shutdown lets amqtt wind down the sessions of connections it has just cut.
DRAIN_TIMEOUT_S = 5.0


# --- a failed login must not touch the session of a connected client ----------------------


@dataclass
class Connection:
    """One client's socket and the credentials it logged in with, to check them again later."""

    writer: asyncio.StreamWriter
    username: str | None = None
    password: str | None = None


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


class CheckConnectFirst(Broker):
    """Read and judge each CONNECT before amqtt's session handling sees it.

    amqtt 0.12 deletes or merges the session with the same client id *before* it
    authenticates, so a failed login with a known client id (device ids are public on the
    map) silently cut a connected client off its subscriptions: it takes the session over
    (or deletes it, for a clean session) and only then answers the failed login. No upstream
    issue was found for this. (Yakifo/amqtt#334, fixed by PR #335 and in 0.12.1, made the
    failed login get its CONNACK; the session is still touched first.)

    Here the CONNECT is read first and given to `refuse_connect`; a refused client gets a
    CONNACK with that return code and is closed, an accepted one is handed to amqtt, which
    reads the same bytes again. `connections` keeps every open socket with the credentials
    it logged in with, so that they can be checked again later.

    Test: tests/test_broker.py::test_failed_login_cannot_take_over_a_client_id.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: dict[asyncio.Task[Any], Connection] = {}
        self.closing = False

    def refuse_connect(self, connect: ConnectPacket) -> int | None:
        """The CONNACK return code that refuses this CONNECT, or None to let amqtt handle it."""
        return None

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        if self.closing:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        connection = self.connections[task] = Connection(writer)
        try:
            await self._connect_checked(reader, writer, listener_name, connection)
        finally:
            del self.connections[task]

    async def _connect_checked(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str,
        connection: Connection,
    ) -> None:
        replay = _ReplayReader(StreamReaderAdapter(reader))
        out = StreamWriterAdapter(writer)
        try:
            connect = await asyncio.wait_for(ConnectPacket.from_stream(replay), CONNECT_TIMEOUT_S)
        except Exception as exc:  # garbage, timeout or a closed socket: nothing to answer
            log.info("dropped a connection that sent no valid CONNECT: %r", exc)
            await out.close()
            return
        refusal = self.refuse_connect(connect)
        if refusal is not None:
            await ConnackPacket.build(0, refusal).to_stream(out)
            await out.close()
            return
        connection.username, connection.password = connect.username, connect.password
        replay.replay()
        await self.external_connected(replay, out, listener_name)


class CutConnectionsOnShutdown(CheckConnectFirst):
    """Shut down by cutting every connection first, then letting amqtt end those sessions.

    amqtt 0.12's shutdown cancels each session's reader task and waits for it to stop.
    Before Python 3.12, asyncio.wait_for swallows a cancellation that arrives just as a
    packet does, so with clients still sending, the shutdown waited forever. A reader that
    sees end-of-file stops by itself. No upstream issue was found for this hang (amqtt PR
    #381, "fix/broker shutdown", after 0.12, is about tasks left behind, not this).

    Test: tests/test_broker.py::test_embedded_broker_stops_while_clients_are_busy.
    """

    async def shutdown(self) -> None:
        self.closing = True
        for connection in self.connections.values():
            connection.writer.transport.abort()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=DRAIN_TIMEOUT_S)
        await super().shutdown()


# --- topic checks ----------------------------------------------------------------------------


class CheckTopicsWithoutYielding(Broker):
    """Check publish, subscribe and every delivery with `topic_allowed`, without an await.

    amqtt 0.12 calls `_topic_filtering` while iterating over its subscriptions; a topic
    plugin (amqtt runs those through asyncio.gather) yields there, and any SUBSCRIBE or
    disconnect in that moment aborted the whole broadcast: readings were lost. Without an
    await the iteration cannot be interrupted. No upstream issue was found.

    Test: tests/test_broker.py::test_embedded_acl_check_never_yields_to_the_event_loop
    (a timing test caught the loss only now and then, so it checks the cause).
    """

    def topic_allowed(self, session: Session | None, topic: str, action: Action) -> bool:
        """Whether `session` may publish / subscribe to / receive `topic`. Must not block."""
        return False

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        return self.topic_allowed(session, topic, action)


class RetainedForOwnSubscriptions(CheckTopicsWithoutYielding):
    """Send a connecting client the retained messages of *its own* subscriptions only.

    On every CONNECT amqtt 0.12 sends the retained messages for every filter that *any*
    client subscribed to, so a device received, say, every other device's retained config
    whenever the gateway was subscribed to jisaku/#. Here a filter the session does not hold
    sends nothing, and each retained topic is checked like a delivery. No upstream issue
    was found.

    Tests: tests/test_broker.py::test_retained_messages_only_for_own_subscriptions and
    ::test_device_reads_only_its_own_config.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliveries: set[asyncio.Task[Any]] = set()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        if all(holder.client_id != session.client_id for holder, _ in holders):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and self.topic_allowed(session, topic, Action.RECEIVE):
                # Not awaited: the caller iterates over the subscriptions (see above).
                send_qos = min(qos, retained.qos or qos)
                self._spawn(handler.mqtt_publish(topic, retained.data, send_qos, retain=True))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._deliveries.add(task)
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[Any]) -> None:
        self._deliveries.discard(task)
        # A client that goes away mid-delivery is normal; just don't leave the error unread.
        if not task.cancelled() and task.exception() is not None:
            log.debug("delivering a retained message failed: %r", task.exception())

    async def shutdown(self) -> None:
        await super().shutdown()
        for task in self._deliveries:
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)


def drop_forbidden_will(session: Session, may_publish: Callable[[str, str], bool]) -> None:
    """Forget the will of a client that may not publish to the will's topic.

    amqtt 0.12 publishes a will without any topic check, so a device could leave a forged
    "offline" (or anything) on another device's topic. Mosquitto accepts such a client but
    drops the will, and so does this. No upstream issue was found. Called by the auth
    plugin, the only place amqtt lets us see the session before the will is kept.

    Test: tests/test_broker.py::test_will_on_someone_elses_topic_is_dropped.
    """
    will_topic = session.will_topic or ""
    if session.will_flag and not may_publish(session.username or "", will_topic):
        log.info("dropping the will of %r: may not publish to %r", session.username, will_topic)
        session.will_flag = False


# --- QoS 1 --------------------------------------------------------------------------------


class _UntilAcknowledged(OrderedDict):
    """A session's messages in flight to its client, kept until the client acknowledges them."""

    def pop(self, packet_id: int, *default: Any) -> Any:
        message = self.get(packet_id)
        if message is not None and message.qos == QOS_1 and message.puback_packet is None:
            return message
        return super().pop(packet_id, *default)


class KeepUnacknowledged(Broker):
    """Keep a QoS 1 message in flight until its client acknowledges it, across reconnects.

    amqtt 0.12 removes a QoS 1 message from ``Session.inflight_out`` when its wait for the
    PUBACK ends, however it ends: when the client died first (a gateway killed mid-stream),
    the message was lost, although the client's persistent session should get it again on
    reconnecting [MQTT-4.4.0-1]. Upstream: Yakifo/amqtt#401 (open; PR #402). Here that
    removal is ignored until the PUBACK has come; amqtt's reconnect sends what is still
    there, marked DUP (the gateway drops copies).

    Tests: tests/test_broker.py::test_qos1_message_a_dead_client_never_acknowledged_comes_again,
    and tests/test_gateway_durability.py::test_sigkill_of_the_gateway_mid_stream_loses_and_duplicates_nothing.
    """

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Session, *args: Any,
                                     **kwargs: Any) -> None:
        if not isinstance(client_session.inflight_out, _UntilAcknowledged):  # a new session, or amqtt's own
            client_session.inflight_out = _UntilAcknowledged(client_session.inflight_out)
        await super()._handle_client_session(reader, writer, client_session, *args, **kwargs)
