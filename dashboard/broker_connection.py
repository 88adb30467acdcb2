"""The dashboard's MQTT connections: logged in as the dashboard's service account.

Phones' positions (``osmand.PhonePublisher``) and operators' settings
(``operator.ConfigPublisher``) each keep one of these open, connecting in the
background on first use and reconnecting on their own.

Example::

    connection = BrokerConnection("mqtt://127.0.0.1:1883", "_dashboard", secret, "phone positions")
    connection.start()
    connection.connected.wait(5)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from jisaku.contract.mqtt import BrokerAddress, new_client

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """What was to be published could not be handed to the broker in time; nothing was sent."""


class BrokerConnection:
    """``purpose`` says in the log what the connection is for."""

    def __init__(self, broker_url: str, username: str, secret: str, purpose: str):
        self.broker = BrokerAddress.parse(broker_url)
        self.broker_url = broker_url
        self.username = username
        self.purpose = purpose
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._started_at = 0.0
        self._stopping = False
        # Several dashboard replicas may run at once: each connection needs its own client id.
        self._client = new_client(f"jisaku-dashboard-{uuid.uuid4().hex[:12]}", username, secret, self.broker)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        """Start connecting in the background; returns at once. Calling it again does nothing."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._started_at = time.monotonic()
            self._stopping = False
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    # paho callbacks (network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("the broker at %s refused the dashboard's account %s: %s (check its secret)",
                      self.broker, self.username, reason_code)
            return
        log.info("dashboard connected to %s as %s for %s", self.broker, self.username, self.purpose)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("dashboard lost the broker at %s (%s); %s wait until it is back",
                        self.broker, reason_code, self.purpose)
        self.connected.clear()
