"""Phones as GPS trackers: Traccar Client's OsmAnd protocol at ``/osmand``.

A phone running Traccar Client is a registered device like any other; its server URL
carries the secret (``https://jisaku.example.jp/osmand?key=SECRET``). The classic OsmAnd
form (query string or form body) and Traccar Client 9's JSON both become one reading of the
wire contract, published on ``jisaku/<id>/data`` with the dashboard's service account.
Which fields are read, the units, the secret (key or HTTP basic) and why ``seq`` is the fix
time in milliseconds: docs/phones.md ("Set the identifier and the server URL", "What is
stored").

Example::

    phones = PhonePublisher("mqtt://127.0.0.1:1883", "_dashboard", secret)
    phones.start()
    app = create_app(Path("data/jisaku.db"), phones=phones)
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from jisaku.contract import protocol
from jisaku.gateway.registry import Registry

from .broker_connection import BrokerConnection, BrokerUnavailable
from .device_auth import basic_credentials

log = logging.getLogger(__name__)

router = APIRouter(tags=["phones"])

KNOTS_TO_KMH = 1.852
MS_TO_KMH = 3.6
# An epoch number above this is milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
MILLISECONDS_ABOVE = 1e11
# Form bodies are a few hundred bytes; JSON a little more. Anything far larger is not a phone.
MAX_BODY_BYTES = 64 * 1024
PUBLISH_TIMEOUT_S = 5.0

NOT_REACHABLE = "the broker is not reachable, try again"
NO_PUBLISHER = ("phone positions are not accepted here: this dashboard has no broker account"
                " to publish them with (start it with the _dashboard service account)")


class PhonePublisher(BrokerConnection):
    """Publishes phones' readings for them, as the service account ``username``.

    One MQTT connection for the whole dashboard; :meth:`publish` blocks until the
    broker acknowledges (PUBACK) so that the phone is told 200 only for a reading
    the broker has taken.
    """

    def __init__(self, broker_url: str, username: str, secret: str, timeout_s: float = PUBLISH_TIMEOUT_S):
        super().__init__(broker_url, username, secret, "phone positions (phones get 503 meanwhile)")
        self.timeout_s = timeout_s

    def publish(self, device_id: str, payload: bytes, channel: str = "data") -> None:
        """Publish ``payload`` on ``jisaku/<device_id>/<channel>`` (QoS 1) and wait for the broker's PUBACK.

        Raises :class:`BrokerUnavailable` when that does not happen within ``timeout_s``.
        """
        self.start()
        deadline = time.monotonic() + self.timeout_s
        # Requests wait in the server's thread pool, shared with the residents' API: wait for a
        # connection only while the first one is being made, and answer 503 at once after that.
        first_connect_left = self._started_at + self.timeout_s - time.monotonic()
        if not self.connected.wait(max(0.0, first_connect_left)):
            raise BrokerUnavailable(f"not connected to {self.broker}")
        info = self._client.publish(protocol.topic(device_id, channel), payload, qos=1)
        try:
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            published = info.is_published()
        except (RuntimeError, ValueError) as err:
            raise BrokerUnavailable(str(err)) from None
        if not published:
            # paho may still deliver it later; a re-sent fix has the same (ts, seq), so the
            # gateway keeps it once either way.
            raise BrokerUnavailable(f"no PUBACK from {self.broker} within {self.timeout_s} s")


# ---------------------------------------------------------------- parsing


class PhoneRequestError(Exception):
    """A request to answer with ``status`` and ``{"detail": message}``; nothing is published."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass
class Fix:
    """One position of a phone, in the wire contract's units."""

    ts: float
    values: dict[str, Any]


def _bad(message: str) -> PhoneRequestError:
    return PhoneRequestError(400, message)


def _shown(value: Any) -> str:
    """A caller's value quoted back in an error message, cut short."""
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:40] + "…" if len(text) > 40 else text)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _bad(f"{name} must be a number, not {_shown(value)}")
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _bad(f"{name} {_shown(value)} is not a number") from None
    if not isinstance(number, int | float) or not math.isfinite(number):
        raise _bad(f"{name} must be a finite number, not {_shown(value)}")
    return float(number)


def _optional(name: str, value: Any) -> float | None:
    """An optional measurement; absent, empty or negative (phones send -1 for "unknown") is None."""
    if value is None or value == "":
        return None
    number = _number(name, value)
    return number if number >= 0 else None


# A "+09:00" offset written unencoded in a URL arrives as " 09:00".
_LOST_PLUS = re.compile(r"(T\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)$")


def parse_timestamp(value: Any) -> float:
    """UTC epoch seconds from epoch seconds, epoch milliseconds or ISO 8601 (no zone = UTC)."""
    if value is None or value == "":
        raise _bad("timestamp is missing: send the time of the fix (epoch seconds, milliseconds or ISO 8601)")
    if isinstance(value, str):
        text = value.strip()
        try:
            number: Any = float(text)
        except ValueError:
            number = None
        if number is None:
            try:
                moment = datetime.fromisoformat(_LOST_PLUS.sub(r"\1+\2", text))
            except ValueError:
                raise _bad(f"timestamp {_shown(value)} is not epoch seconds, milliseconds or ISO 8601") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp()
    else:
        number = value
    number = _number("timestamp", number)
    return number / 1000 if number > MILLISECONDS_ABOVE else number


def _position(lat: Any, lon: Any) -> dict[str, float]:
    if lat is None or lat == "":
        raise _bad("lat is missing: send lat and lon (or location=lat,lon) in WGS-84 degrees")
    if lon is None or lon == "":
        raise _bad("lon is missing: send lat and lon (or location=lat,lon) in WGS-84 degrees")
    values = {"lat": _number("lat", lat), "lon": _number("lon", lon)}
    if values["lat"] == 0 and values["lon"] == 0:
        raise _bad("lat 0, lon 0 is not a position: the phone has no GPS fix yet")
    return values


def _add(values: dict[str, Any], name: str, number: float | None, digits: int = 1) -> None:
    if number is not None:
        values[name] = round(number, digits)


def fix_from_params(params: dict[str, str]) -> Fix:
    """The classic OsmAnd parameters (query string or form) as a fix."""
    lat, lon = params.get("lat"), params.get("lon")
    if (lat is None or lon is None) and params.get("location"):
        parts = params["location"].split(",")
        if len(parts) != 2:
            raise _bad(f"location {_shown(params['location'])} should be lat,lon")
        lat, lon = parts
    values = _position(lat, lon)
    speed_kn = _optional("speed", params.get("speed"))
    _add(values, "speed_kmh", None if speed_kn is None else speed_kn * KNOTS_TO_KMH, 2)
    _add(values, "heading", _optional("bearing", params.get("bearing", params.get("heading"))))
    altitude = params.get("altitude")
    _add(values, "alt_m", None if altitude in (None, "") else _number("altitude", altitude))
    _add(values, "acc_m", _optional("accuracy", params.get("accuracy")))
    _add(values, "battery_pct", _optional("batt", params.get("batt")))
    return Fix(parse_timestamp(params.get("timestamp")), values)


def fix_from_json(location: Any) -> Fix:
    """One ``location`` object of Traccar Client 9 as a fix (speed in m/s, battery level 0..1)."""
    if not isinstance(location, dict):
        raise _bad("'location' must be an object with timestamp and coords")
    coords = location.get("coords")
    if not isinstance(coords, dict):
        raise _bad("'location.coords' is missing: it must hold latitude and longitude")
    values = _position(coords.get("latitude"), coords.get("longitude"))
    speed_ms = _optional("coords.speed", coords.get("speed"))
    _add(values, "speed_kmh", None if speed_ms is None else speed_ms * MS_TO_KMH, 2)
    _add(values, "heading", _optional("coords.heading", coords.get("heading")))
    altitude = coords.get("altitude")
    _add(values, "alt_m", None if altitude is None else _number("coords.altitude", altitude))
    _add(values, "acc_m", _optional("coords.accuracy", coords.get("accuracy")))
    battery = location.get("battery")
    if isinstance(battery, dict):
        level = _optional("battery.level", battery.get("level"))
        _add(values, "battery_pct", None if level is None else min(level, 1.0) * 100)
    return Fix(parse_timestamp(location.get("timestamp")), values)


def encode_fixes(fixes: list[Fix], received_at: float) -> bytes:
    """The ``data`` payload for these fixes, checked against the wire contract (400 if it breaks it)."""
    readings = []
    for fix in fixes:
        ts = round(fix.ts, 3)
        # No counter on a phone: the fix time in milliseconds grows with every new fix and is
        # the same for a re-sent one, so the gateway's (device, ts, seq) key drops duplicates.
        readings.append(protocol.reading_dict(int(round(ts * 1000)), fix.values, ts=ts))
    payload = (protocol.encode_reading(readings[0]["seq"], readings[0]["v"], ts=readings[0]["ts"])
               if len(readings) == 1 else protocol.encode_readings(readings))
    try:
        protocol.decode_readings(payload, received_at=received_at)
    except protocol.ProtocolError as err:
        raise _bad(str(err)) from None
    return payload


# ---------------------------------------------------------------- authentication


def check_phone(registry: Registry, device_id: str | None, key: str | None, authorization: str | None) -> str:
    """The registered device the request speaks for, if its secret is right; else 400/404/401."""
    if not device_id:
        raise _bad("id is missing: set the device identifier in Traccar Client to the phone's device id")
    if not protocol.DEVICE_ID.match(device_id) or registry.get(device_id) is None:
        raise PhoneRequestError(
            404, f"no device {_shown(device_id)} is registered: register the phone with"
                 " `jisaku devices add <id> --kind bus` and set that id as Traccar Client's device identifier",
        )
    secret = key
    if not secret:
        basic = basic_credentials(authorization)
        if basic is not None and basic[0] == device_id:
            secret = basic[1]
    challenge = {"WWW-Authenticate": 'Basic realm="jisaku"'}
    if not secret:
        raise PhoneRequestError(
            401, f"no secret for {device_id!r}: end the server URL in Traccar Client with"
                 " /osmand?key=<the secret jisaku devices add printed>", challenge,
        )
    if not registry.check_credentials(device_id, secret):
        raise PhoneRequestError(
            401, f"wrong secret for {device_id!r}: check the key in Traccar Client's server URL"
                 " (an operator can issue a new one)", challenge,
        )
    return device_id


# ---------------------------------------------------------------- the endpoint


_PARAMETERS = [
    ("key", "the phone's secret (from `jisaku devices add`); put it in Traccar Client's server URL"),
    ("id", "device id of the phone, as registered (also `deviceid`)"),
    ("lat", "latitude, WGS-84 degrees"),
    ("lon", "longitude, WGS-84 degrees"),
    ("location", "`lat,lon` instead of lat and lon"),
    ("timestamp", "time of the fix: epoch seconds, epoch milliseconds or ISO 8601"),
    ("speed", "speed in knots (stored as speed_kmh)"),
    ("bearing", "heading in degrees from north (also `heading`)"),
    ("altitude", "altitude in metres (stored as alt_m)"),
    ("accuracy", "accuracy in metres (stored as acc_m)"),
    ("batt", "battery level in percent (stored as battery_pct)"),
]

_QUERY = [
    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
    for name, text in _PARAMETERS
]

_BODY = {
    "required": False,
    "description": "the same parameters as a form, or Traccar Client 9's JSON"
                   " ({\"device_id\", \"location\": {\"timestamp\", \"coords\": {...}, \"battery\": {...}}})",
    "content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        "application/json": {"schema": {"type": "object"}},
    },
}

_ERRORS = {
    200: {"description": "stored (empty body)", "content": {"text/plain": {}}},
    400: {"description": "a missing or invalid position or time"},
    401: {"description": "no secret, or the wrong one"},
    404: {"description": "no device with this id is registered"},
    503: {"description": "the broker is not reachable, or phones are not enabled"},
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise _bad("the form body is not UTF-8 application/x-www-form-urlencoded") from None


def _decode(query: dict[str, str], content_type: str,
            body: bytes) -> tuple[str | None, str | None, Callable[[], list[Fix]]]:
    """Who the request says it is from, its key, and how to read its fixes (once the sender is known)."""
    params = dict(query)
    text = body.strip()
    if "json" in content_type or text.startswith(b"{"):
        try:
            document = json.loads(text)
        except ValueError as err:
            raise _bad(f"the body is not JSON: {err}") from None
        if not isinstance(document, dict):
            raise _bad("the JSON body must be an object with device_id and location")
        device_id = document.get("device_id", params.get("id", params.get("deviceid")))
        if isinstance(device_id, int) and not isinstance(device_id, bool):
            device_id = str(device_id)
        if device_id is not None and not isinstance(device_id, str):
            raise _bad("device_id must be text")
        return device_id, params.get("key"), lambda: _json_fixes(document.get("location"))
    if text:
        for name, value in _form(text).items():
            params.setdefault(name, value)
    return params.get("id", params.get("deviceid")), params.get("key"), lambda: [fix_from_params(params)]


def _json_fixes(location: Any) -> list[Fix]:
    # Traccar Client sends one location per request; the SDK it is built on can batch them.
    locations = location if isinstance(location, list) else [location]
    if location is None or not locations:
        raise _bad("'location' is missing: it must hold timestamp and coords")
    if len(locations) > protocol.MAX_READINGS_PER_MESSAGE:
        raise _bad(f"at most {protocol.MAX_READINGS_PER_MESSAGE} locations per request")
    return [fix_from_json(item) for item in locations]


def handle(registry: Registry, phones: PhonePublisher, query: dict[str, str], content_type: str,
           body: bytes, authorization: str | None) -> None:
    """Check one request and publish its reading; raises :class:`PhoneRequestError` instead.

    Who is asking is checked before what they sent, so a stranger learns nothing but 404/401.
    """
    device_id, key, read_fixes = _decode(query, content_type, body)
    check_phone(registry, device_id, key, authorization)
    payload = encode_fixes(read_fixes(), received_at=time.time())
    try:
        phones.publish(device_id, payload)
    except BrokerUnavailable as err:
        log.warning("could not publish a position of %s: %s", device_id, err)
        raise PhoneRequestError(503, NOT_REACHABLE) from None


@router.get("/osmand", operation_id="osmand_get", response_class=Response, responses=_ERRORS,
            openapi_extra={"parameters": _QUERY}, summary="A phone's position in the query string (OsmAnd)")
@router.post("/osmand", operation_id="osmand_post", response_class=Response, responses=_ERRORS,
             openapi_extra={"parameters": _QUERY, "requestBody": _BODY},
             summary="A phone's position from Traccar Client: query string, form or JSON")
async def osmand(request: Request) -> Response:
    phones: PhonePublisher | None = getattr(request.app.state, "phones", None)
    if phones is None:
        return _error(503, NO_PUBLISHER)
    body = b""
    if request.method == "POST":
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"the body is over {MAX_BODY_BYTES} bytes; send one position per request")
    query = dict(request.query_params)
    try:
        await run_in_threadpool(handle, request.app.state.registry, phones, query,
                                request.headers.get("content-type", "").lower(), body,
                                request.headers.get("authorization"))
    except PhoneRequestError as err:
        return _error(err.status, str(err), err.headers)
    # Traccar Client looks only at the status; an empty 200 is what the Traccar server sends too.
    return Response(status_code=200)


# ---------------------------------------------------------------- keep secrets out of access logs


class HideUrlKeys(logging.Filter):
    """Replaces ``key=...`` in logged URLs: uvicorn's access log prints every query string."""

    PATTERN = re.compile(r"([?&]key=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1***", arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        elif isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1***", record.msg)
        return True


def hide_keys_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideUrlKeys) for f in access.filters):
        access.addFilter(HideUrlKeys())
