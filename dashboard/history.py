"""Down-sampled history of a public device, for the charts and route maps on its page.

A week of readings once a second is 600,000 rows; a chart needs a few hundred points.
The store aggregates (SQL ``GROUP BY`` in SQLite, ``GROUP BY time()`` in InfluxDB), so
only the buckets leave it. Each bucket keeps the lowest, average and highest value, so
a short spike still shows as the top of the band. Readings older than ``keep_raw_days``
(gateway/retention.py) survive only as hourly figures (count, min, max, sum); the SQLite
store adds them in, so a month or a whole winter still charts.

Example::

    GET /api/v1/devices/snow-1/history?metric=depth_cm&range=24h
    {"device_id": "snow-1", "metric": "depth_cm", "range": "24h", "bucket_s": 300,
     "start": ..., "end": ..., "buckets": [{"ts": ..., "min": 12, "avg": 12.4, "max": 13, "n": 30}, ...]}

    GET /api/v1/devices/snow-1/history?metric=depth_cm&range=120d   # a snow season, 12-hour buckets

    GET /api/v1/devices/bus-1/track?range=24h
    {"device_id": "bus-1", ..., "points": [{"ts": ..., "lat": 36.14, "lon": 137.25}, ...]}
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Callable, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from .api import public_device

router = APIRouter(prefix="/api/v1", tags=["public"])

# range name -> (how far back in seconds, bucket length in seconds): 240 to 340 buckets each.
# The long ones (a month, a snow season) reach past keep_raw_days (90 by default) into the
# hourly figures of gateway/retention.py; their buckets are whole hours, so that is exact.
RANGES: dict[str, tuple[int, int]] = {
    "24h": (24 * 3600, 300),              # 5 minutes
    "7d": (7 * 24 * 3600, 1800),          # 30 minutes
    "30d": (30 * 24 * 3600, 3 * 3600),    # 3 hours
    "120d": (120 * 24 * 3600, 12 * 3600),  # 12 hours: a winter, December to March
}
RangeName = Literal["24h", "7d", "30d", "120d"]
# A route needs finer steps than a chart: a bus covers 2 km in 5 minutes, and a polyline
# through points that far apart cuts across the town. A thousand points still draw at once.
TRACK_RANGES: dict[str, tuple[int, int]] = {"1h": (3600, 10), "24h": (24 * 3600, 60), "7d": (7 * 24 * 3600, 600)}
TrackRangeName = Literal["1h", "24h", "7d"]
METRIC = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Bucket(BaseModel):
    ts: float = Field(description="start of the bucket, UTC epoch seconds")
    min: float
    avg: float
    max: float
    n: int = Field(description="how many readings fell in the bucket")


class History(BaseModel):
    device_id: str
    metric: str = Field(examples=["depth_cm"])
    range: RangeName
    start: float
    end: float
    bucket_s: int
    buckets: list[Bucket]


class TrackPoint(BaseModel):
    ts: float = Field(description="UTC epoch seconds (InfluxDB: the start of the bucket)")
    lat: float
    lon: float


class Track(BaseModel):
    device_id: str
    range: TrackRangeName
    start: float
    end: float
    bucket_s: int
    points: list[TrackPoint] = Field(description="the last position in each bucket, oldest first")


def window(range_name: str, now: float, ranges: dict[str, tuple[int, int]] = RANGES) -> tuple[float, float, int]:
    """``(start, end, bucket_s)`` of a range ending ``now``; ``start`` on a bucket boundary.

    Boundaries are multiples of the bucket since the epoch, so a chart redrawn a minute
    later shows the same buckets, and SQLite and InfluxDB cut them in the same places.
    """
    span, bucket_s = ranges[range_name]
    start = math.floor((now - span) / bucket_s) * bucket_s
    return float(start), now, bucket_s


class BucketCache:
    """Finished buckets kept in memory, so a chart asked for again reads only the newest minutes.

    A week of 1 Hz readings takes SQLite a few seconds to aggregate on a small computer;
    the buckets that ended more than ``late_s`` ago rarely change, so only the rest is asked
    for again. Every ``refresh_s`` an entry is rebuilt whole, which picks up readings a device
    back-filled after an outage. The retention policy folding old readings into hourly figures
    does not change a finished bucket of whole hours (the figures add up to the same); a
    shorter bucket may shift within the hour, until the next rebuild.

    Example::

        cache = BucketCache()
        cache.get(("snow-1", "depth_cm", 300), start, end, 300, lambda a, b: store.history("snow-1", "depth_cm", a, b, 300))
    """

    def __init__(self, refresh_s: float = 600, late_s: float = 300, max_entries: int = 500):
        self.refresh_s, self.late_s, self.max_entries = refresh_s, late_s, max_entries
        self._entries: dict[tuple, tuple[float, float, float, list[dict]]] = {}  # made, start, until, items
        self._lock = threading.Lock()

    def get(self, key: tuple, start: float, end: float, bucket_s: float,
            fetch: Callable[[float, float], list[dict]]) -> list[dict]:
        with self._lock:
            entry = self._entries.get(key)
        made = time.monotonic()
        if entry and entry[1] <= start < entry[2] and made - entry[0] < self.refresh_s:
            made, _, until, kept = entry
            items = [item for item in kept if item["ts"] >= start] + fetch(until, end)
        else:
            items = fetch(start, end)
        until = math.floor((end - self.late_s) / bucket_s) * bucket_s
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (made, start, until, [item for item in items if item["ts"] < until])
        return items


def _cache(request: Request) -> BucketCache:
    cache = getattr(request.app.state, "history_cache", None)
    if cache is None:
        cache = request.app.state.history_cache = BucketCache()
    return cache


@router.get("/devices/{device_id}/history", response_model=History,
            summary="One metric of a public device, down-sampled to about 300 buckets (min/avg/max)")
def history(
    request: Request,
    device_id: str,
    metric: str = Query(..., description="a numeric metric the device sends, e.g. depth_cm or speed_kmh"),
    range_name: RangeName = Query("24h", alias="range",
                                  description="24h (5-minute buckets), 7d (30-minute), 30d (3-hour)"
                                              " or 120d (12-hour: a snow season)"),
) -> History:
    public_device(request, device_id)
    if not METRIC.match(metric):
        raise HTTPException(422, f"metric {metric!r} should be a name such as depth_cm: letters, digits, _ . -")
    start, end, bucket_s = window(range_name, time.time())
    store = request.app.state.readings
    buckets = _cache(request).get((device_id, metric, bucket_s), start, end, bucket_s,
                                  lambda a, b: store.history(device_id, metric, a, b, bucket_s))
    return History(device_id=device_id, metric=metric, range=range_name, start=start, end=end,
                   bucket_s=bucket_s, buckets=buckets)


@router.get("/devices/{device_id}/track", response_model=Track,
            summary="Where a public vehicle went: its last position in each bucket")
def track(
    request: Request,
    device_id: str,
    range_name: TrackRangeName = Query("24h", alias="range",
                                       description="1h (10-second steps), 24h (1-minute) or 7d (10-minute)"),
) -> Track:
    public_device(request, device_id)
    start, end, bucket_s = window(range_name, time.time(), TRACK_RANGES)
    store = request.app.state.readings
    points = _cache(request).get((device_id, "track", bucket_s), start, end, bucket_s,
                                 lambda a, b: store.track(device_id, a, b, bucket_s))
    return Track(device_id=device_id, range=range_name, start=start, end=end, bucket_s=bucket_s, points=points)
