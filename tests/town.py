"""A small town for integration tests: the real pipeline, started piece by piece.

Registry and store in a temporary SQLite file, a real broker (embedded amqtt or
Mosquitto), the gateway, the dashboard on a free port, and simulated devices
running the real device code.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from jisaku.dashboard.app import create_app
from jisaku.dashboard.operator import ConfigPublisher
from jisaku.dashboard.osmand import PhonePublisher
from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink
from jisaku.device.runner import run_device
from jisaku.gateway.alert_engine import start_alerts
from jisaku.gateway.changes import Changes
from jisaku.gateway.db import Database
from jisaku.gateway.influx import InfluxStore
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.secrets import new_secret
from jisaku.gateway.service import Gateway
from jisaku.gateway.store import SQLiteStore

from .brokers import EmbeddedBrokerThread, MosquittoServer, free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
KINDS = REPO / "kinds"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something true; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"within {timeout} s: {what}")
        time.sleep(0.1)


@contextmanager
def serving(app) -> Iterator[str]:
    """The dashboard ``app`` on a free local port in a thread (for a browser); yields its address."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="dashboard")
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "the dashboard starts")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Town:
    def __init__(self, directory: Path, broker_kind: str, devices: list[DeviceConfig] = (),
                 readings: InfluxStore | None = None, notify: dict | None = None):
        self.directory = directory
        self.db_path = directory / "jisaku.db"
        db = Database(self.db_path)
        self.registry, self.store = Registry(db), SQLiteStore(db, keep_readings=readings is None)
        self.readings = readings
        self.devices = list(devices)
        self.secrets: dict[str, str] = {}
        for config in self.devices:
            self.register(config)
        # Service accounts: the gateway, and a test client allowed anywhere under jisaku/.
        self.gateway_secret = new_secret()
        self.tester_secret = new_secret()
        accounts = {**self.secrets, "_gateway": self.gateway_secret, "_tester": self.tester_secret}
        if broker_kind == "mosquitto":
            self.broker = MosquittoServer(directory / "mosquitto", accounts)
        else:
            self.broker = EmbeddedBrokerThread(accounts)
        self.broker_url = self.broker.url
        self.gateway = Gateway(self.store, self.registry, self.broker_url, "_gateway", self.gateway_secret,
                               readings=readings)
        # Alert rules and notifications, as `jisaku gateway` runs them ([notify] of jisaku.toml).
        self.alerts = start_alerts(self.gateway, notify)
        self.gateway.start()
        wait_until(self.gateway.connected.is_set, 10, "the gateway connects to the broker")
        self.stop_devices = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: uvicorn.Server | None = None
        self.phones: PhonePublisher | None = None
        # Sends operators' settings (and opens shelters), as the dashboard's service account would.
        self.settings = ConfigPublisher(self.broker_url, "_tester", self.tester_secret)
        self.changes = Changes(Database(self.db_path), publisher=self.settings)
        self.base_url = ""

    def register(self, config: DeviceConfig) -> str:
        location = config.location
        self.secrets[config.id] = self.registry.add_device(DeviceRecord(
            id=config.id, kind=config.kind, name=config.name, name_ja=config.device.get("name_ja", ""),
            public=config.public,
            interval_s=config.interval_s, lat=location[0] if location else None,
            lon=location[1] if location else None,
        ))
        return self.secrets[config.id]

    def run_devices(self, configs: list[DeviceConfig] | None = None) -> threading.Event:
        """Run simulated devices in threads; set the returned event to stop just these."""
        stop = threading.Event()
        for config in configs if configs is not None else self.devices:
            thread = threading.Thread(target=self._run_until, name=config.id, daemon=True, args=(
                config, stop, self.directory / "devices" / config.id))
            thread.start()
            self._threads.append(thread)
        return stop

    def _run_until(self, config: DeviceConfig, stop: threading.Event, state_dir: Path) -> None:
        # Stops with the town, or earlier, like a device switched off mid-test.
        def stop_with_the_town() -> None:
            self.stop_devices.wait()
            stop.set()

        threading.Thread(target=stop_with_the_town, daemon=True).start()
        # Pictures (cameras) go to this town's dashboard, once it serves.
        run_device(config, self.broker_url, self.secrets[config.id], True, stop, state_dir,
                   server_url=self.base_url or None)

    def start_dashboard(self, tiles: str | None = None, phones: bool = False) -> str:
        """Serve the residents' pages; ``tiles`` is the base map setting (None: jisaku.toml's).

        ``phones``: also take readings over HTTP (phones, staff pages), published as ``_tester``.
        Operators' settings go out through ``self.settings`` (as ``_tester``), as in ``jisaku dashboard``.
        """
        port = free_port()
        if phones:
            self.phones = PhonePublisher(self.broker_url, "_tester", self.tester_secret)
            self.phones.start()
        app = create_app(self.db_path, readings=self.readings, tiles=tiles, phones=self.phones,
                         config_publisher=self.settings)
        self._server = uvicorn.Server(uvicorn.Config(app,
                                                     host="127.0.0.1", port=port,
                                                     log_level="warning"))
        threading.Thread(target=self._server.run, daemon=True, name="dashboard").start()
        wait_until(lambda: self._server.started, 10, "the dashboard starts")
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            return json.load(response)

    def link(self, device_id: str) -> DeviceLink:
        """A device's link alone, with its state in the town's folder; the caller starts it."""
        return DeviceLink(device_id, self.secrets[device_id], self.broker_url, self.directory / "devices" / device_id)

    def features(self) -> dict[str, dict]:
        return {f["id"]: f for f in self.get_json("/api/v1/latest.geojson")["features"]}

    def close(self) -> None:
        self.stop_devices.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._server is not None:
            self._server.should_exit = True
        if self.phones is not None:
            self.phones.stop()
        self.settings.stop()
        self.gateway.stop()
        self.alerts.stop()
        self.broker.stop()
