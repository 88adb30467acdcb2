"""``GET /gtfs-rt/vehicle-positions.pb``: the buses as a GTFS-Realtime VehiclePositions feed.

Journey planners and transit apps read this standard feed (protobuf, made with Google's
``gtfs-realtime-bindings``). One entity per public bus that reported within
``stale_after_s``; the entity id and the vehicle id are the device id, so they stay the
same from one fetch to the next. Each has its position, speed (m/s), bearing and the time
of its newest reading. Buses are tied to the town's static GTFS routes and trips in
``<data dir>/gtfs.toml`` (read again whenever the file changes; no restart needed)::

    stale_after_s = 300          # leave out vehicles silent for longer (default 300)
    kinds = ["bus"]              # device kinds in the feed (default ["bus"])

    [vehicles."bus-1"]           # a device id
    route_id = "loop-east"       # route_id in the town's static GTFS (routes.txt)
    trip_id = "loop-east-0830"   # optional: trip_id in trips.txt
    direction_id = 0             # optional
    start_date = "20241122"      # optional, YYYYMMDD
    start_time = "08:30:00"      # optional
    label = "東循環 1号車"        # optional: shown to riders instead of the device's name
    license_plate = "飛騨 200 あ 1234"   # optional

``Last-Modified`` is when the feed's content last changed, by this server's clock (a bus
that reported or fell silent); ``If-Modified-Since`` then gets 304 Not Modified. docs/open-data.md
describes it for users.

Example::

    curl -s http://127.0.0.1:8000/gtfs-rt/vehicle-positions.pb -o positions.pb
"""

from __future__ import annotations

import logging
import math
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from google.transit import gtfs_realtime_pb2

from .opendata import app_settings
from .towns import town_of

log = logging.getLogger(__name__)

router = APIRouter(prefix="/gtfs-rt", tags=["open data"])

PROTOBUF = "application/x-protobuf"
CONFIG_NAME = "gtfs.toml"
DEFAULT_STALE_AFTER_S = 300.0
# Last-Modified has whole seconds; a change later in the same second (or one being committed)
# would hide behind it, so the header is sent only once the newest change is this old.
SETTLE_S = 1.5
TRIP_KEYS = {"route_id", "trip_id", "direction_id", "start_date", "start_time"}
VEHICLE_KEYS = TRIP_KEYS | {"label", "license_plate"}


class GtfsConfigError(ValueError):
    pass


@dataclass
class GtfsConfig:
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    kinds: tuple[str, ...] = ("bus",)
    vehicles: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_config(text: str, where: str = CONFIG_NAME) -> GtfsConfig:
    """Check ``gtfs.toml`` and say exactly what is wrong with it."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise GtfsConfigError(f"{where}: {err}") from None
    unknown = set(raw) - {"stale_after_s", "kinds", "vehicles"}
    if unknown:
        raise GtfsConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))};"
                              " known are kinds, stale_after_s, vehicles")
    stale = raw.get("stale_after_s", DEFAULT_STALE_AFTER_S)
    if not isinstance(stale, (int, float)) or isinstance(stale, bool) or stale <= 0:
        raise GtfsConfigError(f"{where}: stale_after_s should be seconds, e.g. 300")
    kinds = raw.get("kinds", ["bus"])
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise GtfsConfigError(f'{where}: kinds should be a list of device kinds, e.g. ["bus"]')
    vehicles = raw.get("vehicles", {})
    for device_id, mapping in vehicles.items():
        if not isinstance(mapping, dict):
            raise GtfsConfigError(f'{where}: [vehicles."{device_id}"] should be a table with route_id, trip_id, ...')
        wrong = set(mapping) - VEHICLE_KEYS
        if wrong:
            raise GtfsConfigError(f'{where}: [vehicles."{device_id}"] has unknown keys {", ".join(sorted(wrong))};'
                                  f" known are {', '.join(sorted(VEHICLE_KEYS))}")
        if "direction_id" in mapping and mapping["direction_id"] not in (0, 1):
            raise GtfsConfigError(f'{where}: [vehicles."{device_id}"] direction_id should be 0 or 1')
    return GtfsConfig(float(stale), tuple(kinds), vehicles)


def load_config(app) -> GtfsConfig:
    """``<data dir>/gtfs.toml``, read again when it changes; the defaults when there is none."""
    path = Path(app_settings(app).data_dir) / CONFIG_NAME
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return GtfsConfig()
    cached = getattr(app.state, "gtfs_config", None)
    if cached is None or cached[0] != (path, stamp):
        app.state.gtfs_config = ((path, stamp), parse_config(path.read_text(encoding="utf-8"), str(path)))
    return app.state.gtfs_config[1]


def build_feed(devices: list[dict[str, Any]], updated: dict[str, float], config: GtfsConfig,
               now: float) -> tuple[gtfs_realtime_pb2.FeedMessage, float | None]:
    """The feed of the public ``devices`` (as ``SQLiteStore.latest`` gives them), and when it last changed."""
    feed = gtfs_realtime_pb2.FeedMessage()
    feed.header.gtfs_realtime_version = "2.0"
    feed.header.incrementality = gtfs_realtime_pb2.FeedHeader.FULL_DATASET
    feed.header.timestamp = int(now)
    changed = None
    for device in devices:
        values, ts = device["values"], device["ts"]
        if device["kind"] not in config.kinds or ts is None or not device.get("public", True):
            continue
        lat, lon = values.get("lat"), values.get("lon")
        if not (_number(lat) and _number(lon)):
            continue
        if now - ts > config.stale_after_s:
            # It left the feed when it fell silent for too long: that changed the feed too.
            changed = max(changed or 0.0, min(now, ts + config.stale_after_s))
            continue
        changed = max(changed or 0.0, updated.get(device["id"], ts))
        entity = feed.entity.add()
        entity.id = device["id"]
        vehicle = entity.vehicle
        vehicle.vehicle.id = device["id"]
        mapping = config.vehicles.get(device["id"], {})
        vehicle.vehicle.label = str(mapping.get("label") or device["name"] or device["id"])
        if mapping.get("license_plate"):
            vehicle.vehicle.license_plate = str(mapping["license_plate"])
        vehicle.position.latitude = lat
        vehicle.position.longitude = lon
        if _number(values.get("speed_kmh")):
            vehicle.position.speed = values["speed_kmh"] / 3.6  # GTFS-Realtime wants metres per second
        if _number(values.get("heading")):
            vehicle.position.bearing = values["heading"] % 360
        vehicle.timestamp = int(ts)
        if TRIP_KEYS & set(mapping):
            for key in ("trip_id", "route_id", "start_date", "start_time"):
                if key in mapping:
                    setattr(vehicle.trip, key, str(mapping[key]))
            if "direction_id" in mapping:
                vehicle.trip.direction_id = int(mapping["direction_id"])
    return feed, changed


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _not_modified_since(request: Request, last_modified: int) -> bool:
    header = request.headers.get("if-modified-since")
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # an unreadable date: answer in full, as RFC 9110 says
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return last_modified <= since.timestamp()


@router.get("/vehicle-positions.pb", summary="GTFS-Realtime VehiclePositions of the public buses",
            response_class=Response,
            responses={200: {"content": {PROTOBUF: {}}, "description": "a FeedMessage (protobuf)"},
                       304: {"description": "not modified since If-Modified-Since"},
                       503: {"description": "gtfs.toml has a mistake (the dashboard's log says which)"}})
def vehicle_positions(request: Request) -> Response:
    try:
        config = load_config(request.app)
    except GtfsConfigError as err:
        # The details may name a private device: they go to the operator's log, not to the public.
        log.error("%s", err)
        return Response("the GTFS-Realtime feed is not configured correctly; the dashboard's log says what to"
                        " fix in gtfs.toml\n", status_code=503, media_type="text/plain")
    store = request.app.state.store
    now = time.time()
    # the town's buses: /t/<id>/gtfs-rt/vehicle-positions.pb for town <id>
    feed, changed = build_feed(store.latest(public_only=True, town=town_of(request).id), store.latest_updated(),
                               config, now)
    headers = {"Cache-Control": "no-cache"}
    if changed is not None and now - math.floor(changed) >= SETTLE_S:
        last_modified = math.floor(changed)
        if _not_modified_since(request, last_modified):
            return Response(status_code=304, headers=headers)
        headers["Last-Modified"] = format_datetime(datetime.fromtimestamp(last_modified, timezone.utc),
                                                   usegmt=True)
    return Response(feed.SerializeToString(), media_type=PROTOBUF, headers=headers)
