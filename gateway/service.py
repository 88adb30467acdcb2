"""The gateway: subscribes to every device, checks each message, stores it.

Messages are taken off the network thread into a queue and written by one
writer thread in batches (one SQLite transaction for all that has arrived
meanwhile), so a burst of back-filled readings costs a few transactions, not
thousands. Each message is acknowledged to the broker only once its batch is
stored: if the gateway is killed, the broker delivers the rest again, and the
store keeps one copy of anything it sees twice.

On a RabbitMQ cluster (``rabbitmq=`` the nodes' AMQP addresses) the gateway reads the
messages from one replicated queue instead of subscribing (amqp_source.py), and acknowledges
them there, also only once stored; it still publishes config and commands over MQTT.

Anything on ``jisaku/#`` that breaks the contract goes to quarantine with the
reason; the valid messages around it are not affected.

Devices' answers to commands (``cmd/ack``) are kept with the command they answer
(commands.py); every few seconds commands past their expiry without an answer are
marked ``no_answer``.

Example::

    gateway = Gateway(store, registry, "mqtt://127.0.0.1:1883", "_gateway", secret)
    gateway.start()
    ...
    gateway.stop()
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable

import paho.mqtt.client as mqtt

from jisaku.contract import protocol
from jisaku.contract.mqtt import BrokerAddress, new_client

from .influx import InfluxStore, InfluxWriteError
from .buffered_client import BufferedClient
from .commands import Command, CommandBook, decode_answer, send
from .registry import Registry
from .retention import RetentionPolicy
from .store import Batch, ConfigAck, Quarantined, SQLiteStore
from .updates import UpdateBook

if TYPE_CHECKING:
    from .amqp_source import QueueSource

log = logging.getLogger(__name__)

BATCH_MAX = 1000
HOUSEKEEPING_S = 5.0
QUARANTINE_LOG_EACH = 5
QUARANTINE_SUMMARY_S = 60.0
RETENTION_EVERY_S = 3600.0
SHARE_GROUP = "$share/jisaku"
# How long an unknown device id is remembered as unknown before the registry is asked again.
UNKNOWN_RECHECK_S = 1.0
# How long the housekeeping waits for the broker to take an update offer.
PUBLISH_WAIT_S = 5.0
# On RabbitMQ: how long after a device says it is online its unanswered settings are sent again.
# It says so just before it subscribes; a moment later the settings find its subscription.
RESEND_CONFIG_AFTER_S = 2.0


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in counter.most_common())


def push_config(client: mqtt.Client, store: SQLiteStore, registry: Registry, device_id: str, changes: dict) -> dict:
    """Publish a device's settings as a new revision, retained so it gets them whenever it is back.

    The device answers on ``config/ack``; the gateway records whether it applied them.
    """
    if registry.get(device_id) is None:
        raise ValueError(f"device {device_id!r} is not registered")
    config = store.next_config(device_id, changes)
    payload = json.dumps(config, separators=(",", ":"), allow_nan=False).encode()
    message = client.publish(protocol.topic(device_id, "config"), payload, qos=1, retain=True)
    message.wait_for_publish(timeout=10)
    if not message.is_published():
        raise RuntimeError(f"the broker did not take rev {config['rev']} for {device_id}; is it running?")
    return config


class Gateway:
    def __init__(self, store: SQLiteStore, registry: Registry, broker_url: str, username: str, password: str,
                 client_id: str = "jisaku-gateway", readings: InfluxStore | None = None, shared: bool = False,
                 retention: RetentionPolicy | None = None, rabbitmq: str | list[str] | None = None,
                 queue_name: str | None = None, acting: bool = True):
        self.store = store
        # Readings go here when it is given (InfluxDB); the SQLite store keeps the rest.
        self.readings = readings
        self.registry = registry
        self.client_id = client_id
        self.broker = BrokerAddress.parse(broker_url)
        # Shared: several gateways (each with its own client id) split the messages between
        # them, each message going to one of them. Mosquitto, EMQX and others do this;
        # the embedded broker does not. Without it, one gateway takes everything.
        self.topic_filter = f"{SHARE_GROUP}/{protocol.TOPIC_ROOT}/#" if shared else f"{protocol.TOPIC_ROOT}/#"
        # RabbitMQ (no shared subscriptions before 3.13): the messages come from one queue that
        # every worker reads (amqp_source.py); MQTT is then only for what the gateway publishes.
        self.queue: QueueSource | None = None
        if rabbitmq:
            from .amqp_source import QueueSource  # pika: needed only here

            self.queue = QueueSource(rabbitmq, username, password, self._on_queue_message,
                                     **({"queue": queue_name} if queue_name else {}))
        # A standby box's gateway (gateway/standby.py) only stores until its box takes over: it
        # sends no settings again, offers no updates, expires no commands; the first box does.
        self.acting = acting
        self.connected = threading.Event()
        self._stopping = False
        self.quarantine_counts: Counter[str] = Counter()
        self._quarantine_lock = threading.Lock()
        self._quarantine_logged: Counter[str] = Counter()
        self._quarantine_unlogged: Counter[str] = Counter()
        self._quarantine_summary_due = 0.0
        self.stored_readings = 0
        # Called with each batch once it is stored (alert rules, for one); in the writer
        # thread, so a listener must be quick and must not raise.
        self.listeners: list[Callable[[Batch], None]] = []
        # (topic, payload, received, mid, qos, connection number), or None to stop
        self._inbox: queue.SimpleQueue[tuple[str, bytes, float, int, int, int] | None] = queue.SimpleQueue()
        self._connection = 0
        self._known: set[str] = set()
        self._unknown_logged: set[str] = set()
        self._known_checked = 0.0
        self._writer = threading.Thread(target=self._write_loop, name="gateway-writer", daemon=True)
        self.retention = retention or RetentionPolicy()
        self.commands = CommandBook(store.db)
        self.updates = UpdateBook(store.db)
        self._stopped = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="gateway-housekeeping", daemon=True)
        # A persistent session: while the gateway restarts, the broker keeps its QoS 1 messages.
        # (Not when reading the queue: a session that nobody reads would only fill up.)
        self._client = new_client(client_id, username, password, self.broker, clean_session=self.queue is not None,
                                  client_class=BufferedClient)
        # The gateway sits next to its broker: after a restart it must be back before the
        # devices send their backlog (they wait BACKLOG_GRACE_S after connecting), or an
        # embedded broker, which keeps no sessions, would hand it to nobody.
        self._client.reconnect_delay_set(min_delay=0.5, max_delay=0.5)
        self._client.manual_ack_set(True)  # acknowledged once stored, in _write
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def start(self) -> None:
        self._writer.start()
        self._housekeeper.start()
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        if self.queue is not None:
            self.queue.start()

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        if self.queue is not None:
            self.queue.stop()
        self._client.disconnect()
        self._client.loop_stop()
        self._inbox.put(None)
        self._writer.join(timeout=10)
        log.info("gateway %s stopped; it stored %d readings and quarantined %d messages since it started",
                 self.client_id, self.stored_readings, sum(self.quarantine_counts.values()))

    # ------------------------------------------------------------ network thread

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("the broker at %s refused the gateway: %s (check the _gateway account's secret)",
                      self.broker, reason_code)
            return
        self._connection += 1
        if self.queue is None:
            client.subscribe(self.topic_filter, qos=1)
        log.info("gateway connected to %s", self.broker)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("the broker at %s refused the subscription to %s. A shared subscription needs a"
                      " broker that has them (Mosquitto, not the embedded broker): run one gateway"
                      " without --shared/--workers, or use Mosquitto.", self.broker, self.topic_filter)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("gateway lost the broker at %s (%s); reconnecting", self.broker, reason_code)
        self.connected.clear()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self._inbox.put((message.topic, message.payload, time.time(), message.mid, message.qos, self._connection))

    def _on_queue_message(self, topic: str, payload: bytes, tag: int, connection: int) -> None:
        # The queue's thread; QoS 1 so that _write acknowledges it.
        self._inbox.put((topic, payload, time.time(), tag, 1, connection))

    # ------------------------------------------------------------ writer thread

    def _write_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            batch, acks = Batch(), []
            self._take(batch, acks, item)
            # Everything that arrived while the last batch was written goes in this one;
            # nothing waits for more to come.
            while len(acks) < BATCH_MAX:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(batch, acks)
                    return
                self._take(batch, acks, item)
            self._write(batch, acks)

    def _take(self, batch: Batch, acks: list[tuple[int, int, int]], item: tuple) -> None:
        topic, payload, received, mid, qos, connection = item
        self.sort_into(batch, topic, payload, received)
        acks.append((mid, qos, connection))

    def _write(self, batch: Batch, acks: list[tuple[int, int, int]]) -> None:
        if self.readings is not None and batch.readings:
            # Never raises for an unreachable InfluxDB: the readings are spooled on disk.
            try:
                self.readings.write_readings(batch.readings)
            except InfluxWriteError as err:
                log.error("InfluxDB refused %d readings: %s", len(batch.readings), err)
                for device_id, reading in batch.readings:
                    batch.quarantined.append(Quarantined(
                        f"jisaku/{device_id}/data", json.dumps({"ts": reading.ts, "seq": reading.seq,
                                                                "v": reading.values}).encode(),
                        "store_refused", str(err), time.time()))
        delay = 0.5
        while True:
            try:
                self.store.write(batch)
                break
            except Exception as err:  # a full disk or a locked file must not kill the gateway
                log.error("could not store %d messages (%s); retrying in %.0f s. Check free disk space"
                          " and that %s is writable.", len(batch), err, delay, self.store.db.path)
                time.sleep(delay)
                delay = min(delay * 2, 30)
        if self.queue is not None:
            # Messages are written in the order they came: acknowledging the newest of each
            # connection acknowledges all before it (those of an older connection come again).
            newest: dict[int, int] = {}
            for tag, _qos, connection in acks:
                newest[connection] = max(tag, newest.get(connection, 0))
            for connection, tag in newest.items():
                self.queue.ack(tag, connection)
        else:
            for mid, qos, connection in acks:
                # An ack belongs to the connection the message came on; after a reconnect the
                # broker sends the message again, and the store keeps it once.
                if qos > 0 and connection == self._connection:
                    self._client.ack(mid, qos)
        self.stored_readings += len(batch.readings)
        if self.queue is not None and self.acting:
            self._resend_pending(batch)
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:  # an alert rule must never stop readings being stored
                log.exception("a listener failed on a stored batch")
        with self._quarantine_lock:
            for item in batch.quarantined:
                self.quarantine_counts[item.reason] += 1
                # A broken device can send thousands a minute: the first few of each reason are
                # logged one by one, the rest counted in a summary once a minute.
                if self._quarantine_logged[item.reason] < QUARANTINE_LOG_EACH:
                    self._quarantine_logged[item.reason] += 1
                    log.warning("quarantined a message on %s: %s (%s)", item.topic, item.reason, item.detail)
                else:
                    self._quarantine_unlogged[item.reason] += 1

    def _resend_pending(self, batch: Batch) -> None:
        """A device that comes online with settings it has not applied, or an update offer it
        has not taken up, gets them again.

        RabbitMQ keeps retained messages on the node they were published to: a device that
        connects to another node (it moved, or was away when they went out) does not find them
        there. A message published now reaches it on whichever node it is.
        """
        for device_id in {device_id for device_id, status, _ in batch.statuses if status.state == protocol.STATUS_ONLINE}:
            # Not here: the writer must not wait, and the device has not subscribed yet.
            timer = threading.Timer(RESEND_CONFIG_AFTER_S, self._resend, args=(device_id,))
            timer.daemon = True
            timer.start()

    def _resend(self, device_id: str) -> None:
        if self._stopping:
            return
        state = self.store.config_state(device_id)
        if state is not None and state["state"] == "pending":  # not answered meanwhile
            payload = json.dumps({"rev": state["rev"], **state["settings"]}, separators=(",", ":"), allow_nan=False)
            # Not waited for; if it is lost, the device's next "online" brings it again.
            self._client.publish(protocol.topic(device_id, "config"), payload.encode(), qos=1, retain=True)
            log.info("%s is online with settings rev %d not applied: sent them again", device_id, state["rev"])
        waiting = self.updates.waiting_offer(device_id)
        if waiting is not None:
            self._client.publish(*waiting, qos=1, retain=True)
            log.info("%s is online with an update offer it has not taken up: sent it again", device_id)

    def _log_quarantine_summary(self) -> None:
        if time.monotonic() < self._quarantine_summary_due:
            return
        self._quarantine_summary_due = time.monotonic() + QUARANTINE_SUMMARY_S
        with self._quarantine_lock:
            unlogged, self._quarantine_unlogged = self._quarantine_unlogged, Counter()
            self._quarantine_logged.clear()
        if unlogged:
            log.warning("quarantined %d more messages in the last minute: %s (jisaku quarantine shows them;"
                        " totals since start: %s)", sum(unlogged.values()), _counts(unlogged),
                        _counts(self.quarantine_counts))

    # ------------------------------------------------------------ housekeeping thread

    def _housekeeping(self) -> None:
        """Every few seconds mark silent devices stale; every hour apply the retention policy."""
        next_retention = time.monotonic() + 60  # not in the busy first minute after a start
        while not self._stopped.wait(HOUSEKEEPING_S):
            try:
                for device_id in self.store.mark_stale():
                    log.warning("%s has gone silent: marked stale", device_id)
                if self.acting:  # a standby: the first box sends and expires these; this one only stores
                    for command in self.commands.expire():
                        log.info("command %s to %s got no answer before it expired", command.id, command.device_id)
                    self.update_round()
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_EVERY_S
                    folded, deleted = self.retention.apply(self.store.db)
                    if deleted:
                        log.info("retention: folded %d old readings into %d hourly rows", deleted, folded)
                    thinned = self.retention.thin_pictures(self.store.db)
                    if thinned:
                        log.info("retention: deleted %d old pictures", thinned)
                self._log_quarantine_summary()
            except Exception:  # a locked or full database: try again next round
                log.exception("housekeeping failed; trying again in %.0f s", HOUSEKEEPING_S)

    def update_round(self) -> None:
        """Move rollouts on, publish the offers now due (retained) and remove finished ones."""
        self.updates.advance()
        if not self.connected.is_set():
            return  # the offers wait in the database until the broker is back
        unsent = []
        for offer_id, topic, payload in self.updates.due_offers():
            if not self._published(self._client.publish(topic, payload, qos=1, retain=True)):
                unsent.append(offer_id)
        if unsent:
            self.updates.unsent(unsent)
            log.warning("the broker did not take %d update offers; trying again in %.0f s", len(unsent),
                        HOUSEKEEPING_S)
        for _offer_id, topic in self.updates.due_clears():
            # An empty retained message removes the offer: a device that comes back later is not
            # told about an update that is over. If this one is lost the device ignores the old
            # offer anyway (it knows the offers it finished).
            self._client.publish(topic, b"", qos=1, retain=True)

    @staticmethod
    def _published(message: mqtt.MQTTMessageInfo) -> bool:
        try:
            message.wait_for_publish(timeout=PUBLISH_WAIT_S)
        except (RuntimeError, ValueError):
            return False  # not connected: paho says so by raising
        return message.is_published()

    def sort_into(self, batch: Batch, topic: str, payload: bytes, received: float) -> None:
        """Check one message and put it in the batch where it belongs."""
        try:
            if topic.startswith(f"{protocol.TOPIC_ROOT}/_"):
                return  # service topics such as jisaku/_alerts/… (no device id starts with _)
            device_id, channel = protocol.parse_topic(topic)
            if channel in protocol.GATEWAY_CHANNELS:
                return  # our own config and commands
            if not self._is_known(device_id) and not self._registered_on_first_box(device_id):
                raise protocol.ProtocolError(
                    "unknown_device", f"device {device_id!r} is not registered: add it with jisaku devices add"
                )
            if channel == "data":
                batch.readings.extend((device_id, r) for r in protocol.decode_readings(payload, received))
            elif channel == "event":
                batch.events.append((device_id, protocol.decode_event(payload, received)))
            elif channel == "status":
                batch.statuses.append((device_id, protocol.decode_status(payload), received))
            elif channel == "config/ack":
                ack = protocol.decode_object(payload)
                if type(ack.get("rev")) is not int or not isinstance(ack.get("ok"), bool):
                    raise protocol.ProtocolError("bad_ack", 'a config ack is {"rev": <number>, "ok": true|false}')
                reason = ack.get("reason")
                batch.config_acks.append(ConfigAck(device_id, ack["rev"], ack["ok"],
                                                   str(reason) if reason is not None else None, received))
            elif channel == "cmd/ack":
                # Kept with the command it answers (commands.py); one for a command this
                # server did not send is logged and ignored there.
                batch.command_acks.append((device_id, decode_answer(payload), received))
        except protocol.ProtocolError as err:
            batch.quarantined.append(Quarantined(topic, payload, err.reason, str(err), received))

    def push_config(self, device_id: str, changes: dict) -> dict:
        """Send a device new settings as a new revision."""
        return push_config(self._client, self.store, self.registry, device_id, changes)

    def send_command(self, command: Command) -> Command:
        """Publish a command written with ``self.commands.issue`` (alert rules' actions), without
        waiting for the broker: the writer thread must not stall. One the broker never got
        reads ``no_answer`` after its expiry."""
        return send(self._client, self.commands, command, wait_s=0)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish on the gateway's own connection (alert notifications on jisaku/_alerts/…)."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def _registered_on_first_box(self, device_id: str) -> bool:
        """On a standby box: a device this box does not know yet was added on the first box since
        the last refresh (the broker let it in: the first box's registry knows it). Its messages
        are stored, not quarantined: the first box may die before the next refresh."""
        if self.acting:
            return False
        if device_id not in self._unknown_logged:
            self._unknown_logged.add(device_id)
            log.info("storing the messages of %s, not in this box's registry yet (added on the first box since"
                     " the last jisaku standby refresh?)", device_id)
        return True

    def _is_known(self, device_id: str) -> bool:
        if device_id in self._known:
            return True
        now = time.monotonic()
        if now - self._known_checked > UNKNOWN_RECHECK_S or not self._known:
            self._known = self.registry.known_ids()
            self._known_checked = now
        return device_id in self._known
