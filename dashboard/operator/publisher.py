"""How the operator pages send devices their settings and commands: one MQTT connection of the dashboard.

It logs in with a service account (``_dashboard``, like the phone publisher) and
publishes each new settings revision retained on ``jisaku/<id>/config``, through
:func:`jisaku.gateway.service.push_config`, and each command (switch an output) on
``jisaku/<id>/cmd``, through :func:`jisaku.gateway.commands.send`; the gateway records
the device's answers.

Example::

    config = ConfigPublisher("mqtt://127.0.0.1:1883", "_dashboard", secret)
    app = create_app(Path("data/jisaku.db"), phones, config_publisher=config)
    ...
    config.stop()
"""

from __future__ import annotations

import time
from typing import Any

from jisaku.gateway.commands import Command, CommandBook, send
from jisaku.gateway.registry import Registry
from jisaku.gateway.service import push_config
from jisaku.gateway.store import SQLiteStore

from ..broker_connection import BrokerConnection, BrokerUnavailable

CONNECT_WAIT_S = 5.0


class ConfigPublisher(BrokerConnection):
    def __init__(self, broker_url: str, username: str, secret: str):
        super().__init__(broker_url, username, secret, "operators' settings for devices")

    def push(self, store: SQLiteStore, registry: Registry, device_id: str, changes: dict[str, Any]) -> dict:
        """Publish a new revision with ``changes``; returns it (``{"rev": 8, ...settings}``)."""
        self.start()
        if not self.connected.wait(CONNECT_WAIT_S):
            raise BrokerUnavailable(f"not connected to the broker at {self.broker}")
        try:
            return push_config(self._client, store, registry, device_id, changes)
        except RuntimeError as err:  # the broker did not acknowledge in time
            raise BrokerUnavailable(str(err)) from None

    def send_command(self, book: CommandBook, command: Command) -> Command:
        """Publish a command already written with ``book.issue`` (QoS 1, not retained).

        If the broker does not take it, the command is withdrawn and BrokerUnavailable raised.
        """
        self.start()
        if not self.connected.wait(CONNECT_WAIT_S):
            book.withdraw(command)
            raise BrokerUnavailable(f"not connected to the broker at {self.broker}")
        try:
            return send(self._client, book, command)
        except RuntimeError as err:
            raise BrokerUnavailable(str(err)) from None


def wait_for_answer(store: SQLiteStore, device_id: str, rev: int, timeout_s: float) -> dict | None:
    """The device's config state once it answered ``rev`` (or the state after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = store.config_state(device_id)
        if state is None or state["rev"] != rev or state["state"] != "pending" or time.monotonic() > deadline:
            return state
        time.sleep(0.1)
