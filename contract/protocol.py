"""The jisaku wire contract, version 1: topics and payloads, in one place.

Devices, the gateway and the dashboard all import this module, so there is one
definition of what a valid message is. MicroPython firmware cannot import it;
it is held to the same rules by the shared test vectors in ``tests/vectors/``.

Topics are ``jisaku/{device_id}/{channel}``. A reading looks like::

    {"ts": 1732300000.25, "seq": 42, "v": {"depth_cm": 12.5}}

Example::

    from jisaku.contract import protocol
    payload = protocol.encode_reading(seq=1, values={"depth_cm": 12.5}, ts=1732300000.0)
    device_id, channel = protocol.parse_topic("jisaku/snow-1/data")
    readings = protocol.decode_readings(payload, received_at=1732300001.0)

Every rejection raises :class:`ProtocolError` with a short machine-readable
``reason`` (counted and shown to operators) and a sentence for humans.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
TOPIC_ROOT = "jisaku"

DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")

#: channels a device publishes on
DEVICE_CHANNELS = ("data", "event", "status", "config/ack", "cmd/ack")
#: channels the gateway publishes on, for one device to read
GATEWAY_CHANNELS = ("config", "cmd", "update")

# A Pi on LTE back-filling a day of 1 Hz readings sends them in batches; this keeps
# one message well below what a small broker or gateway should hold in memory.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_MESSAGE = 1000
MAX_TEXT_VALUE = 256

# Clocks: a device that has not synced yet reports 1970 or 2000; such a reading
# must carry "age" instead of "ts". 2020-01-01 is before any jisaku device existed.
EARLIEST_TS = 1577836800.0
# Allow for clock drift and slow links, but not a wrong year.
MAX_FUTURE_S = 300.0

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"


class ProtocolError(ValueError):
    """A message that breaks the contract.

    ``reason`` is a short code such as ``not_json`` or ``bad_seq``; ``str(err)``
    says what was wrong and what the sender should do.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement as the gateway stores it: ``ts`` is always filled in."""

    ts: float
    seq: int
    values: dict[str, Any]

    @property
    def position(self) -> tuple[float, float] | None:
        """``(lat, lon)`` when this reading is a position, else None."""
        if "lat" in self.values and "lon" in self.values:
            return self.values["lat"], self.values["lon"]
        return None


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    seq: int
    name: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """``online`` or ``offline``, with what the device said about itself."""

    state: str
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- topics


def topic(device_id: str, channel: str) -> str:
    """The topic a device or the gateway publishes on, e.g. ``jisaku/bus-1/data``."""
    if not DEVICE_ID.match(device_id):
        raise ProtocolError("bad_device_id", f"{device_id!r} is not a valid device id")
    return f"{TOPIC_ROOT}/{device_id}/{channel}"


def parse_topic(name: str) -> tuple[str, str]:
    """Split ``jisaku/{device_id}/{channel}`` into its parts, checking both."""
    parts = name.split("/", 2)
    if len(parts) != 3 or parts[0] != TOPIC_ROOT:
        raise ProtocolError("bad_topic", f"topic {name!r} is not jisaku/<device id>/<channel>")
    _, device_id, channel = parts
    if not DEVICE_ID.match(device_id):
        raise ProtocolError(
            "bad_device_id",
            f"device id {device_id!r} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit",
        )
    if channel not in DEVICE_CHANNELS and channel not in GATEWAY_CHANNELS:
        raise ProtocolError("unknown_channel", f"channel {channel!r} is not one of {', '.join(DEVICE_CHANNELS)}")
    return device_id, channel


# ---------------------------------------------------------------- encoding (device side)


def encode_reading(seq: int, values: dict[str, Any], ts: float | None = None, age: float | None = None) -> bytes:
    """One reading as the bytes a device publishes on ``data``.

    Give ``ts`` when the device's clock is synced; otherwise give ``age``, the
    seconds since the measurement, and the gateway stamps it on arrival.
    """
    return _dumps(reading_dict(seq, values, ts, age))


def encode_readings(readings: list[dict[str, Any]]) -> bytes:
    """Several readings (made by :func:`reading_dict`) in one back-fill message."""
    return _dumps(readings)


def reading_dict(seq: int, values: dict[str, Any], ts: float | None = None, age: float | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"seq": seq, "v": values}
    if ts is not None:
        message["ts"] = round(ts, 3)
    elif age is not None:
        message["age"] = round(age, 3)
    return message


def encode_event(seq: int, name: str, values: dict[str, Any] | None = None, ts: float | None = None) -> bytes:
    message: dict[str, Any] = {"seq": seq, "event": name}
    if ts is not None:
        message["ts"] = round(ts, 3)
    if values:
        message["v"] = values
    return _dumps(message)


def encode_status(state: str, info: dict[str, Any] | None = None) -> bytes:
    """``online``/``offline`` as a bare word, or a JSON object when there is more to say."""
    if state not in (STATUS_ONLINE, STATUS_OFFLINE):
        raise ValueError(f"status must be online or offline, not {state!r}")
    if info:
        return _dumps({"state": state, **info})
    return state.encode()


def _dumps(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


# ---------------------------------------------------------------- decoding (gateway side)


def decode_readings(payload: bytes, received_at: float) -> list[Reading]:
    """Check a ``data`` payload and return its readings with ``ts`` filled in.

    ``received_at`` (UTC epoch seconds) turns ``age`` into a timestamp and is
    the yardstick for timestamps in the future.
    """
    message = _loads(payload)
    items = message if isinstance(message, list) else [message]
    if not items:
        raise ProtocolError("bad_shape", "an empty array carries no readings")
    if len(items) > MAX_READINGS_PER_MESSAGE:
        raise ProtocolError(
            "too_many_readings",
            f"{len(items)} readings in one message; send at most {MAX_READINGS_PER_MESSAGE} per message",
        )
    return [_reading(item, received_at) for item in items]


def decode_event(payload: bytes, received_at: float) -> Event:
    message = _loads(payload)
    if not isinstance(message, dict):
        raise ProtocolError("bad_shape", "an event must be a JSON object")
    name = message.get("event")
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise ProtocolError("bad_event", "'event' must be a name like tray_left (a-z, 0-9, _)")
    values = message.get("v", {})
    if not isinstance(values, dict):
        raise ProtocolError("bad_values", "'v' must be a JSON object")
    return Event(
        ts=_timestamp(message, received_at),
        seq=_seq(message),
        name=name,
        values=_values(values, allow_empty=True),
    )


def decode_status(payload: bytes) -> Status:
    text = _text(payload).strip()
    if text in (STATUS_ONLINE, STATUS_OFFLINE):
        return Status(text)
    message = _loads(payload)
    if message in (STATUS_ONLINE, STATUS_OFFLINE):
        return Status(message)
    if not isinstance(message, dict):
        raise ProtocolError("bad_status", 'status must be "online", "offline" or a JSON object')
    info = dict(message)
    state = info.pop("state", STATUS_ONLINE)
    if state not in (STATUS_ONLINE, STATUS_OFFLINE):
        raise ProtocolError("bad_status", f"status state {state!r} is not online or offline")
    return Status(state, info)


def decode_object(payload: bytes) -> dict[str, Any]:
    """A JSON object payload (config, commands and their acks)."""
    message = _loads(payload)
    if not isinstance(message, dict):
        raise ProtocolError("bad_shape", "expected a JSON object")
    return message


def _text(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            "too_large", f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit; split it"
        )
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("not_utf8", "payload is not UTF-8 text") from None


def _reject_constant(name: str) -> Any:
    raise ProtocolError("non_finite", f"{name} is not a number JSON allows; send null-free finite values")


# One decoder for every message: json.loads with parse_constant builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(payload: bytes) -> Any:
    text = _text(payload)
    try:
        return _DECODER.decode(text)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as err:
        raise ProtocolError("not_json", f"payload is not JSON: {err}") from None


def _reading(item: Any, received_at: float) -> Reading:
    if not isinstance(item, dict):
        raise ProtocolError("bad_shape", "a reading must be a JSON object with seq and v")
    values = item.get("v")
    if not isinstance(values, dict):
        raise ProtocolError("bad_values", "a reading needs 'v', an object of metric name to value")
    values = _values(values, allow_empty=False)
    _check_position(values)
    return Reading(ts=_timestamp(item, received_at), seq=_seq(item), values=values)


def _seq(item: dict[str, Any]) -> int:
    seq = item.get("seq")
    if type(seq) is not int or seq < 0:
        raise ProtocolError("bad_seq", "'seq' must be a whole number >= 0 that grows with every message")
    return seq


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def taken_at(ts: float | None, age: float | None, received_at: float) -> float:
    """When something a device sends outside a reading (a picture) was taken: its ``ts``, or
    ``received_at - age``; ProtocolError on a time the device's clock cannot have given."""
    item = {"ts": ts} if ts is not None else {"age": age} if age is not None else {}
    return _timestamp(item, received_at)


def _timestamp(item: dict[str, Any], received_at: float) -> float:
    if "ts" in item:
        ts = item["ts"]
        if not _number(ts):
            raise ProtocolError("bad_ts", "'ts' must be UTC epoch seconds, a number")
    elif "age" in item:
        age = item["age"]
        if not _number(age) or age < 0:
            raise ProtocolError("bad_age", "'age' must be the seconds since the reading was taken, >= 0")
        ts = received_at - age
    else:
        ts = received_at
    if ts < EARLIEST_TS:
        raise ProtocolError(
            "ts_too_old", f"ts {ts} is before 2020: the device clock is not set; send 'age' instead of 'ts'"
        )
    if ts > received_at + MAX_FUTURE_S:
        raise ProtocolError(
            "ts_in_future", f"ts {ts} is {ts - received_at:.0f} s in the future: check the device clock (NTP)"
        )
    return float(ts)


def _values(values: dict[str, Any], allow_empty: bool) -> dict[str, Any]:
    if not values and not allow_empty:
        raise ProtocolError("bad_values", "'v' is empty: a reading needs at least one value")
    for name, value in values.items():
        if not METRIC_NAME.match(name):
            raise ProtocolError("bad_metric", f"metric name {name!r} must be like depth_cm (a-z, 0-9, _)")
        if isinstance(value, bool) or _number(value):
            continue
        if isinstance(value, str) and len(value) <= MAX_TEXT_VALUE:
            continue
        raise ProtocolError(
            "bad_value", f"value of {name!r} must be a finite number, true/false or a short text"
        )
    return values


def _check_position(values: dict[str, Any]) -> None:
    has_lat, has_lon = "lat" in values, "lon" in values
    if not (has_lat or has_lon):
        return
    if has_lat != has_lon:
        raise ProtocolError("bad_position", "a position needs both lat and lon")
    lat, lon = values["lat"], values["lon"]
    if not (_number(lat) and _number(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise ProtocolError("bad_position", "lat must be -90..90 and lon -180..180 (WGS-84 degrees)")
