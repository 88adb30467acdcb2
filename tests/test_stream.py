"""The live stream (/api/v1/stream) is light enough for a phone on a data plan: one snapshot
when it opens, then only what changed; private devices never appear in either, a device made
private leaves open maps, and a status change alone (no new reading) reaches them too."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import uvicorn

from jisaku.dashboard.app import create_app
from jisaku.dashboard.stream import QUEUE_EVENTS, Broadcaster, Event
from jisaku.contract.protocol import Reading, Status
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import Batch, SQLiteStore

from .brokers import free_port
from .town import wait_until

BUSES = [f"bus-{i:02d}" for i in range(40)]


def where(i: int) -> dict[str, float]:
    return {"lat": 36.14 + i / 1000, "lon": 137.25 + i / 1000, "speed_kmh": 20.0, "heading": 90.0}


@pytest.fixture
def town(tmp_path):
    """40 public buses that have reported once, and a private printer tray."""
    db = Database(tmp_path / "jisaku.db")
    registry, store = Registry(db), SQLiteStore(db)
    for bus in BUSES:
        registry.add_device(DeviceRecord(bus, "bus", name=f"Bus {bus}", interval_s=2))
    registry.add_device(DeviceRecord("tray", "printer_tray", name="inside the office", public=False))
    now = time.time()
    store.write(Batch(readings=[(bus, Reading(now, 1, where(i))) for i, bus in enumerate(BUSES)]
                + [("tray", Reading(now, 1, {"paper": True}))]))
    return tmp_path / "jisaku.db", registry, store


@pytest.fixture
def server(town):
    app = create_app(town[0])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the dashboard starts")
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


def next_event(lines) -> tuple[str, str]:
    """The next event on an open stream: its name and its data (heartbeat comments skipped)."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: ") and name:
            return name, line.removeprefix("data: ")
    raise AssertionError("the stream ended")


def test_a_snapshot_first_then_only_what_changed(town, server):
    _, registry, store = town
    with httpx.Client(timeout=10) as http, http.stream("GET", server + "/api/v1/stream") as response:
        assert response.headers["content-encoding"] == "gzip", "a phone downloads the stream gzipped"
        lines = response.iter_lines()
        name, snapshot = next_event(lines)
        assert name == "latest"
        collection = json.loads(snapshot)
        assert collection["type"] == "FeatureCollection"
        assert sorted(f["id"] for f in collection["features"]) == BUSES
        assert "tray" not in snapshot, "the private device never streams"

        # One bus moves (and the private tray reports at the same time).
        now = time.time()
        store.write(Batch(readings=[("bus-07", Reading(now, 2, {"lat": 36.5, "lon": 137.5})),
                                    ("tray", Reading(now, 2, {"paper": False}))]))
        name, data = next_event(lines)
        assert name == "changes"
        changes = json.loads(data)
        assert [f["id"] for f in changes["features"]] == ["bus-07"]
        assert changes["features"][0]["geometry"]["coordinates"] == [137.5, 36.5]
        assert changes["features"][0]["properties"]["values"]["speed_kmh"] == 20.0  # the whole feature
        assert changes["removed"] == []
        assert "tray" not in data
        assert len(data) * 20 < len(snapshot), (len(data), len(snapshot))

        # A status change alone, no reading: the bus's last will says it went offline.
        store.write(Batch(statuses=[("bus-03", Status("offline"), time.time())]))
        name, data = next_event(lines)
        assert name == "changes"
        assert [(f["id"], f["properties"]["status"]) for f in json.loads(data)["features"]] == [("bus-03", "offline")]

        # The gateway's housekeeping marks the silent ones stale (it does not touch latest.updated).
        store.mark_stale(now=time.time() + 120)
        name, data = next_event(lines)
        stale = json.loads(data)["features"]
        assert {f["id"] for f in stale} == set(BUSES) - {"bus-03"}  # the offline one stays offline
        assert {f["properties"]["status"] for f in stale} == {"stale"}

        # A bus made private leaves the map.
        registry.update_device(DeviceRecord("bus-11", "bus", name="Bus bus-11", interval_s=2, public=False))
        name, data = next_event(lines)
        assert json.loads(data) == {"features": [], "removed": ["bus-11"]}

    # A map opened (or reconnected) now starts from a snapshot with all of that in it.
    with httpx.Client(timeout=10) as http, http.stream("GET", server + "/api/v1/stream") as response:
        name, snapshot = next_event(response.iter_lines())
        features = {f["id"]: f for f in json.loads(snapshot)["features"]}
        assert name == "latest" and "bus-11" not in features and "tray" not in features
        assert features["bus-07"]["geometry"]["coordinates"] == [137.5, 36.5]
        assert features["bus-03"]["properties"]["status"] == "offline"


def test_a_stream_that_falls_behind_gets_a_new_snapshot_instead_of_missing_changes(town):
    _, registry, store = town

    async def scenario():
        hub = Broadcaster(store, registry, poll_s=0.05)
        slow = hub.subscribe()
        try:
            name = (await hub.next_event(slow, 10)).plain.split(b"\n", 1)[0]
            assert name == b"event: latest"
            store.write(Batch(readings=[("bus-05", Reading(time.time(), 2, {"lat": 36.9, "lon": 137.9}))]))
            for _ in range(100):  # the poller finds the move and queues it
                if not slow.queue.empty():
                    break
                await asyncio.sleep(0.05)
            for _ in range(QUEUE_EVENTS):  # more events than it may fall behind by, never taken
                hub.publish(Event(b'event: changes\ndata: {"features":[],"removed":[]}\n\n'))
            event = (await hub.next_event(slow, 10)).plain
            assert event.startswith(b"event: latest\n"), "a snapshot replaces what it missed"
            features = {f["id"]: f for f in json.loads(event.split(b"data: ", 1)[1])["features"]}
            assert features["bus-05"]["geometry"]["coordinates"] == [137.9, 36.9]
        finally:
            hub.unsubscribe(slow)

    asyncio.run(scenario())


def test_a_client_that_does_not_accept_gzip_gets_the_stream_plain(server):
    headers = {"Accept-Encoding": "identity"}
    with httpx.Client(timeout=10) as http, http.stream("GET", server + "/api/v1/stream", headers=headers) as response:
        assert "content-encoding" not in response.headers
        first = next(response.iter_raw())
        assert first.startswith(b"event: latest\ndata: ")
