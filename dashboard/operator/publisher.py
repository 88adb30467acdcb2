"""How the operator pages send devices their settings: one MQTT connection of the dashboard.

It logs in with a service account (``_dashboard``, like the phone publisher) and
publishes each new settings revision retained on ``jisaku/<id>/config``, through
:func:`jisaku.gateway.service.push_config`; the gateway records the device's answer.

Example::

    config = ConfigPublisher("mqtt://127.0.0.1:1883", "_dashboard", secret)
    app = create_app(Path("data/jisaku.db"), phones, config_publisher=config)
    ...
    config.stop()
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from jisaku.device.link import BrokerAddress, new_client
from jisaku.gateway.registry import Registry
from jisaku.gateway.service import push_config
from jisaku.gateway.store import SQLiteStore

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 5.0


class BrokerUnavailable(RuntimeError):
    """The settings could not be handed to the broker; nothing was sent."""


class ConfigPublisher:
    def __init__(self, broker_url: str, username: str, secret: str):
        self.broker = BrokerAddress.parse(broker_url)
        self.broker_url = broker_url
        self.username = username
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._client = new_client(f"jisaku-config-{uuid.uuid4().hex[:12]}", username, secret, self.broker)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *args: self.connected.clear()

    def start(self) -> None:
        """Connect in the background (done by the first push if nobody did it before)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def push(self, store: SQLiteStore, registry: Registry, device_id: str, changes: dict[str, Any]) -> dict:
        """Publish a new revision with ``changes``; returns it (``{"rev": 8, ...settings}``)."""
        self.start()
        if not self.connected.wait(CONNECT_WAIT_S):
            raise BrokerUnavailable(f"not connected to the broker at {self.broker}")
        try:
            return push_config(self._client, store, registry, device_id, changes)
        except RuntimeError as err:  # the broker did not acknowledge in time
            raise BrokerUnavailable(str(err)) from None

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("the broker at %s refused the dashboard's account %s: %s (check its secret)",
                      self.broker, self.username, reason_code)
            return
        self.connected.set()


def wait_for_answer(store: SQLiteStore, device_id: str, rev: int, timeout_s: float) -> dict | None:
    """The device's config state once it answered ``rev`` (or the state after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = store.config_state(device_id)
        if state is None or state["rev"] != rev or state["state"] != "pending" or time.monotonic() > deadline:
            return state
        time.sleep(0.1)
