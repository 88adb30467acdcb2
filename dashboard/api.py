"""Public JSON API (``/api/v1``): residents are anonymous and see public devices only."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.store import SQLiteStore
from jisaku.gateway.town_state import TownState

from .kind_view import browser_kinds
from .models import DeviceSummary, FeatureCollection, Reading
from .towns import shows_device, town_json, town_of
from .stream import GZIP_HEADER, HEARTBEAT, Broadcaster, feature, position

router = APIRouter(prefix="/api/v1", tags=["public"])

GEOJSON = "application/geo+json"
STREAM_HEARTBEAT_S = 15.0
# latest.geojson may be this old: a burst of requests asks the store once per interval.
CACHE_MAX_AGE_S = 0.5


def feature_collection(devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [feature(device) for device in devices]}


class LatestCache:
    """``latest.geojson`` rendered once per change, not once per request.

    The store is asked whether anything changed at most every ``max_age_s`` seconds, so a
    burst of requests (or 500 buses each reporting every second) costs one query and one
    rendering per interval, not one per request. The body is kept plain and gzipped
    (a phone on mobile data then downloads a fraction of the bytes).

    Example::

        cache = LatestCache(store, town="main")
        version, body = cache.get()       # bytes of the FeatureCollection of main's public devices

    One per town (:func:`latest_cache`); ``town=None`` renders every town's devices together.
    """

    def __init__(self, store: SQLiteStore, max_age_s: float = CACHE_MAX_AGE_S, town: str | None = None):
        self.store = store
        self.town = town
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
            body = json.dumps(feature_collection(self.store.latest(public_only=True, town=self.town)),
                              separators=(",", ":"),
                              ensure_ascii=False).encode()
            self._rendered = (version, body, gzip.compress(body, compresslevel=6))
        self._checked = time.monotonic()


def _store(request: Request) -> SQLiteStore:
    return request.app.state.store


def latest_cache(request: Request) -> LatestCache:
    """The :class:`LatestCache` of the request's town (dashboard/towns.py), made on first use."""
    town = town_of(request).id
    caches: dict[str, LatestCache] = request.app.state.latest
    if town not in caches:
        caches[town] = LatestCache(request.app.state.store, town=town)
    return caches[town]


def public_device(request: Request, device_id: str) -> DeviceRecord:
    """A device residents may see at this path, else 404: private, practice, unknown, or another
    town's under /t/<id>/ all get the same words, so none of them is known to exist."""
    device = request.app.state.registry.get(device_id)
    if device is None or not device.shown_to_residents or not shows_device(request, device.town):
        raise HTTPException(404, f"no public device {device_id!r}")
    return device


@router.get("/latest.geojson", response_model=FeatureCollection,
            responses={200: {"content": {GEOJSON: {}}}},
            summary="Latest state of every public device, one Feature per device")
async def latest_geojson(request: Request) -> Response:
    # async, and the store is asked in a thread only when the cached body is too old:
    # most requests are answered from memory without a thread hop.
    cache = latest_cache(request)
    if not cache.fresh():
        await asyncio.to_thread(cache.get)
    headers = {"Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    body, gzipped = cache.cached()
    if "gzip" in request.headers.get("accept-encoding", ""):
        # gzipped once per change; a phone on mobile data downloads a fraction of the bytes
        return Response(gzipped, media_type=GEOJSON, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, media_type=GEOJSON, headers=headers)


@router.get("/kinds", summary="Every kind of device: its name, colour, icon and how its values read")
def kinds_in(lang: Literal["ja", "en"] = Query("ja", description="the language of the names")) -> dict[str, Any]:
    """From the kind folders (kinds/<name>/kind.toml), as the live map draws them; ``other`` is
    what a device of a kind no folder describes is shown as. ``icon`` is SVG drawn on a 24 × 24
    grid in which ``"C"`` stands for ``colour``."""
    return browser_kinds(lang)


@router.get("/town", summary="The town: its name, where its pages are, whether it is in disaster mode")
def town(request: Request) -> dict[str, Any]:
    """``{"id", "name", "name_ja", "base_path", "lat", "lon", "zoom", "disaster_mode"}``; ``disaster_mode``
    is null, or ``{"since": <epoch s>}`` while it is on (shelters open, a banner on the map)."""
    shown = town_of(request)
    mode = TownState(request.app.state.store.db).disaster_mode(shown.id)
    return {**town_json(shown), "disaster_mode": {"since": mode["since"]} if mode else None}


@router.get("/devices", response_model=list[DeviceSummary], summary="Public devices with their status")
def devices(request: Request) -> list[DeviceSummary]:
    summaries = []
    for device in _store(request).latest(public_only=True, town=town_of(request).id):
        where = position(device)
        summaries.append(DeviceSummary(
            id=device["id"], kind=device["kind"], name=device["name"], name_ja=device["name_ja"],
            status=device["status"],
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
    public_device(request, device_id)  # a private device is answered as one that does not exist
    if since is None:
        since = (until if until is not None else time.time()) - 24 * 3600
    return request.app.state.readings.readings(device_id, since=since, until=until, limit=limit)


def broadcaster(app, town: str) -> Broadcaster:
    """The town's one :class:`Broadcaster` (dashboard/stream.py), made on first use."""
    hubs = getattr(app.state, "broadcasters", None)
    if hubs is None:
        hubs = app.state.broadcasters = {}
    if town not in hubs:
        hubs[town] = Broadcaster(app.state.store, app.state.registry, town=town)
    return hubs[town]


STREAM_DESCRIPTION = """Server-sent events with two event types:

- `latest`, first on every (re)connection: the whole latest.geojson body (a FeatureCollection
  of every public device of the town: `/t/<id>/api/v1/stream` for town `<id>`);
- `changes`, then about once a second while something changes: `{"features": [...], "removed": [...]}`,
  the Features of devices that are new or changed (position, values, status, name) and the ids
  of devices that left the public map (made private or removed). Apply them to the snapshot by
  `id`. A client too slow to take the changes gets a new `latest` instead.

A comment line every 15 s keeps idle connections open. Sent gzipped when the client accepts it
(`Accept-Encoding: gzip`, as every browser does)."""


@router.get("/stream", summary="Server-sent events: a snapshot of latest.geojson, then only what changed",
            description=STREAM_DESCRIPTION, responses={200: {"content": {"text/event-stream": {}}}})
async def stream(request: Request) -> StreamingResponse:
    hub = broadcaster(request.app, town_of(request).id)
    subscriber = hub.subscribe()
    # Browsers accept gzip: each event is compressed once for every such stream (see stream.Event).
    gzipped = "gzip" in request.headers.get("accept-encoding", "")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"

    async def events():
        try:
            if gzipped:
                yield GZIP_HEADER
            while True:
                try:
                    event = await hub.next_event(subscriber, STREAM_HEARTBEAT_S)
                except TimeoutError:
                    event = HEARTBEAT
                yield event.gzipped if gzipped else event.plain
        finally:  # the client went away (Starlette cancels this generator) or the server stops
            hub.unsubscribe(subscriber)

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
