"""The live stream behind ``/api/v1/stream``: one snapshot, then only what changed.

A phone left open on the map should not download the whole map every second. So a new
stream gets one ``latest`` event (the whole FeatureCollection, as latest.geojson) and then
``changes`` events that hold only the devices that moved, changed a value or changed status,
and the ids of devices that left the public map::

    event: latest
    data: {"type":"FeatureCollection","features":[...every public device...]}

    event: changes
    data: {"features":[...changed or new public devices...],"removed":["bus-7"]}

Each town has its own stream (``/t/<id>/api/v1/stream``; the first town's also at
``/api/v1/stream``) with only its devices. One poller per town does the work for every open stream: once a second it asks the database
which rows of ``latest`` (a new reading) or ``device_status`` (online, stale, offline) changed
since its previous look, renders those devices, compares them with what it sent before, and
hands the same ``changes`` bytes to every stream. When the registry changed (a device added,
renamed, made private or removed) it reads every public device instead, which also finds the
ones that left.

A client that accepts gzip (every browser does) gets the stream gzipped: each event is
compressed once, on its own, and the same compressed bytes go to every such stream, so a
phone downloads about a ninth of the bytes and the server compresses once, not once per phone.

Example::

    hub = Broadcaster(store, registry, town="main")    # one per town; town=None: every town's devices
    subscriber = hub.subscribe()
    try:
        event = await hub.next_event(subscriber)   # event.plain: b"event: latest\\ndata: {...}\\n\\n" first
    finally:
        hub.unsubscribe(subscriber)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from typing import Any

from jisaku.gateway.registry import Registry
from jisaku.kinds.shelter import occupancy
from jisaku.gateway.store import SQLiteStore

log = logging.getLogger(__name__)

# How often the shared poller looks for changes: twice a second, so a number called at the
# counter is on the hall display within a second (one indexed query each time, for all streams).
POLL_S = 0.5
# Rows are found by the time the gateway wrote into them, taken just before its transaction
# committed; looking this far back as well catches a transaction that committed late. Rows
# seen again are compared with what was sent, so they cost a little work and no bytes.
LOOK_BACK_S = 2.0
# Every so often every public device is read and compared anyway, so that nothing missed
# (a transaction that waited longer than LOOK_BACK_S for the write lock) stays wrong for long.
RESYNC_S = 30.0
# Events a stream may fall behind by. A phone on a slow link that is further behind gets one
# new snapshot instead of the changes it missed (and never silently misses a change).
QUEUE_EVENTS = 16

# Put in a queue instead of an event: "this stream fell behind; send it a snapshot".
SNAPSHOT_PLEASE = None
# How a gzipped stream starts (RFC 1952: deflate, no name, no time, unknown OS); the events follow.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

DEVICES_SQL = (
    "SELECT d.id, d.kind, d.name, d.name_ja, d.lat, d.lon, l.ts, l.v, l.picture, l.updated, s.state, s.since,"
    "       c.settings, c.pushed"
    " FROM devices d"
    " LEFT JOIN latest l ON l.device_id = d.id"
    " LEFT JOIN device_status s ON s.device_id = d.id"
    " LEFT JOIN device_config c ON c.device_id = d.id"
    " WHERE d.public = 1 AND d.practice = 0"  # registry.SHOWN_TO_RESIDENTS
)
# One town's: each town has its own stream (/t/<id>/api/v1/stream).
TOWN_SQL = " AND d.town = :town"
# Only devices with a new reading or a new status since a moment (the index on latest.updated
# makes the first half cheap; device_status has one row per device).
CHANGED_SQL = DEVICES_SQL + (
    " AND d.id IN (SELECT device_id FROM latest WHERE updated > :since"
    "              UNION SELECT device_id FROM device_status WHERE since > :since"
    # new settings (a shelter opened): the map shows the operators' word before the device's
    "              UNION SELECT device_id FROM device_config WHERE pushed > :since)"
)


def position(device: dict[str, Any]) -> tuple[float, float] | None:
    """Where to draw a device: its last reported position, else where it is mounted."""
    values = device["values"]
    if "lat" in values and "lon" in values:
        return values["lat"], values["lon"]
    if device["lat"] is not None and device["lon"] is not None:
        return device["lat"], device["lon"]
    return None


def feature(device: dict[str, Any]) -> dict[str, Any]:
    """One device as a GeoJSON Feature, as on latest.geojson."""
    where = position(device)
    return {
        "type": "Feature",
        "id": device["id"],
        "geometry": {"type": "Point", "coordinates": [where[1], where[0]]} if where else None,
        "properties": {
            # name_ja: the name in Japanese, "" when there is none (a Japanese page then shows name)
            "kind": device["kind"], "name": device["name"], "name_ja": device.get("name_ja") or "",
            "status": device["status"],
            "ts": device["ts"], "values": device["values"],
            # a camera's newest picture: {"ts", "url", "thumbnail"} (public copies only)
            **({"picture": device["picture"]} if device.get("picture") else {}),
            # a shelter: {"count", "capacity", "open", "level"}, the operators' open/close included
            **({"shelter": occupancy.now(device["values"], device.get("settings"))}
               if device["kind"] == "shelter" else {}),
        },
    }


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Event:
    """One server-sent event, as sent plainly (``plain``) and gzipped (``gzipped``).

    ``gzipped`` is the event deflated on its own and flushed to a byte boundary, without
    reference to anything before it, so it can follow any other event on any gzipped stream
    (after GZIP_HEADER). It is made on first use, once for all streams.

    Example::

        event = Event(b": hello\\n\\n")
        zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(GZIP_HEADER + event.gzipped)  # == event.plain
    """

    def __init__(self, plain: bytes):
        self.plain = plain
        self._gzipped: bytes | None = None

    @property
    def gzipped(self) -> bytes:
        if self._gzipped is None:
            deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate: the header is sent once
            self._gzipped = deflate.compress(self.plain) + deflate.flush(zlib.Z_SYNC_FLUSH)
        return self._gzipped


HEARTBEAT = Event(b": still here\n\n")  # a comment line: keeps proxies from closing an idle stream


def snapshot_event(features: dict[str, bytes]) -> Event:
    """The ``latest`` event: every feature, in device-id order like latest.geojson."""
    body = b",".join(features[device_id] for device_id in sorted(features))
    return Event(b'event: latest\ndata: {"type":"FeatureCollection","features":[' + body + b"]}\n\n")


def changes_event(changed: dict[str, bytes], removed: list[str]) -> Event:
    """The ``changes`` event: the changed or new features and the ids that left."""
    body = b",".join(changed[device_id] for device_id in sorted(changed))
    return Event(b'event: changes\ndata: {"features":[' + body + b'],"removed":'
                 + compact(sorted(removed)) + b"}\n\n")


class Subscriber:
    """One open stream: the events waiting for it (a phone may be slow to take them)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=QUEUE_EVENTS)
        # True until it has a snapshot to build on; then again whenever it fell behind.
        self.needs_snapshot = True
        self.queue.put_nowait(SNAPSHOT_PLEASE)


class Look:
    """What one look at the database found: the new state and the difference to the old one."""

    def __init__(self, features: dict[str, bytes], changed: dict[str, bytes], removed: list[str],
                 mark: float, registry_version: int | None, full: bool):
        self.features, self.changed, self.removed = features, changed, removed
        self.mark, self.registry_version, self.full = mark, registry_version, full


class Broadcaster:
    """One poller per app for every open ``/api/v1/stream``; see the module docstring.

    ``subscribers`` are the open streams. The poller runs only while someone listens, and
    forgets its state when the last one leaves, so the next map starts from a fresh look.
    """

    def __init__(self, store: SQLiteStore, registry: Registry, poll_s: float = POLL_S,
                 resync_s: float = RESYNC_S, town: str | None = None):
        self.store = store
        self.registry = registry
        self.town = town
        where = TOWN_SQL if town is not None else ""
        self._devices_sql, self._changed_sql = DEVICES_SQL + where, CHANGED_SQL + where
        self.poll_s = poll_s
        self.resync_s = resync_s
        self.subscribers: set[Subscriber] = set()
        self._reset()
        self._task: asyncio.Task | None = None

    def _reset(self) -> None:
        self._features: dict[str, bytes] | None = None  # device id -> its feature as sent; None: not read yet
        self._snapshot: Event | None = None              # snapshot_event(self._features), made when asked
        self._mark = 0.0                                 # newest updated/since seen
        self._registry_version: int | None = None
        self._resynced = float("-inf")                   # time.monotonic() of the last full read
        self._ready: asyncio.Event | None = None

    # ------------------------------------------------------------ streams

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._reset()
            self._ready = asyncio.Event()
            self._task = loop.create_task(self._poll(), name="jisaku-stream-poller")
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def next_event(self, subscriber: Subscriber, timeout: float | None = None) -> Event:
        """The next event for ``subscriber``: a snapshot first (and after it fell behind), then changes.

        Raises TimeoutError when nothing happened for ``timeout`` seconds.
        """
        event = await asyncio.wait_for(subscriber.queue.get(), timeout)
        if event is SNAPSHOT_PLEASE:
            ready = self._ready
            if ready is not None:
                await ready.wait()
            # Read now, in the event loop where the poller changes the state: it holds every
            # change published so far, and every later one is queued from here on.
            subscriber.needs_snapshot = False
            if self._snapshot is None:
                self._snapshot = snapshot_event(self._features or {})
            return self._snapshot
        return event

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every stream without waiting for any of them."""
        for subscriber in self.subscribers:
            if subscriber.needs_snapshot:
                continue  # the snapshot it is about to get already holds this change
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                # Its reader is far behind: drop what it has not taken and send it a snapshot.
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
                subscriber.needs_snapshot = True
                subscriber.queue.put_nowait(SNAPSHOT_PLEASE)

    # ------------------------------------------------------------ the poller

    async def _poll(self) -> None:
        while self.subscribers:
            full = (self._features is None or time.monotonic() - self._resynced > self.resync_s)
            try:
                look = await asyncio.to_thread(self._look, full)
            except Exception:  # a locked or briefly missing database must not end every stream
                log.exception("the live stream could not read the latest state; trying again")
            else:
                self._apply(look)
            await asyncio.sleep(self.poll_s)
        # Nobody listens: forget the state, so the next map does not start from an old one
        # (unless a poller in another event loop took over meanwhile: its state stays).
        if self._task is asyncio.current_task():
            self._task = None
            self._reset()

    def _apply(self, look: Look) -> None:
        """Take the new state and tell every stream what changed (in the loop: no await in here)."""
        first = self._features is None
        self._features, self._mark, self._registry_version = look.features, look.mark, look.registry_version
        if look.full:
            self._resynced = time.monotonic()
        if look.changed or look.removed:
            self._snapshot = None
            if not first:
                self.publish(changes_event(look.changed, look.removed))
        if self._ready is not None:
            self._ready.set()

    def _look(self, full: bool) -> Look:
        """Read what changed since the previous look (in a worker thread: it reads the database).

        Only the poller calls this, and it waits for the answer, so ``self._features`` does not
        change meanwhile; it is read here, never written.
        """
        connection = self.store.db.connection
        before = self._features or {}
        version = self.registry.version()
        if version != self._registry_version:
            full = True  # added, renamed, made private, removed: compare every public device
        if full:
            rows = connection.execute(self._devices_sql, {"town": self.town}).fetchall()
        else:
            rows = connection.execute(self._changed_sql, {"since": self._mark - LOOK_BACK_S,
                                                          "town": self.town}).fetchall()
        features = dict(before) if not full else {}
        changed: dict[str, bytes] = {}
        mark = self._mark
        for row in rows:
            rendered = compact(feature({
                "id": row["id"], "kind": row["kind"], "name": row["name"], "name_ja": row["name_ja"],
                "lat": row["lat"], "lon": row["lon"],
                "ts": row["ts"], "values": json.loads(row["v"]) if row["v"] else {},
                "status": row["state"] or "unknown",
                "picture": json.loads(row["picture"]) if row["picture"] else None,
                "settings": json.loads(row["settings"]) if row["settings"] else None,
            }))
            features[row["id"]] = rendered
            if before.get(row["id"]) != rendered:
                changed[row["id"]] = rendered
            mark = max(mark, row["updated"] or 0.0, row["since"] or 0.0, row["pushed"] or 0.0)
        removed = [device_id for device_id in before if device_id not in features] if full else []
        return Look(features, changed, removed, mark, version, full)
