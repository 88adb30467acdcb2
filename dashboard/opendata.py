"""Open data: readings of public devices as CSV or GeoJSON, under a stated licence.

``GET /api/v1/export.csv`` and ``GET /api/v1/export.geojson`` (raw readings) and
``GET /api/v1/export-hourly.csv`` (hourly figures) take the same parameters:

- ``device=bus-1&device=snow-1`` (repeatable) and/or ``kind=bus`` (repeatable): the devices;
  both together mean "these devices and every device of these kinds"; neither means every
  public device. A private device is answered exactly like one that does not exist.
- ``start`` and ``end``: ISO 8601 with a time zone (``2024-11-22T09:00:00+09:00``,
  ``2024-11-22T00:00:00Z``) or UTC epoch seconds; ``start <= ts < end``. Default: the
  24 hours before now. At most :data:`MAX_RANGE_DAYS` days per request
  (:data:`MAX_HOURLY_RANGE_DAYS` for the hourly figures).

Raw readings are kept for ``keep_raw_days`` (gateway/retention.py); older ones survive only
as hourly figures (count, min, max, mean of each metric), so for an old range the raw exports
are empty and ``export-hourly.csv`` has the data. It gives the same figures for any range,
old or recent, so one file can span a whole winter.

Both are streamed a page of readings at a time, so a month of a busy bus never sits in
memory. The licence and attribution are in ``GET /api/v1/open-data.json`` (with the schema),
in a ``Link: <licence URL>; rel="license"`` header of every export, and inside the GeoJSON.
docs/open-data.md describes it for users.

Example::

    curl -o buses.csv 'http://127.0.0.1:8000/api/v1/export.csv?kind=bus&start=2024-11-22T00:00:00%2B09:00'
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from jisaku.contract import settings as settings_module
from jisaku.gateway import retention, shelter_data
from jisaku.gateway.registry import DeviceRecord

from .history import METRIC
from .towns import TownSettings, deployment_settings, town_of

router = APIRouter(prefix="/api/v1", tags=["open data"])

DEFAULT_RANGE_S = 24 * 3600
MAX_RANGE_DAYS = 31
CSV_COLUMNS = ["device_id", "kind", "ts", "metric", "value"]
HOURLY_CSV_COLUMNS = ["device_id", "kind", "hour", "metric", "n", "min", "max", "mean"]
# A year of hourly figures is 8,760 rows per metric: small enough to allow a whole season at once.
MAX_HOURLY_RANGE_DAYS = 366
HOUR = 3600
# Rows per write to the client: big enough to keep the overhead low, small enough to stream.
ROWS_PER_CHUNK = 500

# Licences a town is likely to choose, with their canonical pages. Anything else is shown as given.
LICENCES = {
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International", "https://creativecommons.org/licenses/by/4.0/"),
    "CC-BY-SA-4.0": ("Creative Commons Attribution-ShareAlike 4.0 International",
                     "https://creativecommons.org/licenses/by-sa/4.0/"),
    "CC0-1.0": ("Creative Commons Zero v1.0 Universal", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "ODbL-1.0": ("Open Data Commons Open Database License v1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
    "PDL-1.0": ("Public Data License (Japan) 1.0 / 公共データ利用規約（第1.0版）",
                "https://www.digital.go.jp/resources/open_data/public_data_license_v1.0"),
}


class Licence(BaseModel):
    id: str = Field(examples=["CC-BY-4.0"], description="SPDX identifier, or the licence as the town wrote it")
    name: str
    url: str | None = Field(None, description="the licence text")
    attribution: str = Field(description="whom to credit when the data is reused")


class CameraPictures(BaseModel):
    device_id: str
    name: str
    lat: float | None
    lon: float | None
    list: str = Field(description="the pictures, newest first, with their URLs: ?since=&until=&limit=")
    count: int
    first: float | None = Field(description="UTC epoch seconds of the oldest picture kept")
    last: float | None = Field(description="UTC epoch seconds of the newest")
    kept: str = Field(description="how long pictures are kept")


class ShelterExports(BaseModel):
    """The public shelters: the national shelter list the town imported, with the live state."""

    csv: str = "/api/v1/shelters.csv"
    geojson: str = "/api/v1/shelters.geojson"
    count: int = Field(description="how many public shelters there are")
    formats: dict[str, str] = Field(description="?dataset= values: the national formats, each with who defines it")
    live_columns: dict[str, str] = Field(description="the columns after the national ones")
    encoding: str = "CSV: UTF-8 with a BOM (Excel in Japan opens it as it is), CRLF line ends"


SHELTER_LIVE_SCHEMA = {
    "開設状況": "開設 (open) or 閉鎖 (closed), as the operators set it",
    "避難者数": "people inside, from the shelter's tally; empty before its first report",
    "収容可能人数": "the capacity in people; empty when not known",
    "混雑状況": "空きあり (space available), 混雑 (crowded: 80 % or more), 満員 (full) or 閉鎖 (closed)",
    "更新日時": "when the tally last reported, ISO 8601 in Japan time (2024-11-22T09:00:00+09:00); empty before",
}


class OpenData(BaseModel):
    """What ``/api/v1/open-data.json`` says: the terms and the shape of the exports."""

    licence: Licence
    csv_columns: dict[str, str]
    geojson_feature: dict[str, str]
    hourly_csv_columns: dict[str, str]
    max_range_days: int = MAX_RANGE_DAYS
    max_hourly_range_days: int = MAX_HOURLY_RANGE_DAYS
    keep_raw_days: float | None = Field(
        None, description="readings older than this many days are only in export-hourly.csv;"
                          " null: raw readings are kept for ever (or by the database's own retention)")
    pictures: list[CameraPictures] = Field(
        default_factory=list, description="the public cameras' pictures, under the same licence: the black-out"
                                          " areas are black in every copy published")
    shelters: ShelterExports | None = Field(None, description="the public shelters (null: there are none)")
    docs: str = "docs/open-data.md in the jisaku repository"


CSV_SCHEMA = {
    "device_id": "the device's id, e.g. bus-1 (stable; the same id as in latest.geojson)",
    "kind": "bus, garbage_truck, float, snow_gauge, ...",
    "ts": "when the reading was taken: ISO 8601, UTC, milliseconds (2024-11-22T09:00:00.250Z)",
    "metric": "what was measured; the unit is the name's suffix (depth_cm, speed_kmh, temp_c); lat/lon in WGS-84 degrees",
    "value": "a number, true/false, or text",
}
GEOJSON_SCHEMA = {
    "geometry": "Point [lon, lat] (WGS-84) where the reading was taken, else where the device is mounted, else null",
    "properties.device_id": "the device's id",
    "properties.kind": "bus, garbage_truck, float, snow_gauge, ...",
    "properties.ts": "ISO 8601, UTC, milliseconds",
    "properties.seq": "the device's sequence number of the reading",
    "properties.values": "every metric of the reading, e.g. {\"depth_cm\": 12.5}",
}
HOURLY_CSV_SCHEMA = {
    "device_id": "the device's id, as in export.csv",
    "kind": "bus, garbage_truck, float, snow_gauge, ...",
    "hour": "the start of the hour: ISO 8601, UTC (2024-11-22T09:00:00.000Z); the figures cover the hour from there",
    "metric": "a numeric metric, as in export.csv (true/false and text are not summed up)",
    "n": "how many readings of the metric the hour had",
    "min": "the lowest value in the hour",
    "max": "the highest value in the hour",
    "mean": "the average: the sum of the values divided by n",
}


# ---------------------------------------------------------------- settings and licence


app_settings = deployment_settings  # the deployment's settings (jisaku.toml), kept under its old name


def licence(settings: settings_module.Settings | TownSettings) -> Licence:
    """The terms of the exports: jisaku.toml's ``licence`` and ``town``, or a town's own (TownSettings)."""
    name, url = LICENCES.get(settings.licence, (settings.licence, None))
    credit = settings.town if isinstance(settings, settings_module.Settings) else _credit(settings)
    return Licence(id=settings.licence, name=name, url=url,
                   attribution=credit or "the town's own sensors (jisaku)")


def _credit(town: TownSettings) -> str:
    """Whom to credit: the town's names, "Hida City / 飛騨市" when it has both."""
    return " / ".join(dict.fromkeys(name for name in (town.name, town.name_ja) if name))


def town_licence(request: Request) -> Licence:
    """The licence of the request's town (dashboard/towns.py): each town publishes under its own."""
    return licence(town_of(request))


def _licence_headers(request: Request, terms: Licence, filename: str) -> dict[str, str]:
    base = town_of(request).base_path
    headers = {"Content-Disposition": f'attachment; filename="{filename}"',
               "Link": f'<{base}/api/v1/open-data.json>; rel="describedby"'}
    if terms.url:
        headers["Link"] = f'<{terms.url}>; rel="license", ' + headers["Link"]
    return headers


# ---------------------------------------------------------------- parameters


def parse_time(text: str, name: str) -> float:
    """ISO 8601 with a time zone, or epoch seconds, to epoch seconds; 400 otherwise."""
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise HTTPException(400, f"{name}={text!r} is not a time")
        return number
    try:
        # A "+09:00" left unencoded in a URL arrives as " 09:00".
        when = datetime.fromisoformat(re.sub(r" (\d\d:?\d\d)$", r"+\1", text.strip()))
    except ValueError:
        raise HTTPException(400, f"{name}={text!r}: give ISO 8601 such as 2024-11-22T09:00:00+09:00"
                                 " or UTC epoch seconds such as 1732233600") from None
    if when.tzinfo is None:
        raise HTTPException(400, f"{name}={text!r} has no time zone: add Z for UTC or +09:00 for Japan time")
    return when.timestamp()


def time_range(start: str | None, end: str | None, max_days: int = MAX_RANGE_DAYS) -> tuple[float, float]:
    until = parse_time(end, "end") if end else time.time()
    since = parse_time(start, "start") if start else until - DEFAULT_RANGE_S
    if since >= until:
        raise HTTPException(400, "start must be before end")
    if until - since > max_days * 86400:
        raise HTTPException(400, f"at most {max_days} days per export: split the range into several"
                                 " requests (start=...&end=...)")
    return since, until


def chosen_devices(request: Request, ids: list[str], kinds: list[str]) -> list[DeviceRecord]:
    """The town's public devices asked for; a private, unknown or other town's id is 404 with the same words."""
    public = {device.id: device
              for device in request.app.state.registry.devices(public_only=True, town=town_of(request).id)}
    if not ids and not kinds:
        return list(public.values())
    for device_id in ids:
        if device_id not in public:
            # Word for word the answer of /devices/{id}/readings: a private device does not exist here.
            raise HTTPException(404, f"no public device {device_id!r}")
    wanted = set(ids)
    return [device for device in public.values() if device.id in wanted or device.kind in kinds]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _readings(request: Request, devices: list[DeviceRecord], since: float, until: float) -> Iterator[
        tuple[DeviceRecord, dict[str, Any]]]:
    store = request.app.state.readings
    for device in devices:
        for reading in store.readings_in_range(device.id, since, until):
            yield device, reading


def _keep_raw_days(request: Request) -> float | None:
    """How long the SQLite store keeps raw readings; None when for ever or when InfluxDB keeps them."""
    if request.app.state.readings is not request.app.state.store:
        return None
    days = app_settings(request.app).retention_days[0]
    return days if days > 0 else None


def _hourly(request: Request, devices: list[DeviceRecord], since: float, until: float) -> Iterator[
        tuple[DeviceRecord, float, str, dict[str, Any]]]:
    """``(device, hour, metric, bucket)`` for every hour that starts in ``[since, until)``.

    The store's history in one-hour buckets: the SQLite store adds the retention policy's
    stored hourly figures to what it sums up from raw readings, InfluxDB sums up its own.
    The metrics are those the device has sent (its latest values), plus, in SQLite, any
    found only among the stored hourly figures.
    """
    store = request.app.state.readings
    sent = {row["id"]: set(row["values"])
            for row in request.app.state.store.latest(public_only=True, town=town_of(request).id)}
    first_hour = math.ceil(since / HOUR) * HOUR  # history's buckets start here, on whole hours
    for device in devices:
        metrics = sent.get(device.id, set())
        if store is request.app.state.store:
            metrics |= retention.hourly_metrics(store.db, device.id)
        rows = [(bucket["ts"], metric, bucket)
                for metric in metrics if METRIC.match(metric)
                for bucket in store.history(device.id, metric, first_hour, until, HOUR)]
        # At most a year of hours per metric: sorting in memory is fine.
        for hour, metric, bucket in sorted(rows, key=lambda row: row[:2]):
            yield device, hour, metric, bucket


# ---------------------------------------------------------------- endpoints

DEVICE_HELP = "a public device's id; repeat for more (device=bus-1&device=bus-2)"
KIND_HELP = "every public device of this kind; repeatable (kind=bus&kind=float)"
START_HELP = "ISO 8601 with a time zone, or UTC epoch seconds; default: 24 h before end"
END_HELP = "exclusive; ISO 8601 with a time zone, or UTC epoch seconds; default: now"


@router.get("/open-data.json", response_model=OpenData, summary="Licence, attribution and schema of the exports")
def open_data(request: Request) -> OpenData:
    return OpenData(licence=town_licence(request), csv_columns=CSV_SCHEMA,
                    geojson_feature=GEOJSON_SCHEMA, hourly_csv_columns=HOURLY_CSV_SCHEMA,
                    keep_raw_days=_keep_raw_days(request), pictures=_cameras(request),
                    shelters=_shelters(request))


def _shelters(request: Request) -> ShelterExports | None:
    """Where the public shelters are, if the town has any (dashboard/shelters.py serves them)."""
    town = town_of(request)
    count = sum(1 for device in request.app.state.registry.devices(public_only=True, town=town.id)
                if device.kind == shelter_data.KIND)
    if not count:
        return None
    return ShelterExports(csv=f"{town.base_path}/api/v1/shelters.csv",
                          geojson=f"{town.base_path}/api/v1/shelters.geojson", count=count, live_columns=SHELTER_LIVE_SCHEMA,
                          formats={d.key: f"{d.name} ({d.source})" for d in shelter_data.DATASETS})


def _cameras(request: Request) -> list[CameraPictures]:
    """Every public device that has pictures, with where to list them."""
    settings = app_settings(request.app)
    _, _, every_days, hourly_days = settings.retention_days
    kept = (f"every picture for {every_days:g} days, then one an hour"
            + (f" up to {hourly_days:g} days" if hourly_days else " for ever") if every_days else "for ever")
    town = town_of(request)
    rows = request.app.state.store.db.connection.execute(
        "SELECT d.id, d.name, d.lat, d.lon, count(*) AS n, min(p.ts) AS first, max(p.ts) AS last"
        " FROM pictures p JOIN devices d ON d.id = p.device_id"
        " WHERE d.public = 1 AND d.practice = 0"  # registry.SHOWN_TO_RESIDENTS
        " AND d.town = ? GROUP BY d.id ORDER BY d.id", (town.id,))
    return [CameraPictures(device_id=row["id"], name=row["name"], lat=row["lat"], lon=row["lon"],
                           list=f"{town.base_path}/api/v1/devices/{row['id']}/pictures", count=row["n"], first=row["first"],
                           last=row["last"], kept=kept) for row in rows]


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "" if value is None else str(value)


@router.get("/export.csv", summary="Readings of public devices as CSV, one row per metric",
            responses={200: {"content": {"text/csv": {}}}, 400: {"description": "bad time or too long a range"},
                       404: {"description": "no such public device"}})
def export_csv(request: Request, device: list[str] = Query([], description=DEVICE_HELP),
               kind: list[str] = Query([], description=KIND_HELP),
               start: str | None = Query(None, description=START_HELP),
               end: str | None = Query(None, description=END_HELP)) -> StreamingResponse:
    since, until = time_range(start, end)
    devices = chosen_devices(request, device, kind)
    terms = town_licence(request)

    def rows() -> Iterator[list]:
        for record, reading in _readings(request, devices, since, until):
            ts = iso(reading["ts"])
            for metric, value in sorted(reading["v"].items()):
                yield [record.id, record.kind, ts, metric, _csv_value(value)]

    return StreamingResponse(_csv_chunks(CSV_COLUMNS, rows()), media_type="text/csv; charset=utf-8",
                             headers=_licence_headers(request, terms, f"jisaku-{_day(since)}-{_day(until)}.csv"))


@router.get("/export.geojson", summary="Readings of public devices as GeoJSON, one Feature per reading",
            responses={200: {"content": {"application/geo+json": {}}},
                       400: {"description": "bad time or too long a range"},
                       404: {"description": "no such public device"}})
def export_geojson(request: Request, device: list[str] = Query([], description=DEVICE_HELP),
                   kind: list[str] = Query([], description=KIND_HELP),
                   start: str | None = Query(None, description=START_HELP),
                   end: str | None = Query(None, description=END_HELP)) -> StreamingResponse:
    since, until = time_range(start, end)
    devices = chosen_devices(request, device, kind)
    terms = town_licence(request)

    def body() -> Iterator[str]:
        # Foreign members (RFC 7946 section 6.1) before the features, so they stream first.
        head = {"type": "FeatureCollection", "license": terms.model_dump(), "start": iso(since), "end": iso(until)}
        yield json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"features":['
        chunk: list[str] = []
        first = True
        for record, reading in _readings(request, devices, since, until):
            values = reading["v"]
            if isinstance(values.get("lat"), (int, float)) and isinstance(values.get("lon"), (int, float)):
                geometry = {"type": "Point", "coordinates": [values["lon"], values["lat"]]}
            elif record.lat is not None and record.lon is not None:
                geometry = {"type": "Point", "coordinates": [record.lon, record.lat]}
            else:
                geometry = None
            feature = {"type": "Feature", "geometry": geometry, "properties": {
                "device_id": record.id, "kind": record.kind, "ts": iso(reading["ts"]), "seq": reading["seq"],
                "values": values}}
            chunk.append(("" if first else ",") + json.dumps(feature, ensure_ascii=False, separators=(",", ":")))
            first = False
            if len(chunk) >= ROWS_PER_CHUNK:
                yield "".join(chunk)
                chunk = []
        yield "".join(chunk) + "]}"

    return StreamingResponse(body(), media_type="application/geo+json",
                             headers=_licence_headers(request, terms, f"jisaku-{_day(since)}-{_day(until)}.geojson"))


def _csv_chunks(header: list[str], rows: Iterator[list]) -> Iterator[str]:
    """CSV text (RFC 4180) in pieces of ROWS_PER_CHUNK rows, so a big export never sits in memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow(row)
        if count % ROWS_PER_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%dT%H%MZ")


@router.get("/export-hourly.csv",
            summary="Hourly figures (n, min, max, mean) of public devices as CSV, for any range, however old",
            responses={200: {"content": {"text/csv": {}}}, 400: {"description": "bad time or too long a range"},
                       404: {"description": "no such public device"}})
def export_hourly_csv(request: Request, device: list[str] = Query([], description=DEVICE_HELP),
                      kind: list[str] = Query([], description=KIND_HELP),
                      start: str | None = Query(None, description=START_HELP),
                      end: str | None = Query(None, description=END_HELP)) -> StreamingResponse:
    """One row per device, hour and numeric metric, for every hour that starts in ``[start, end)``.

    Readings older than ``keep_raw_days`` exist only in this form; recent ones are summed up
    the same way, so a file can span both. At most :data:`MAX_HOURLY_RANGE_DAYS` days.
    """
    since, until = time_range(start, end, MAX_HOURLY_RANGE_DAYS)
    devices = chosen_devices(request, device, kind)
    terms = town_licence(request)

    def rows() -> Iterator[list]:
        for record, hour, metric, bucket in _hourly(request, devices, since, until):
            yield [record.id, record.kind, iso(hour), metric, bucket["n"],
                   _csv_value(bucket["min"]), _csv_value(bucket["max"]), _csv_value(bucket["avg"])]

    return StreamingResponse(_csv_chunks(HOURLY_CSV_COLUMNS, rows()), media_type="text/csv; charset=utf-8",
                             headers=_licence_headers(request, terms, f"jisaku-hourly-{_day(since)}-{_day(until)}.csv"))
