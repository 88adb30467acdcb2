"""Public JSON API (``/api/v1``): residents are anonymous and see public devices only."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from jisaku.gateway.store import SQLiteStore

from .models import DeviceSummary, FeatureCollection, Reading

router = APIRouter(prefix="/api/v1", tags=["public"])

log = logging.getLogger(__name__)

GEOJSON = "application/geo+json"
# How often the shared poller looks for changes for the live streams. Each event is the whole
# latest.geojson, so this also bounds what a phone on the map downloads (one snapshot a second).
STREAM_POLL_S = 1.0
STREAM_HEARTBEAT_S = 15.0
# latest.geojson may be this old: a burst of requests asks the store once per interval.
CACHE_MAX_AGE_S = 0.5


def position(device: dict[str, Any]) -> tuple[float, float] | None:
    """Where to draw a device: its last reported position, else where it is mounted."""
    values = device["values"]
    if "lat" in values and "lon" in values:
        return values["lat"], values["lon"]
    if device["lat"] is not None and device["lon"] is not None:
        return device["lat"], device["lon"]
    return None


def feature_collection(devices: list[dict[str, Any]]) -> dict[str, Any]:
    features = []
    for device in devices:
        where = position(device)
        features.append({
            "type": "Feature",
            "id": device["id"],
            "geometry": {"type": "Point", "coordinates": [where[1], where[0]]} if where else None,
            "properties": {
                "kind": device["kind"], "name": device["name"], "status": device["status"],
                "ts": device["ts"], "values": device["values"],
            },
        })
    return {"type": "FeatureCollection", "features": features}


class LatestCache:
    """``latest.geojson`` rendered once per change, not once per request.

    The store is asked whether anything changed at most every ``max_age_s`` seconds, so a
    burst of requests (or 500 buses each reporting every second) costs one query and one
    rendering per interval, not one per request. The body is kept plain and gzipped
    (a phone on mobile data then downloads a fraction of the bytes).

    Example::

        cache = LatestCache(store)
        version, body = cache.get()       # bytes of the FeatureCollection
    """

    def __init__(self, store: SQLiteStore, max_age_s: float = CACHE_MAX_AGE_S):
        self.store = store
        self.max_age_s = max_age_s
        # (version, body, gzipped body), replaced as one so a reader never mixes two versions
        self._rendered: tuple[float | None, bytes, bytes] = (None, b"", b"")
        self._checked = float("-inf")  # time.monotonic() of the last look at the store
        self._lock = threading.Lock()  # one thread renders; the others wait for its result

    def fresh(self, max_age_s: float | None = None) -> bool:
        """True while the cached body may be served without asking the store."""
        limit = self.max_age_s if max_age_s is None else max_age_s
        return time.monotonic() - self._checked < limit

    def get(self, max_age_s: float | None = None) -> tuple[float, bytes]:
        """The version (time of the last change) and the body; may query the store (blocking)."""
        if not self.fresh(max_age_s):
            with self._lock:
                if not self.fresh(max_age_s):  # another thread may have refreshed it meanwhile
                    self._refresh()
        return self._rendered[0], self._rendered[1]

    def cached(self) -> tuple[bytes, bytes]:
        """The body as last rendered, plain and gzipped, without asking the store."""
        return self._rendered[1], self._rendered[2]

    def _refresh(self) -> None:
        version = self.store.last_update()
        if version != self._rendered[0]:
            body = json.dumps(feature_collection(self.store.latest(public_only=True)), separators=(",", ":"),
                              ensure_ascii=False).encode()
            self._rendered = (version, body, gzip.compress(body, compresslevel=6))
        self._checked = time.monotonic()


class Broadcaster:
    """One poller per app for every open ``/api/v1/stream``: one store query per interval,
    and the same event bytes handed to every subscriber's queue.

    Each subscriber's queue holds one event: every event is a whole snapshot, so a slow
    reader that has not taken the previous one simply gets the newest one instead, and never
    holds up the others. The poller runs only while someone listens.

    Example::

        queue = broadcaster.subscribe()
        try:
            event = await queue.get()         # b"event: latest\ndata: {...}\n\n"
        finally:
            broadcaster.unsubscribe(queue)
    """

    def __init__(self, cache: LatestCache, poll_s: float = STREAM_POLL_S):
        self.cache = cache
        self.poll_s = poll_s
        self.subscribers: set[asyncio.Queue[bytes]] = set()
        self._event = b""
        self._version: float | None = None
        self._task: asyncio.Task | None = None

    def subscribe(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        if self._event:
            queue.put_nowait(self._event)  # a new map gets the current state at once
        self.subscribers.add(queue)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._poll(), name="jisaku-stream-poller")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self.subscribers.discard(queue)

    def publish(self, event: bytes) -> None:
        """Hand ``event`` to every subscriber without waiting for any of them."""
        self._event = event
        for queue in self.subscribers:
            if queue.full():
                queue.get_nowait()  # its reader is behind: the newer snapshot replaces the old
            queue.put_nowait(event)

    async def _poll(self) -> None:
        while self.subscribers:
            try:
                # always a fresh look (one cheap query per interval), so an event follows a
                # change within one interval plus the rendering
                version, body = await asyncio.to_thread(self.cache.get, 0.0)
            except Exception:  # a locked or briefly missing database must not end every stream
                log.exception("the live stream could not read the latest state; trying again")
            else:
                if version != self._version:
                    self._version = version
                    self.publish(b"event: latest\ndata: " + body + b"\n\n")
            await asyncio.sleep(self.poll_s)
        # Nobody listens: forget the last event, so the next map does not get an old one first.
        self._task, self._event, self._version = None, b"", None


def _store(request: Request) -> SQLiteStore:
    return request.app.state.store


@router.get("/latest.geojson", response_model=FeatureCollection,
            responses={200: {"content": {GEOJSON: {}}}},
            summary="Latest state of every public device, one Feature per device")
async def latest_geojson(request: Request) -> Response:
    # async, and the store is asked in a thread only when the cached body is too old:
    # most requests are answered from memory without a thread hop.
    cache: LatestCache = request.app.state.latest
    if not cache.fresh():
        await asyncio.to_thread(cache.get)
    headers = {"Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    body, gzipped = cache.cached()
    if "gzip" in request.headers.get("accept-encoding", ""):
        # gzipped once per change; a phone on mobile data downloads a fraction of the bytes
        return Response(gzipped, media_type=GEOJSON, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, media_type=GEOJSON, headers=headers)


@router.get("/devices", response_model=list[DeviceSummary], summary="Public devices with their status")
def devices(request: Request) -> list[DeviceSummary]:
    summaries = []
    for device in _store(request).latest(public_only=True):
        where = position(device)
        summaries.append(DeviceSummary(
            id=device["id"], kind=device["kind"], name=device["name"], status=device["status"],
            last_seen=device["ts"], lat=where[0] if where else None, lon=where[1] if where else None,
            values=device["values"],
        ))
    return summaries


@router.get("/devices/{device_id}/readings", response_model=list[Reading],
            summary="Readings of one public device, oldest first")
def readings(
    request: Request,
    device_id: str,
    since: float | None = Query(None, description="UTC epoch seconds; default: 24 hours before until"),
    until: float | None = Query(None, description="UTC epoch seconds; default: now"),
    limit: int = Query(1000, ge=1, le=10000, description="at most this many, the newest"),
) -> list[dict[str, Any]]:
    device = request.app.state.registry.get(device_id)
    if device is None or not device.public:
        # The same answer for a private device as for none: its existence stays private.
        raise HTTPException(404, f"no public device {device_id!r}")
    if since is None:
        since = (until if until is not None else time.time()) - 24 * 3600
    return request.app.state.readings.readings(device_id, since=since, until=until, limit=limit)


def broadcaster(app) -> Broadcaster:
    """The app's one :class:`Broadcaster`, made on first use."""
    if getattr(app.state, "broadcaster", None) is None:
        app.state.broadcaster = Broadcaster(app.state.latest)
    return app.state.broadcaster


@router.get("/stream", summary="Server-sent events: the latest.geojson body whenever it changes",
            description="Each change is one event `latest` whose data is the whole latest.geojson body;"
                        " a comment line every 15 s keeps idle connections open.",
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream(request: Request) -> StreamingResponse:
    hub = broadcaster(request.app)
    queue = hub.subscribe()

    async def events():
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), STREAM_HEARTBEAT_S)
                except TimeoutError:
                    yield b": still here\n\n"  # keeps proxies from closing an idle stream
        finally:  # the client went away (Starlette cancels this generator) or the server stops
            hub.unsubscribe(queue)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
