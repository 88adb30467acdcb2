"""Two boxes and a tie-breaker: box A dies while devices publish, the standby box B has every reading.

The set-up of docs/deploy.md, "A standby box", on one machine: three real RabbitMQ nodes
(node 1 is box A's, node 2 box B's, node 3 the tie-breaker's); box A's gateway
(`jisaku gateway --rabbitmq …`, its own SQLite file, queue jisaku-gateway, through node 1)
and box B's (`jisaku gateway --rabbitmq … --standby`, its own SQLite file, queue
jisaku-standby, through node 2), both real processes; each box's `jisaku rabbitmq auth` on its
own registry, asked by its own box's node (and the tie-breaker's by B's). B was set up from a
backup of A and then refreshed from a newer one, made after a device was added on A.

Then box A dies (node 1 SIGKILLed, A's gateway SIGKILLed) while devices running the real
device link publish. Every reading a device was acknowledged for is in B's database exactly
once; B's dashboard answers what A's did; the devices that were on A's node logged in on B's
node with the secrets they have (B's registry), the one added on A included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.device.link import DeviceLink
from jisaku.contract.mqtt import BrokerAddress
from jisaku.gateway.backup import make_backup, restore_backup
from jisaku.gateway.broker_auth import BrokerAuth
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.standby import STANDBY_QUEUE, refresh
from jisaku.gateway.store import SQLiteStore

from .brokers import HOST, free_port
from .conftest import require
from .rabbitmq_cluster import RabbitCluster, rabbitmq_available
from .sensor_loop import Sensor
from .test_broker_cluster import EVERY_S
from .town import wait_until

MOVERS = ["meter-1", "late-1"]   # prefer node 1 (box A's); late-1 is added on A after B was set up
STAYERS = ["meter-2", "meter-3"]  # prefer node 2 and node 3
# Added on A after B's last refresh; it prefers node 1. When A dies it cannot log in anywhere
# (B does not know it yet: it must be added again on B), but what A's node acknowledged is on B.
NEWEST = "newest-1"
# A limit for a failure, not a measurement (docs/deploy.md: readings through the next node 10-26 s).
MOVE_LIMIT_S = 60


class CountingAuth(BrokerAuth):
    """Box B's jisaku rabbitmq auth, noting who logged in through it."""

    def __init__(self, registry: Registry):
        super().__init__(registry)
        self.logins: list[str] = []

    def user(self, username: str, password: str, client_id: str | None) -> bool:
        ok = super().user(username, password, client_id)
        if ok:
            self.logins.append(username)
        return ok


def start_gateway(box: Path, broker: str, amqp: list[str], standby: bool) -> subprocess.Popen:
    """The real `jisaku gateway` of one box, logging into <box>/gateway.log."""
    env = {**os.environ, "JISAKU_DATA": str(box / "data"), "JISAKU_BROKER": broker,
           "JISAKU_CONFIG": str(box / "jisaku.toml")}
    command = [sys.executable, "-m", "jisaku.cli", "gateway", "--rabbitmq", " ".join(amqp),
               *(["--standby"] if standby else [])]
    with open(box / "gateway.log", "ab") as log:
        return subprocess.Popen(command, cwd=box, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def jisaku(box: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JISAKU_DATA": str(box / "data"), "JISAKU_CONFIG": str(box / "jisaku.toml")}
    return subprocess.run([sys.executable, "-m", "jisaku.cli", *args], cwd=box, env=env, capture_output=True,
                          text=True, timeout=60)


def log_of(box: Path) -> str:
    return (box / "gateway.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    require(rabbitmq_available(), "RabbitMQ", "sudo apt-get install rabbitmq-server")
    root = tmp_path_factory.mktemp("standby")
    box_a, box_b = root / "a", root / "b"
    a_db = Database(box_a / "data" / "jisaku.db")
    a_registry = Registry(a_db)
    secrets = {device: a_registry.add_device(DeviceRecord(device, "meter", name=f"Meter {device}"))
               for device in ["meter-1", "meter-2", "meter-3"]}
    a_registry.service_secret("_gateway", box_a / "data" / "secrets")
    # Box B is set up once from a backup of A (docs: "Setting it up").
    restore_backup(make_backup(a_db.path, a_db.path.parent, None, root / "setup.tar.gz").path, box_b / "data")
    b_db = Database(box_b / "data" / "jisaku.db")
    auth_a = BrokerAuth(Registry(Database(a_db.path))).serve(HOST, free_port())
    b_auth = CountingAuth(Registry(Database(b_db.path)))
    auth_b = b_auth.serve(HOST, free_port())
    urls = [f"http://{HOST}:{server.server_address[1]}" for server in (auth_a, auth_b, auth_b)]
    nodes, gateways = None, {}
    try:
        nodes = RabbitCluster(root / "rabbit", 3, urls)
        amqp = nodes.amqp_urls
        # Each box's gateway reads through its own node first, and publishes through it.
        gateways["a"] = start_gateway(box_a, nodes.mqtt_urls[0], amqp, standby=False)
        gateways["b"] = start_gateway(box_b, nodes.mqtt_urls[1], amqp[1:] + amqp[:1], standby=True)
        for box, queue in ((box_a, "jisaku-gateway"), (box_b, STANDBY_QUEUE)):
            wait_until(lambda: f"gateway reading queue {queue}" in log_of(box), 60,
                       f"box {box.name}'s gateway reads its queue {queue}")
        yield {"root": root, "a": box_a, "b": box_b, "nodes": nodes, "gateways": gateways, "secrets": secrets,
               "a_registry": a_registry, "a_db": a_db, "b_db": b_db, "b_auth": b_auth}
    finally:
        for gateway in gateways.values():
            if gateway.poll() is None:
                os.killpg(gateway.pid, signal.SIGTERM)
                try:
                    gateway.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(gateway.pid, signal.SIGKILL)
        if nodes is not None:
            nodes.stop()
        auth_a.shutdown()
        auth_b.shutdown()


def test_box_a_dies_while_devices_publish_and_the_standby_has_every_acknowledged_reading(boxes):
    nodes, box_a, box_b, root = boxes["nodes"], boxes["a"], boxes["b"], boxes["root"]
    a_store, b_store = SQLiteStore(boxes["a_db"]), SQLiteStore(boxes["b_db"])
    secrets = dict(boxes["secrets"])
    # An operator adds a device on A; B takes it with its next refresh, while B's gateway runs.
    secrets["late-1"] = boxes["a_registry"].add_device(DeviceRecord("late-1", "meter", name="Late meter"))
    newer = make_backup(boxes["a_db"].path, box_a / "data", None, root / "from-a")
    print("\n" + refresh(newer.path, boxes["b_db"].path, box_b / "data").summary())
    secrets[NEWEST] = boxes["a_registry"].add_device(DeviceRecord(NEWEST, "meter", name="Newest meter"))

    urls = nodes.mqtt_urls
    first = {"meter-1": 0, "late-1": 0, "meter-2": 1, "meter-3": 2, NEWEST: 0}
    links = {device: DeviceLink(device, secrets[device], urls[start:] + urls[:start], root / "devices" / device)
             for device, start in first.items()}
    known = [d for d in links if d != NEWEST]
    sensors = {}
    try:
        for link in links.values():
            link.start()
        for link in links.values():
            wait_until(link.connected.is_set, 20, "each device connects to its first node")
        sensors = {device: Sensor(link, EVERY_S) for device, link in links.items()}
        wait_until(lambda: all(a_store.reading_count(d) >= 10 and b_store.reading_count(d) >= 10 for d in links),
                   20, "readings reach both boxes (B stores the newest device's too, though it does not know it)")
        # What residents saw on A's map just before it died.
        a_api = TestClient(create_app(boxes["a_db"].path))
        a_devices = a_api.get("/api/v1/devices").json()
        a_latest = {f["id"]: f["properties"] for f in a_api.get("/api/v1/latest.geojson").json()["features"]}

        # Box A dies: its node and its gateway at once, as in a power cut.
        nodes.kill(0)
        os.killpg(boxes["gateways"]["a"].pid, signal.SIGKILL)
        died = time.monotonic()
        at_kill = {device: b_store.reading_count(device) for device in MOVERS}
        done = jisaku(box_b, "standby", "takeover")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: "this box has taken over" in log_of(box_b), 10, "B's gateway acts after the takeover")

        wait_until(lambda: all(b_store.reading_count(d) > at_kill[d] + 5 for d in MOVERS), MOVE_LIMIT_S,
                   "the devices of A's node send through B's")
        moved_after = time.monotonic() - died
        assert all(links[d].broker == BrokerAddress.parse(urls[1]) for d in MOVERS), "they moved to node 2"
        assert "late-1" in boxes["b_auth"].logins, "the device added on A logged in on B's node (B's registry)"

        taken = {device: sensor.pause() for device, sensor in sensors.items()}
        # A reading leaves the outbox only once a node acknowledged it: empty = all acknowledged.
        wait_until(lambda: all(len(links[d].outbox) == 0 for d in known), 30, "every reading is acknowledged")
        wait_until(lambda: all(b_store.reading_count(d) >= taken[d] for d in known), 20,
                   "every acknowledged reading is on B")
        # The newest device's readings wait in its outbox (oldest first) until it is added on B.
        newest_acknowledged = taken[NEWEST] - len(links[NEWEST].outbox)
        time.sleep(1)  # anything delivered twice would be in by now
    finally:
        for sensor in sensors.values():
            sensor.stop.set()
        for link in links.values():
            link.stop()

    on_a = {device: a_store.reading_count(device) for device in links}
    for device in known:
        values = sorted(r["v"]["n"] for r in b_store.readings(device, since=0, limit=100_000))
        assert values == [float(n) for n in range(taken[device])], f"{device}: none lost on B, none twice"
    # (B may have a few more than were acknowledged: stored, but the PUBACK died with node 1.)
    values = sorted(r["v"]["n"] for r in b_store.readings(NEWEST, since=0, limit=100_000))
    assert len(values) == len(set(values)) and set(range(newest_acknowledged)) <= set(values) <= set(range(taken[NEWEST])), \
        f"{NEWEST}: every acknowledged reading on B, though B did not know the device yet"
    assert newest_acknowledged >= 10

    # B's dashboard answers what A's did (newer readings aside).
    b_api = TestClient(create_app(boxes["b_db"].path))
    described = lambda devices: [(d["id"], d["name"], d["kind"]) for d in devices]  # noqa: E731
    a_devices = [d for d in a_devices if d["id"] != NEWEST]  # B has not heard of it: it was added after the refresh
    assert described(b_api.get("/api/v1/devices").json()) == described(a_devices) and len(a_devices) == 4
    b_latest = {f["id"]: f["properties"] for f in b_api.get("/api/v1/latest.geojson").json()["features"]}
    assert b_latest.keys() == a_latest.keys() - {NEWEST} == set(known)
    assert all(b_latest[d]["ts"] >= a_latest[d]["ts"] for d in known), "B's map is as new as A's was, or newer"
    print(f"{sum(taken[d] for d in known)} readings taken and acknowledged by 4 devices, all on B once each;"
          f" {NEWEST}, added on A after the refresh: {newest_acknowledged} acknowledged, {len(values)} on B"
          f" (A had stored {sum(on_a.values())} when it died); the devices on A's node sent through B's"
          f" {moved_after:.1f} s after it died; B logged in {sorted(set(boxes['b_auth'].logins))}")
