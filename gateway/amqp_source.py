"""Where the gateway takes messages from on a RabbitMQ cluster: one shared, replicated queue.

RabbitMQ's MQTT plugin hands every message a device publishes to the AMQP exchange
``amq.topic``. The gateway declares one durable *quorum* queue there, ``jisaku-gateway``
(copied to every node of the cluster, so it survives a dead node), bound to ``jisaku.#``,
and reads it over AMQP. Several gateway workers read the same queue: RabbitMQ gives each
message to one of them, as a shared subscription does on Mosquitto. A message is
acknowledged (``basic_ack``) only once the gateway has stored it; a worker that dies, or a
node that dies under it, leaves its unacknowledged messages in the queue for the others.

A device's reading is acknowledged to the device (PUBACK) only once this queue has it on a
majority of the nodes, so a reading the device was told about survives one dead node.

A standby box's gateway reads a queue of its own, ``jisaku-standby``, bound the same way
(``queue=``; gateway/standby.py): each queue gets every message, so each box stores them all.

Example::

    source = QueueSource(["amqp://10.0.0.5:5672", "amqp://10.0.0.6:5672"], "_gateway", secret,
                         deliver=lambda topic, payload, tag, connection: ...)
    source.start()
    ...                                   # once stored:
    source.ack(tag, connection)
    source.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pika
import pika.exceptions

from jisaku.contract import protocol

from .rabbitmq import EXCHANGE, QUEUE, QUEUE_PREFIX

log = logging.getLogger(__name__)

BINDING = f"{protocol.TOPIC_ROOT}.#"
# How many messages a worker holds unacknowledged: a batch's worth, so the writer never waits.
PREFETCH = 1000
RETRY_S = 0.5

# The channels, longest first ("config/ack" before "config"), in the form a routing key has them.
_CHANNELS = sorted(protocol.DEVICE_CHANNELS + protocol.GATEWAY_CHANNELS, key=len, reverse=True)


def topic_from_routing_key(routing_key: str) -> str:
    """The MQTT topic a device published on, from the routing key RabbitMQ made of it.

    RabbitMQ turns '/' into '.', and keeps a '.' in a device id, so ``jisaku.snow.1.data``
    could be ``jisaku/snow/1.data`` or ``jisaku/snow.1/data``. The channel names are fixed and
    none ends another ("ack" alone is no channel), so reading the channel from the end
    finds the device id whole::

        topic_from_routing_key("jisaku.snow.1.config.ack")   # "jisaku/snow.1/config/ack"
    """
    root = protocol.TOPIC_ROOT + "."
    if routing_key.startswith(root):
        rest = routing_key[len(root):]
        for channel in _CHANNELS:
            ending = "." + channel.replace("/", ".")
            if rest.endswith(ending) and len(rest) > len(ending):
                return f"{protocol.TOPIC_ROOT}/{rest[:-len(ending)]}/{channel}"
    # Not a device's topic (jisaku._alerts.…, or malformed): readable, for quarantine.
    return routing_key.replace(".", "/")


def check_queue_name(name: str) -> str:
    """A gateway's queue is named ``jisaku-…`` (the rights of jisaku rabbitmq auth allow those)."""
    if not name.startswith(QUEUE_PREFIX) or len(name) <= len(QUEUE_PREFIX) or not name.isascii() \
            or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"a gateway's queue name {name!r} should start with {QUEUE_PREFIX} and have only letters,"
                         f" digits, - and _: {QUEUE} on the first box, jisaku-standby on a standby box")
    return name


def parse_amqp_urls(urls: str | list[str]) -> list[tuple[str, int]]:
    """``"amqp://10.0.0.5:5672 amqp://10.0.0.6:5672"`` (spaces or commas) -> [(host, port), ...]."""
    texts = urls.replace(",", " ").split() if isinstance(urls, str) else list(urls)
    if not texts:
        raise ValueError("no RabbitMQ address given: write amqp://host:5672, or several, one per node")
    params = []
    for text in texts:
        parts = urlsplit(text if "://" in text else f"amqp://{text}")
        try:
            port = parts.port or 5672
        except ValueError:
            port = None
        if parts.scheme != "amqp" or not parts.hostname or port is None:
            raise ValueError(f"RabbitMQ address {text!r} should look like amqp://host:5672")
        params.append((parts.hostname, port))
    return params


class QueueSource:
    """Reads the gateway's queue in its own thread and hands each message to ``deliver``.

    ``deliver(topic, payload, tag, connection)`` is called for each message; ``connection``
    counts the connections made, because a tag is only good on the connection it came on
    (after a reconnect RabbitMQ delivers the unacknowledged messages again).
    """

    def __init__(self, urls: str | list[str], username: str, password: str,
                 deliver: Callable[[str, bytes, int, int], None], queue: str = QUEUE):
        self.addresses = parse_amqp_urls(urls)
        # "jisaku-gateway"; a standby box's gateway reads a queue of its own, "jisaku-standby"
        # (gateway/standby.py), bound to the same keys: each queue gets every message.
        self.queue = check_queue_name(queue)
        self._credentials = pika.PlainCredentials(username, password)
        self._deliver = deliver
        self.consuming = threading.Event()
        self.connection_number = 0
        self._connection: pika.BlockingConnection | None = None
        self._channel = None
        self._stopping = threading.Event()
        self._next = 0  # which address to try first: the one after the last that failed
        self._thread = threading.Thread(target=self._run, name="gateway-queue", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # the thread sees it within half a second, and closes its connection
        self._thread.join(timeout=10)

    def ack(self, tag: int, connection: int) -> None:
        """Acknowledge every message up to ``tag`` (they are stored); from any thread.

        The writer stores messages in the order they came, so one ``multiple`` ack covers the
        whole batch. An ack for an older connection is dropped: its messages come again.
        """
        current = self._connection
        if current is None or connection != self.connection_number:
            return
        channel = self._channel
        try:
            current.add_callback_threadsafe(lambda: channel.basic_ack(tag, multiple=True))
        except Exception:  # the connection just closed: those messages are delivered again
            log.info("could not acknowledge on a closed connection; RabbitMQ delivers those messages again")

    # ------------------------------------------------------------ its own thread

    def _run(self) -> None:
        warned = False
        while not self._stopping.is_set():
            host, port = self.addresses[self._next % len(self.addresses)]
            try:
                self._consume(host, port)
                warned = False
            except (pika.exceptions.AMQPError, OSError) as err:
                if self._stopping.is_set():
                    break
                if self.consuming.is_set() or not warned:
                    log.warning("gateway lost RabbitMQ at amqp://%s:%d (%s); trying the next node", host, port,
                                err or type(err).__name__)
                    warned = True
                self.consuming.clear()
                self._next += 1
                time.sleep(RETRY_S)
            finally:
                self._connection = None
                self.consuming.clear()

    def _consume(self, host: str, port: int) -> None:
        params = pika.ConnectionParameters(host, port, credentials=self._credentials, heartbeat=30,
                                           blocked_connection_timeout=60, socket_timeout=5)
        try:
            connection = pika.BlockingConnection(params)
        except pika.exceptions.ProbableAuthenticationError:
            log.error("RabbitMQ at amqp://%s:%d refused the gateway's login: check the _gateway secret, and"
                      " that jisaku rabbitmq auth runs at the address the nodes' rabbitmq.conf names", host, port)
            raise
        channel = connection.channel()
        # One queue for all gateways, replicated on the cluster's nodes (a quorum queue).
        channel.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(self.queue, EXCHANGE, BINDING)
        channel.basic_qos(prefetch_count=PREFETCH)
        self.connection_number += 1
        number = self.connection_number
        self._connection, self._channel = connection, channel

        def on_message(ch, method, properties, body: bytes) -> None:
            self._deliver(topic_from_routing_key(method.routing_key), body, method.delivery_tag, number)

        channel.basic_consume(self.queue, on_message)
        log.info("gateway reading queue %s at amqp://%s:%d", self.queue, host, port)
        self.consuming.set()
        try:
            while not self._stopping.is_set() and connection.is_open:
                connection.process_data_events(time_limit=0.5)
        finally:
            if connection.is_open:
                connection.close()
