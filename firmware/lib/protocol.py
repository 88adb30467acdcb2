"""The jisaku wire contract v1, for MicroPython boards.

The same rules as jisaku.contract.protocol on the Raspberry Pi, written small:
the shared test vectors in tests/vectors/ hold both to them. A message the
gateway would refuse is refused here first, with the same reason code, so a
mistake shows on the board's console instead of in the gateway's quarantine.

Example::

    import protocol
    protocol.topic("snow-3", "data")                       # "jisaku/snow-3/data"
    protocol.encode_reading(7, {"depth_cm": 12.5}, age=3)  # b'{"seq":7,"v":{"depth_cm":12.5},"age":3}'
"""

import json

ONLINE = "online"
OFFLINE = "offline"
# Before 2020 the clock is not set (a board starts at 1970 or 2000): send "age" instead.
EARLIEST_TS = 1577836800
MAX_TEXT = 256
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"


class ProtocolError(ValueError):
    """A message the gateway would refuse; ``reason`` is the gateway's code for it."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def _name_ok(name, first, rest, longest):
    if not isinstance(name, str) or not 0 < len(name) <= longest or name[0] not in first:
        return False
    for char in name:
        if char not in rest:
            return False
    return True


def device_id_ok(device_id):
    """1-64 of a-z 0-9 . _ - starting with a letter or digit, e.g. snow-3."""
    return _name_ok(device_id, _LOWER + _DIGITS, _LOWER + _DIGITS + "._-", 64)


def metric_ok(name):
    """Like depth_cm: a-z first, then a-z 0-9 _."""
    return _name_ok(name, _LOWER, _LOWER + _DIGITS + "_", 64)


def topic(device_id, channel):
    if not device_id_ok(device_id):
        raise ProtocolError("bad_device_id", "device id %r: use 1-64 of a-z 0-9 . _ -" % (device_id,))
    return "jisaku/" + device_id + "/" + channel


def _number(value):
    # bool is a kind of int: true/false are allowed as values but never as numbers.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value == value and value not in (float("inf"), float("-inf"))


def check_values(values, allow_empty=False):
    """Raise ProtocolError unless ``values`` is a dict of metric name to a short value."""
    if not isinstance(values, dict) or (not values and not allow_empty):
        raise ProtocolError("bad_values", "'v' must be a non-empty dict of metric name to value")
    for name, value in values.items():
        if not metric_ok(name):
            raise ProtocolError("bad_metric", "metric name %r must be like depth_cm" % (name,))
        if isinstance(value, float) and not _number(value):
            raise ProtocolError("non_finite", "%s is %r: send finite numbers only" % (name, value))
        if not (isinstance(value, bool) or _number(value) or (isinstance(value, str) and len(value) <= MAX_TEXT)):
            raise ProtocolError("bad_value", "%s must be a number, true/false or a short text" % name)
    if "lat" in values or "lon" in values:
        lat, lon = values.get("lat"), values.get("lon")
        if not (_number(lat) and _number(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise ProtocolError("bad_position", "a position needs lat -90..90 and lon -180..180")


def _check_seq(seq):
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ProtocolError("bad_seq", "seq must be a whole number >= 0")


def _check_time(ts, age):
    if ts is not None:
        if isinstance(ts, float) and not _number(ts):
            raise ProtocolError("non_finite", "ts must be a finite number")
        if not _number(ts):
            raise ProtocolError("bad_ts", "ts must be UTC epoch seconds")
        if ts < EARLIEST_TS:
            raise ProtocolError("ts_too_old", "ts %r is before 2020: the clock is not set, send age" % (ts,))
    elif age is not None and (not _number(age) or age < 0):
        raise ProtocolError("bad_age", "age must be seconds >= 0")


def reading(seq, values, ts=None, age=None):
    """One reading as a dict, checked. ``ts`` (Unix seconds) wins over ``age``."""
    _check_seq(seq)
    check_values(values)
    _check_time(ts, age)
    message = {"seq": seq, "v": values}
    if ts is not None:
        message["ts"] = ts
    elif age is not None:
        message["age"] = age
    return message


def dumps(message):
    return json.dumps(message, separators=(",", ":")).encode()


def encode_reading(seq, values, ts=None, age=None):
    return dumps(reading(seq, values, ts, age))


def encode_readings(readings):
    """Several reading dicts (from reading()) as one back-fill message."""
    if not readings:
        raise ProtocolError("bad_shape", "an empty array carries no readings")
    return dumps(readings)


def event(seq, name, values=None, ts=None):
    _check_seq(seq)
    if not metric_ok(name):
        raise ProtocolError("bad_event", "event %r must be a name like tray_left" % (name,))
    if values is not None:
        check_values(values, allow_empty=True)
    _check_time(ts, None)
    message = {"seq": seq, "event": name}
    if ts is not None:
        message["ts"] = ts
    if values:
        message["v"] = values
    return message


def encode_event(seq, name, values=None, ts=None):
    return dumps(event(seq, name, values, ts))


def encode_status(state, info=None):
    """``online``/``offline`` as a bare word, or a JSON object with what the board says about itself."""
    if state not in (ONLINE, OFFLINE):
        raise ProtocolError("bad_status", "status must be online or offline")
    if not info:
        return state.encode()
    message = {"state": state}
    message.update(info)
    return dumps(message)


def decode_object(payload):
    """A config or command message: a JSON object, or ProtocolError."""
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeError):
        raise ProtocolError("not_json", "payload is not JSON")
    if not isinstance(message, dict):
        raise ProtocolError("bad_shape", "expected a JSON object")
    return message
