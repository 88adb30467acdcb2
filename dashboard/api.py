"""Public JSON API (``/api/v1``): residents are anonymous and see public devices only."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from jisaku.gateway.store import SQLiteStore

from .models import DeviceSummary, FeatureCollection, Reading

router = APIRouter(prefix="/api/v1", tags=["public"])

GEOJSON = "application/geo+json"
STREAM_POLL_S = 1.0
STREAM_HEARTBEAT_S = 15.0


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
    """``latest.geojson`` rendered once per change, not once per request."""

    def __init__(self, store: SQLiteStore):
        self.store = store
        self._version: float | None = None
        self._body = b""

    def get(self) -> tuple[float, bytes]:
        version = self.store.last_update()
        if version != self._version:
            body = json.dumps(feature_collection(self.store.latest(public_only=True)), separators=(",", ":"),
                              ensure_ascii=False).encode()
            self._version, self._body = version, body
        return self._version, self._body


def _store(request: Request) -> SQLiteStore:
    return request.app.state.store


@router.get("/latest.geojson", response_model=FeatureCollection,
            responses={200: {"content": {GEOJSON: {}}}},
            summary="Latest state of every public device, one Feature per device")
def latest_geojson(request: Request) -> Response:
    _, body = request.app.state.latest.get()
    return Response(body, media_type=GEOJSON, headers={"Cache-Control": "no-cache"})


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


@router.get("/stream", summary="Server-sent events: the latest.geojson body whenever it changes",
            responses={200: {"content": {"text/event-stream": {}}}})
async def stream(request: Request) -> StreamingResponse:
    cache: LatestCache = request.app.state.latest

    async def events():
        sent_version = None
        quiet_s = 0.0
        while not await request.is_disconnected():
            version, body = await asyncio.to_thread(cache.get)
            if version != sent_version:
                sent_version, quiet_s = version, 0.0
                yield b"event: latest\ndata: " + body + b"\n\n"
            elif quiet_s >= STREAM_HEARTBEAT_S:
                quiet_s = 0.0
                yield b": still here\n\n"  # keeps proxies from closing an idle stream
            await asyncio.sleep(STREAM_POLL_S)
            quiet_s += STREAM_POLL_S

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
