"""The broker side of the security model, against both brokers jisaku ships with.

Every behavioural test runs against the embedded amqtt broker and against a real Mosquitto
configured by `write_mosquitto_files`, with real paho-mqtt 2 clients, because devices must
not be able to tell which one they talk to.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from amqtt.contexts import Action, BrokerConfig
from amqtt.session import Session
from paho.mqtt.client import CallbackAPIVersion, MQTTMessage, MQTTv311

from jisaku.contract import rights
from jisaku.gateway.broker import _Callbacks, _JisakuBroker
from jisaku.gateway.mosquitto import write_mosquitto_files
from jisaku.gateway.secrets import hash_secret

from .brokers import EmbeddedBrokerThread, MosquittoServer

HOST = "127.0.0.1"
WAIT_S = 5.0  # upper bound for anything that should happen
GRACE_S = 0.5  # how long we keep listening for something that must NOT arrive

ACCOUNTS = {
    "_gateway": "gateway-secret",
    "_dashboard": "dashboard-secret",
    "bus-1": "bus-1-secret",
    "bus-2": "bus-2-secret",
}


def linger() -> None:
    """After a marker arrived, give a forbidden message sent before it a moment to show up.

    It was sent first, so it would normally have arrived before the marker; this is a margin.
    """
    time.sleep(GRACE_S)


@dataclass
class Broker:
    kind: str
    port: int
    server: MosquittoServer | EmbeddedBrokerThread


@pytest.fixture
def broker(broker_kind: str, tmp_path: Path) -> Iterator[Broker]:
    """Each broker kind in turn (conftest's `broker_kind` skips, or fails in CI, without Mosquitto)."""
    if broker_kind == "embedded":
        with EmbeddedBrokerThread(dict(ACCOUNTS)) as embedded:
            yield Broker("embedded", embedded.port, embedded)
        return
    with MosquittoServer(tmp_path / "mosquitto", dict(ACCOUNTS)) as server:
        yield Broker("mosquitto", server.port, server)


class Peer:
    """A paho-mqtt 2 client with blocking, bounded helpers; records every message it gets."""

    def __init__(self, port: int, client_id: str, username: str | None = None, password: str | None = None,
                 *, will: tuple[str, str] | None = None, clean_session: bool = True) -> None:
        # No automatic reconnects: a refused or killed peer must stay down, and its network
        # thread must end at once instead of sleeping in paho's reconnect back-off.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTv311,
                                  clean_session=clean_session, reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self._cond = threading.Condition()
        self.connack: mqtt.ReasonCode | None = None
        self.messages: list[MQTTMessage] = []
        self._subacks: dict[int, list[mqtt.ReasonCode]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()
        with self._cond:
            answered = self._cond.wait_for(lambda: self.connack is not None, WAIT_S)
        if not answered:
            self.close()
            raise AssertionError(f"no CONNACK for {client_id}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.connack = reason_code
            self._cond.notify_all()

    def _on_message(self, client, userdata, message: MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self._subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, *topics: str) -> list[mqtt.ReasonCode]:
        """Subscribe at QoS 1 and return the broker's answer for each filter."""
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._subacks, WAIT_S), "no SUBACK"
            return self._subacks[mid]

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK (brokers ack refused publishes too)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for(self, topic: str, payload: str | None = None, timeout: float = WAIT_S) -> MQTTMessage | None:
        def match() -> MQTTMessage | None:
            for m in self.messages:
                if m.topic == topic and (payload is None or m.payload == payload.encode()):
                    return m
            return None

        with self._cond:
            self._cond.wait_for(lambda: match() is not None, timeout)
            return match()

    def received(self, predicate: Callable[[MQTTMessage], bool]) -> list[MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if predicate(m)]

    def kill(self) -> None:
        """Lose the connection without DISCONNECT, like a device whose power or Wi-Fi dies."""
        sock = self.client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)  # paho's thread sees EOF and ends; no DISCONNECT
        self.client.loop_stop()

    def close(self) -> None:
        if self.client.is_connected():
            self.client.disconnect()  # also wakes paho's thread, so loop_stop returns at once
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    """Make Peers that are closed after the test, whatever happens."""
    made: list[Peer] = []

    def make(*args, **kwargs) -> Peer:
        made.append(Peer(*args, **kwargs))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


# --- connecting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password", "accepted"),
    [
        (None, None, False),  # anonymous
        ("bus-1", "not-the-secret", False),
        ("bus-1", "", False),
        ("bus-9", "bus-1-secret", False),  # unknown account, someone else's secret
        ("bus-1", "bus-1-secret", True),
        ("_gateway", "gateway-secret", True),
    ],
    ids=["anonymous", "wrong-password", "empty-password", "unknown-user", "device", "service"],
)
def test_connect_needs_known_credentials(broker: Broker, peers, username, password, accepted) -> None:
    peer = peers(broker.port, "c-1", username, password)
    assert peer.accepted is accepted, peer.connack


def test_failed_login_cannot_take_over_a_client_id(broker: Broker, peers) -> None:
    """A refused CONNECT must not disturb the connected client with the same client id."""
    gateway = peers(broker.port, "jisaku-gateway", "_gateway", "gateway-secret")
    assert gateway.subscribe("jisaku/#")[0].value == 1
    intruder = peers(broker.port, "jisaku-gateway", "_gateway", "guessed")
    assert not intruder.accepted
    intruder.close()

    device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret")
    device.publish("jisaku/bus-1/data", '{"seq": 1}')
    assert gateway.wait_for("jisaku/bus-1/data", '{"seq": 1}'), "gateway was cut off by a failed login"


# --- what devices may publish ------------------------------------------------------------------


def test_device_publishes_only_its_own_topics(broker: Broker, peers) -> None:
    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    assert gateway.subscribe("jisaku/#")[0].value == 1
    device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret")

    device.publish("jisaku/bus-2/data", "forged")  # someone else's data: dropped
    device.publish("jisaku/bus-1/config", "forged")  # its own config is the gateway's to write
    device.publish("elsewhere/data", "forged")
    for channel in ("data", "event", "status", "config/ack", "cmd/ack"):
        device.publish(f"jisaku/bus-1/{channel}", "ok")
    device.publish("jisaku/bus-1/data", "marker")

    assert gateway.wait_for("jisaku/bus-1/data", "marker"), "valid marker never arrived"
    linger()
    assert gateway.received(lambda m: m.payload == b"forged") == []
    got = {m.topic for m in gateway.received(lambda m: m.payload == b"ok")}
    assert got == {f"jisaku/bus-1/{c}" for c in ("data", "event", "status", "config/ack", "cmd/ack")}


# --- what devices may read ---------------------------------------------------------------------


def test_device_reads_only_its_own_config(broker: Broker, peers) -> None:
    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    # amqtt used to send a connecting client the retained messages of everyone's
    # subscriptions: with the gateway on jisaku/#, bus-1 got bus-2's config.
    gateway.subscribe("jisaku/#")
    gateway.publish("jisaku/bus-2/config", '{"rev": 3}', retain=True)
    gateway.publish("jisaku/bus-1/config", '{"rev": 7}', retain=True)

    device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret")
    codes = device.subscribe(
        "jisaku/bus-2/config", "jisaku/+/config", "jisaku/bus-1/config", "jisaku/bus-1/cmd"
    )
    assert [c.is_failure for c in codes[2:]] == [False, False]
    if broker.kind == "embedded":
        # Mosquitto 2.0's ACL file only acts on delivery and grants every SUBSCRIBE.
        assert [c.is_failure for c in codes[:2]] == [True, True]

    own = device.wait_for("jisaku/bus-1/config", '{"rev": 7}')
    assert own is not None and own.retain, "own retained config not delivered as retained"

    gateway.publish("jisaku/bus-2/config", '{"rev": 4}', retain=True)
    gateway.publish("jisaku/bus-2/cmd", '{"id": "x", "do": "beep"}')
    gateway.publish("jisaku/bus-1/cmd", '{"id": "1", "do": "beep"}')
    assert device.wait_for("jisaku/bus-1/cmd"), "own command not delivered"
    linger()
    assert device.received(lambda m: "bus-2" in m.topic) == []


def test_service_account_reads_all_of_jisaku_but_nothing_else(broker: Broker, peers) -> None:
    dashboard = peers(broker.port, "dash", "_dashboard", "dashboard-secret")
    codes = dashboard.subscribe("jisaku/+/data", "#")
    assert not codes[0].is_failure
    if broker.kind == "embedded":
        assert codes[1].is_failure

    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    gateway.publish("outside/jisaku", "no")
    gateway.publish("jisaku/bus-2/data", '{"seq": 1}')
    assert dashboard.wait_for("jisaku/bus-2/data")
    linger()
    assert dashboard.received(lambda m: not m.topic.startswith("jisaku/")) == []


def test_retained_messages_only_for_own_subscriptions(broker: Broker, peers) -> None:
    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    gateway.subscribe("jisaku/#")  # amqtt used to send newcomers what matched *this* filter
    gateway.publish("jisaku/bus-1/config", '{"rev": 1}', retain=True)
    gateway.publish("jisaku/bus-1/status", "online", retain=True)

    dashboard = peers(broker.port, "dash", "_dashboard", "dashboard-secret")
    dashboard.subscribe("jisaku/+/status")
    assert dashboard.wait_for("jisaku/bus-1/status", "online")
    linger()
    assert [m.topic for m in dashboard.messages] == ["jisaku/bus-1/status"]


def test_shared_subscription(broker: Broker, peers) -> None:
    """Mosquitto serves `$share/jisaku/...`; amqtt has no shared subscriptions and says so."""
    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    (code,) = gateway.subscribe("$share/jisaku/jisaku/+/data")
    if broker.kind == "embedded":
        assert code.is_failure
        return
    assert not code.is_failure
    device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret")
    device.publish("jisaku/bus-1/data", '{"seq": 1}')
    assert gateway.wait_for("jisaku/bus-1/data")


# --- last will, QoS 1 sessions -----------------------------------------------------------------


def test_last_will_is_delivered_and_retained(broker: Broker, peers) -> None:
    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    assert gateway.subscribe("jisaku/+/status")[0].value == 1
    device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret", will=("jisaku/bus-1/status", "offline"))
    device.publish("jisaku/bus-1/status", "online", retain=True)
    assert gateway.wait_for("jisaku/bus-1/status", "online")

    device.kill()
    assert gateway.wait_for("jisaku/bus-1/status", "offline"), "will not delivered"

    later = peers(broker.port, "dash", "_dashboard", "dashboard-secret")
    later.subscribe("jisaku/bus-1/status")
    status = later.wait_for("jisaku/bus-1/status")
    assert status is not None and status.payload == b"offline" and status.retain


def test_will_on_someone_elses_topic_is_dropped(broker: Broker, peers) -> None:
    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    gateway.subscribe("jisaku/#")
    liar = peers(broker.port, "bus-1", "bus-1", "bus-1-secret", will=("jisaku/bus-2/status", "offline"))
    assert liar.accepted  # like Mosquitto: the client may connect, its will is not published
    liar.publish("jisaku/bus-1/data", "marker")
    liar.kill()

    assert gateway.wait_for("jisaku/bus-1/data", "marker")
    linger()
    assert gateway.received(lambda m: m.topic == "jisaku/bus-2/status") == []


def test_qos1_messages_wait_for_a_persistent_session(broker: Broker, peers) -> None:
    """A gateway that was away gets the readings it missed when it comes back."""
    gateway = peers(broker.port, "gw-persistent", "_gateway", "gateway-secret", clean_session=False)
    gateway.subscribe("jisaku/+/data")
    gateway.close()

    device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret")
    for seq in range(3):
        device.publish("jisaku/bus-1/data", f'{{"seq": {seq}}}')

    back = peers(broker.port, "gw-persistent", "_gateway", "gateway-secret", clean_session=False)
    for seq in range(3):
        assert back.wait_for("jisaku/bus-1/data", f'{{"seq": {seq}}}'), f"seq {seq} lost"


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _mqtt_packet(first_byte: int, body: bytes) -> bytes:
    """A packet with its remaining length (bodies here are short: one length byte)."""
    assert len(body) < 128
    return bytes([first_byte, len(body)]) + body


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """(first byte, body) of the next packet from `sock`."""
    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    first = read(1)[0]
    length, shift = 0, 0
    while True:
        byte = read(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return first, read(length)


def test_qos1_message_a_dead_client_never_acknowledged_comes_again(broker: Broker, peers) -> None:
    """A gateway killed after a reading reached it, before it said PUBACK, gets the reading again.

    The "gateway" here is a raw socket, because paho acknowledges at once: it reads the PUBLISH
    and goes away without answering, like a process killed mid-stream.
    """
    connect_flags = 0x80 | 0x40  # username, password; clean session 0: a persistent session
    connect = (_mqtt_string("MQTT") + bytes([4, connect_flags, 0, 60]) + _mqtt_string("gw-killed")
               + _mqtt_string("_gateway") + _mqtt_string("gateway-secret"))
    with socket.create_connection((HOST, broker.port), timeout=WAIT_S) as dying:
        dying.sendall(_mqtt_packet(0x10, connect))
        assert _read_packet(dying) == (0x20, bytes([0, 0])), "CONNACK refused"
        dying.sendall(_mqtt_packet(0x82, (1).to_bytes(2, "big") + _mqtt_string("jisaku/+/data") + bytes([1])))
        assert _read_packet(dying)[0] == 0x90, "no SUBACK"

        device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret")
        device.publish("jisaku/bus-1/data", '{"seq": 7}')
        first, body = _read_packet(dying)
        assert first & 0xF0 == 0x30 and body.endswith(b'{"seq": 7}'), "the reading never reached the gateway"
        dying.shutdown(socket.SHUT_RDWR)  # gone without PUBACK

    back = peers(broker.port, "gw-killed", "_gateway", "gateway-secret", clean_session=False)
    assert back.wait_for("jisaku/bus-1/data", '{"seq": 7}'), "the unacknowledged reading was lost"


# --- Mosquitto's files and the test helper's restart/reload ---------------------------------------


only_mosquitto = pytest.mark.parametrize("broker_kind", ["mosquitto"], indirect=True)


@only_mosquitto  # the embedded broker keeps retained messages in memory only
def test_mosquitto_restart_keeps_retained_config(broker: Broker, peers) -> None:
    gateway = peers(broker.port, "gw", "_gateway", "gateway-secret")
    gateway.publish("jisaku/bus-1/config", '{"rev": 9}', retain=True)
    gateway.close()
    broker.server.restart()

    device = peers(broker.port, "bus-1", "bus-1", "bus-1-secret")
    device.subscribe("jisaku/bus-1/config")
    assert device.wait_for("jisaku/bus-1/config", '{"rev": 9}')


@only_mosquitto  # EmbeddedBrokerThread reads its accounts dict on every CONNECT anyway
def test_mosquitto_reload_applies_new_accounts(broker: Broker, peers) -> None:
    assert not peers(broker.port, "bus-3", "bus-3", "bus-3-secret").accepted
    broker.server.reload({**ACCOUNTS, "bus-3": "bus-3-secret"})
    assert peers(broker.port, "bus-3b", "bus-3", "bus-3-secret").accepted


def test_mosquitto_files(tmp_path: Path) -> None:
    stored = hash_secret("from-the-registry")
    conf = write_mosquitto_files(tmp_path / "m", {"_gateway": "s3cret", "bus-1": "pw", "bus-2": stored}, 1884)
    directory = conf.parent
    for name in ("passwd", "acl", "mosquitto.conf"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name

    text = conf.read_text()
    for line in ("allow_anonymous false", "per_listener_settings false", "listener 1884 127.0.0.1",
                 f"persistence_location {directory}/", "max_queued_messages 10000000", "max_queued_bytes 1000000000"):
        assert line in text.splitlines()
    acl = (directory / "acl").read_text().splitlines()
    assert "pattern write jisaku/%u/data" in acl and "pattern read jisaku/%u/cmd" in acl
    assert acl[acl.index("user _gateway") + 1] == "topic readwrite jisaku/#"
    assert "user bus-1" not in acl

    users = dict(line.split(":", 1) for line in (directory / "passwd").read_text().splitlines())
    _, seven, rounds, salt, digest = users["bus-1"].split("$")
    assert seven == "7" and int(rounds) >= 101
    expected = hashlib.pbkdf2_hmac("sha512", b"pw", base64.b64decode(salt), int(rounds))
    assert base64.b64decode(digest) == expected
    assert users["bus-2"] == stored  # already hashed: written as is


@only_mosquitto
def test_mosquitto_accepts_hashes_from_the_registry(broker: Broker, peers) -> None:
    broker.server.reload({**ACCOUNTS, "bus-3": hash_secret("bus-3-secret")})
    assert peers(broker.port, "bus-3", "bus-3", "bus-3-secret").accepted
    assert not peers(broker.port, "bus-3b", "bus-3", hash_secret("bus-3-secret")).accepted


@pytest.mark.parametrize("name", ["bus 1", "bus:1", "bus/1", "+", "#", "a\nuser _x", ""])
def test_mosquitto_files_refuse_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        write_mosquitto_files(tmp_path, {name: "secret"}, 1884)


def test_mosquitto_files_refuse_a_malformed_hash(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_mosquitto_files(tmp_path, {"bus-1": "$7$101$salt\n_x:$7$1$a$b"}, 1884)


# --- the embedded broker's own corrections (gateway/broker_fixes.py) -------------------------------


def test_embedded_acl_check_never_yields_to_the_event_loop() -> None:
    """amqtt runs this check while iterating over its subscriptions; when it yielded (as a
    topic plugin does), a SUBSCRIBE or disconnect at that moment broke the broadcast and
    readings were lost. A timing test caught that only now and then, so check the cause."""

    async def check() -> None:
        broker = _JisakuBroker(BrokerConfig(plugins={}), _Callbacks(lambda u, p: True, rights.allowed))
        session = Session()
        session.client_id = session.username = "bus-1"
        checks = [
            (Action.RECEIVE, "jisaku/bus-1/config", True),
            (Action.PUBLISH, "jisaku/bus-1/data", True),
            (Action.SUBSCRIBE, "jisaku/bus-2/cmd", False),
            (Action.SUBSCRIBE, "$share/g/jisaku/#", False),
        ]
        for action, topic, allowed in checks:
            step = broker._topic_filtering(session, topic, action)
            with pytest.raises(StopIteration) as finished:
                step.send(None)  # finished at the first step: it never gave the loop a turn
            assert finished.value.value is allowed, (action, topic)  # and it did check the rights

    asyncio.run(check())


def test_embedded_broker_stops_while_clients_are_busy(peers) -> None:
    """Stopping must not wait for clients that are still publishing (e.g. Ctrl-C in a demo)."""
    server = EmbeddedBrokerThread(dict(ACCOUNTS))
    try:
        gateway = peers(server.port, "gw", "_gateway", "gateway-secret")
        gateway.subscribe("jisaku/#")
        device = peers(server.port, "bus-1", "bus-1", "bus-1-secret")
        for seq in range(2000):
            device.client.publish("jisaku/bus-1/data", str(seq), qos=1)
        assert gateway.wait_for("jisaku/bus-1/data", "100")
    finally:
        server.stop()  # raises TimeoutError after a few seconds if amqtt hangs
