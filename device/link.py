"""A device's connection to the broker.

The link never blocks the sensor loop: publishing only hands the message to
paho-mqtt's background thread, which connects, reconnects after a lost network
(waiting longer each time, up to a minute) and sends what was queued meanwhile.

Example::

    link = DeviceLink("snow-1", secret, "mqtt://127.0.0.1:1883")
    link.start()
    link.publish_reading({"depth_cm": 12.5})
    link.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from . import protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        """``mqtt://host:1883`` or ``mqtts://host:8883``."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker {url!r} should look like mqtt://host:1883 or mqtts://host:8883")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def new_client(client_id: str, username: str, password: str, broker: BrokerAddress,
               clean_session: bool = True) -> mqtt.Client:
    """A paho client set up the way every jisaku part talks MQTT (3.1.1, QoS 1)."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(username, password)
    if broker.tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=1, max_delay=60)
    return client


class DeviceLink:
    """Publishes one device's readings, events and status; receives its config."""

    def __init__(self, device_id: str, secret: str, broker_url: str,
                 on_config: Callable[[dict[str, Any]], None] | None = None):
        self.device_id = device_id
        self.broker = BrokerAddress.parse(broker_url)
        self.on_config = on_config
        self.connected = threading.Event()
        self._stopping = False
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._client = new_client(f"jisaku-{device_id}", device_id, secret, self.broker)
        self._client.will_set(
            protocol.topic(device_id, "status"), protocol.encode_status(protocol.STATUS_OFFLINE), qos=1, retain=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        """Say goodbye (status offline) and disconnect."""
        self._stopping = True
        if self.connected.is_set():
            info = self._client.publish(
                protocol.topic(self.device_id, "status"),
                protocol.encode_status(protocol.STATUS_OFFLINE), qos=1, retain=True,
            )
            try:
                info.wait_for_publish(timeout=2)
            except RuntimeError:
                pass  # the link dropped meanwhile: the broker sends the last will instead
        self._client.disconnect()
        self._client.loop_stop()

    def next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def publish_reading(self, values: dict[str, Any], ts: float | None = None) -> None:
        payload = protocol.encode_reading(self.next_seq(), values, ts=ts if ts is not None else time.time())
        self._publish("data", payload)

    def publish_event(self, name: str, values: dict[str, Any] | None = None) -> None:
        self._publish("event", protocol.encode_event(self.next_seq(), name, values, ts=time.time()))

    def _publish(self, channel: str, payload: bytes) -> None:
        # While disconnected paho keeps QoS 1 messages and sends them on reconnect.
        self._client.publish(protocol.topic(self.device_id, channel), payload, qos=1)

    # ------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("%s: the broker at %s refused the connection: %s (check the device id and secret)",
                      self.device_id, self.broker, reason_code)
            return
        log.info("%s: connected to %s", self.device_id, self.broker)
        client.publish(protocol.topic(self.device_id, "status"),
                       protocol.encode_status(protocol.STATUS_ONLINE), qos=1, retain=True)
        client.subscribe([(protocol.topic(self.device_id, "config"), 1), (protocol.topic(self.device_id, "cmd"), 1)])
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("%s: lost the broker (%s); readings are queued until it is back", self.device_id, reason_code)
        self.connected.clear()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/config") and self.on_config is not None:
            try:
                self.on_config(protocol.decode_object(message.payload))
            except protocol.ProtocolError as err:
                log.warning("%s: ignored a config message: %s", self.device_id, err)
