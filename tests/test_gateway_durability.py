"""The gateway loses nothing and stores nothing twice: killed with SIGKILL mid-stream,
or with the broker restarted under it. The gateway runs as its own process, as
`jisaku gateway` does in the field."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from jisaku.contract import protocol
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import SQLiteStore

from .brokers import EmbeddedBrokerThread, MosquittoServer
from .town import wait_until

READINGS = 6000
RATE = 2000  # per second: the stream lasts three seconds, long enough to kill something in it


class GatewayProcess:
    def __init__(self, data, broker_url, log_path, *options: str):
        self.data, self.broker_url, self.log_path, self.options = data, broker_url, log_path, options
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait until it has subscribed: what a broker gets before that, nobody receives."""
        connections = self.log_path.read_text().count("gateway connected") if self.log_path.exists() else 0
        env = {**os.environ, "JISAKU_BROKER": self.broker_url, "JISAKU_DATA": str(self.data)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "jisaku.cli", "gateway", *self.options], env=env,
                                            cwd=self.data.parent, stdout=log, stderr=log)
        wait_until(lambda: self.log_path.read_text().count("gateway connected") > connections, 20,
                   "the gateway process connects")
        time.sleep(0.5)  # its SUBSCRIBE goes out right after

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def stored_in_last_run(self) -> int:
        """What the gateway says, as it stops, it stored since it last started."""
        said = re.findall(r"it stored (\d+) readings", self.log_path.read_text())
        return int(said[-1]) if said else 0


@pytest.fixture
def setup(tmp_path, broker_kind):
    data = tmp_path / "data"
    registry = Registry(Database(data / "jisaku.db"))
    secret = registry.add_device(DeviceRecord("meter-1", "meter"))
    accounts = {"meter-1": secret, "_gateway": registry.service_secret("_gateway", data / "secrets")}
    broker = MosquittoServer(tmp_path / "mosquitto", accounts) if broker_kind == "mosquitto" \
        else EmbeddedBrokerThread(accounts)
    gateway = GatewayProcess(data, broker.url, tmp_path / "gateway.log")
    gateway.start()
    store = SQLiteStore(registry.db)
    yield store, broker, gateway, secret
    gateway.stop()
    broker.stop()


def stream(broker_url: str, secret: str, done: threading.Event) -> None:
    """One device sending READINGS readings at RATE per second, QoS 1, resending what was not acknowledged."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="meter-1", protocol=mqtt.MQTTv311,
                         clean_session=False)
    client.username_pw_set("meter-1", secret)
    client.max_inflight_messages_set(100)
    client.reconnect_delay_set(0.2, 1)
    host, port = broker_url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    start = time.time()
    for seq in range(READINGS):
        client.publish("jisaku/meter-1/data", protocol.encode_reading(seq, {"count": seq}, ts=start + seq / 1000), qos=1)
        time.sleep(max(0.0, start + (seq + 1) / RATE - time.time()))
    done.set()
    # paho keeps what it could not send while the broker was away and sends it once it is
    # back; the test's own check is what the gateway stored. Keep the client until then.
    time.sleep(60)


def stored_exactly_once(store: SQLiteStore) -> None:
    rows = store.db.connection.execute("SELECT seq FROM readings WHERE device_id='meter-1'").fetchall()
    seqs = sorted(row[0] for row in rows)
    assert seqs == list(range(READINGS)), (
        f"{READINGS - len(set(seqs))} missing, {len(seqs) - len(set(seqs))} twice")


def stream_through(setup, disruption) -> None:
    """Stream READINGS readings, disrupt the pipeline once early in the stream, check every one arrived once."""
    store, broker, gateway, secret = setup
    done = threading.Event()
    threading.Thread(target=stream, args=(broker.url, secret, done), daemon=True).start()
    wait_until(lambda: store.reading_count("meter-1") >= READINGS // 6, 30, "the gateway stores the start of the stream")
    disruption()
    wait_until(done.is_set, 90, "the device has sent everything")
    wait_until(lambda: store.reading_count("meter-1") >= READINGS, 60, "the gateway stores the rest")
    time.sleep(1)  # anything redelivered twice would land now
    stored_exactly_once(store)


@pytest.mark.parametrize("broker_kind", ["mosquitto", "embedded"], indirect=True)
def test_sigkill_of_the_gateway_mid_stream_loses_and_duplicates_nothing(setup):
    store, broker, gateway, secret = setup

    def kill_and_restart_the_gateway() -> None:
        gateway.kill()
        assert store.reading_count("meter-1") < READINGS, "the stream was still going when the gateway died"
        time.sleep(1)
        gateway.start()

    stream_through(setup, kill_and_restart_the_gateway)


@pytest.mark.parametrize("broker_kind", ["mosquitto"], indirect=True)
def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(setup):
    # Mosquitto only: the embedded broker keeps sessions in memory, so a restart of the
    # broker alone (without its gateway, as in jisaku demo) forgets what it held.
    stream_through(setup, setup[1].restart)


@pytest.mark.parametrize("broker_kind", ["mosquitto"], indirect=True)
def test_two_gateways_on_a_shared_subscription_split_the_stream_and_store_it_once(setup, tmp_path):
    # Shared subscriptions ($share/jisaku/...) are a Mosquitto feature the embedded broker lacks.
    store, broker, first, secret = setup
    first.stop()  # the fixture's gateway takes everything; these two share
    data = first.data
    one = GatewayProcess(data, broker.url, tmp_path / "one.log", "--shared", "--client-id", "jisaku-gateway-1")
    two = GatewayProcess(data, broker.url, tmp_path / "two.log", "--shared", "--client-id", "jisaku-gateway-2")
    one.start()
    two.start()
    try:
        def kill_and_restart_one() -> None:
            one.kill()
            time.sleep(1)
            one.start()

        stream_through(setup, kill_and_restart_one)
    finally:
        one.stop()
        two.stop()
    assert one.stored_in_last_run() > 0 and two.stored_in_last_run() > 0, "both gateways took a share"
