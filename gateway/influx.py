"""Readings in InfluxDB through the v1-compatible HTTP API, with a disk spool for outages.

One code path for InfluxDB 1.8, 2.x and 3.x: ``POST /write`` with line protocol and
``GET /query`` with InfluxQL, which all three serve. Only the Python standard library is
used (no influxdb-client, which speaks the v2 API).

Example::

    store = InfluxStore("influxdb://my-token@influx.city.lan:8086/jisaku", Path("data/influx-spool"))
    store.write_readings([("snow-1", Reading(ts, 1, {"depth_cm": 12.5}))])
    store.readings("snow-1", since=ts - 3600)

The URL, authentication with each InfluxDB version, the schema, de-duplication
and the spool are specified in docs/gateway.md ("InfluxDB").
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from jisaku.device.protocol import Reading

log = logging.getLogger(__name__)

MEASUREMENT = "reading"
DEVICE_TAG = "device"
SEQ_FIELD = "seq"
# Field keys the schema or InfluxDB claims; a metric with one of these names is stored as "v.<name>".
RESERVED = {"time", SEQ_FIELD, DEVICE_TAG}
RENAMED_PREFIX = "v."
# Points per HTTP request: InfluxDB suggests 5000-10000 lines per write.
MAX_LINES_PER_WRITE = 5000
SCHEMES = {"influxdb": "http", "influxdb+http": "http", "http": "http",
           "influxdbs": "https", "influxdb+https": "https", "https": "https"}
DEFAULT_PORT = 8086
_SPOOL_NAME = re.compile(r"(\d{12})-(\d+)\.lp\Z")


class InfluxError(RuntimeError):
    """InfluxDB answered with an error, or a query could not reach it."""


class InfluxWriteError(InfluxError, ValueError):
    """InfluxDB refused the data itself (HTTP 400): sending it again would not help."""


class _Unavailable(Exception):
    """The write did not land but might later: spool it."""


# ---------------------------------------------------------------- line protocol


def _escape_key(text: str) -> str:
    """Tag keys, tag values and field keys: comma, equals sign and space are escaped."""
    # InfluxDB 1.x does not unescape "\\" in keys, so a key ending in a backslash (or one before
    # a comma, equals sign or space) cannot be written at all; protocol names never have one.
    if "\n" in text or "\r" in text or "\\" in text:
        raise ValueError(f"{text!r}: InfluxDB line protocol cannot carry a line break or backslash"
                         " in a device id or metric name")
    return text.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _escape_measurement(text: str) -> str:
    return text.replace(",", r"\,").replace(" ", r"\ ")


def _field_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            return None
        return repr(number)  # always a float, e.g. 12.0 (see the module docstring)
    if value is None:
        return None
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_key(metric: str) -> str:
    if metric in RESERVED or metric.startswith(RENAMED_PREFIX):
        return RENAMED_PREFIX + metric
    return metric


def _metric_name(field: str) -> str:
    return field[len(RENAMED_PREFIX):] if field.startswith(RENAMED_PREFIX) else field


def ts_to_ns(ts: float) -> int:
    """Epoch seconds to integer nanoseconds, exact for the decimal digits ``ts`` prints with."""
    return int((Decimal(repr(float(ts))) * 1_000_000_000).to_integral_value())


def ns_to_ts(ns: int) -> float:
    return float(Decimal(int(ns)) / 1_000_000_000)


def line(device_id: str, reading: Reading) -> str:
    """One reading as one line of line protocol (no trailing newline)."""
    fields = [f"{SEQ_FIELD}={int(reading.seq)}i"]
    for metric in sorted(reading.values):
        value = _field_value(reading.values[metric])
        if value is not None:
            fields.append(f"{_escape_key(_field_key(metric))}={value}")
    return (f"{_escape_measurement(MEASUREMENT)},{DEVICE_TAG}={_escape_key(device_id)} "
            f"{','.join(fields)} {ts_to_ns(reading.ts)}")


# ---------------------------------------------------------------- InfluxQL


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------- the store


class InfluxStore:
    """Readings in InfluxDB (1.8, 2.x, 3.x) through the v1 HTTP API: POST /write (line protocol), GET /query (InfluxQL)."""

    def __init__(self, url: str, spool_dir: Path, timeout_s: float = 5.0, retry_s: float = 5.0):
        parts = urllib.parse.urlsplit(url)
        scheme = SCHEMES.get(parts.scheme.lower())
        if scheme is None:
            raise ValueError(f"{url!r}: an InfluxDB URL starts with influxdb:// or influxdbs:// (TLS)")
        path = parts.path.strip("/")
        if not path:
            raise ValueError(f"{url!r}: name the database, e.g. influxdb://host:8086/jisaku")
        prefix, _, database = path.rpartition("/")
        self.database = urllib.parse.unquote(database)
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        port = parts.port or (DEFAULT_PORT if parts.scheme.lower().startswith("influxdb") else None)
        self.base_url = f"{scheme}://{host}{f':{port}' if port else ''}{'/' + prefix if prefix else ''}"
        self.retention_policy = urllib.parse.parse_qs(parts.query).get("rp", [None])[0]
        self._headers: dict[str, str] = {}
        if parts.username is not None and parts.password is not None:
            credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password)}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        elif parts.username:
            self._headers["Authorization"] = "Token " + urllib.parse.unquote(parts.username)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._database_checked = False
        self._retry_at = 0.0
        self._spool: list[tuple[Path, int]] = []
        self._counter = 0
        self._load_spool()

    def __repr__(self) -> str:  # never show the credentials
        return f"InfluxStore({self.base_url}/{self.database}, spooled={self.spooled()})"

    # ------------------------------------------------------------ HTTP

    def _request(self, method: str, endpoint: str, params: dict[str, str],
                 body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request; returns (status, body). Raises _Unavailable when nothing answered."""
        url = f"{self.base_url}/{endpoint}?{urllib.parse.urlencode(params)}"
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise _Unavailable(f"InfluxDB at {self.base_url} cannot be reached: {reason}") from err

    @staticmethod
    def _error_text(body: bytes) -> str:
        try:
            return str(json.loads(body).get("error", body.decode(errors="replace")))
        except (ValueError, AttributeError):
            return body.decode(errors="replace").strip()

    def _ensure_database(self) -> None:
        """CREATE DATABASE once per process (InfluxDB 1.x; 2.x/3.x refuse it, which is fine)."""
        if self._database_checked:
            return
        status, body = self._request("POST", "query", {"q": f"CREATE DATABASE {_ident(self.database)}"})
        if status >= 500:
            raise _Unavailable(f"InfluxDB answered {status}: {self._error_text(body)}")
        if status // 100 != 2 or b'"error"' in body:
            log.info("InfluxDB did not create database %r (%s %s); it must exist already"
                     " (InfluxDB 2.x/3.x: bucket + DBRP mapping, or a 3.x database)",
                     self.database, status, self._error_text(body))
        self._database_checked = True

    def _write_body(self, body: bytes) -> None:
        """POST one body of line protocol. Raises _Unavailable to spool, InfluxWriteError for bad data."""
        self._ensure_database()
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        status, answer = self._request("POST", "write", params, body)
        if status // 100 == 2:
            return
        text = self._error_text(answer)
        if status == 400:
            raise InfluxWriteError(f"InfluxDB refused the line protocol (HTTP 400): {text}")
        if status == 404:
            self._database_checked = False  # dropped since? try CREATE DATABASE next time
        raise _Unavailable(f"InfluxDB answered HTTP {status}: {text}")

    def _send_lines(self, lines: list[str]) -> None:
        for start in range(0, len(lines), MAX_LINES_PER_WRITE):
            self._write_body(("\n".join(lines[start:start + MAX_LINES_PER_WRITE]) + "\n").encode())

    # ------------------------------------------------------------ spool

    def _load_spool(self) -> None:
        for path in self.spool_dir.glob("*.tmp"):  # a crash while spooling: never renamed, never acknowledged
            path.unlink(missing_ok=True)
        found = []
        for path in self.spool_dir.iterdir():
            match = _SPOOL_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path, int(match.group(2))))
            elif path.name.endswith(".rejected"):
                number = path.name.split("-", 1)[0]
                if number.isdigit():
                    self._counter = max(self._counter, int(number))
        found.sort()
        self._spool = [(path, count) for _, path, count in found]
        if found:
            self._counter = max(self._counter, found[-1][0])
            log.info("%d readings wait in the InfluxDB spool %s", self.spooled(), self.spool_dir)

    def _spool_lines(self, lines: list[str]) -> None:
        self._counter += 1
        path = self.spool_dir / f"{self._counter:012d}-{len(lines)}.lp"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(("\n".join(lines) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            fd = os.open(self.spool_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
        self._spool.append((path, len(lines)))

    def _flush(self) -> tuple[int, bool]:
        """Send spooled files oldest first; returns (readings written, spool now empty)."""
        written = 0
        while self._spool:
            path, count = self._spool[0]
            try:
                self._write_body(path.read_bytes())
            except _Unavailable as err:
                self._retry_at = time.monotonic() + self.retry_s
                log.warning("%s; %d readings stay spooled in %s", err, self.spooled(), self.spool_dir)
                return written, False
            except InfluxWriteError as err:
                path.rename(path.with_name(path.name + ".rejected"))
                log.error("spooled file %s set aside as .rejected: %s", path, err)
                self._spool.pop(0)
                continue
            path.unlink(missing_ok=True)
            self._spool.pop(0)
            written += count
        return written, True

    # ------------------------------------------------------------ public API

    def write_readings(self, readings: list[tuple[str, Reading]]) -> None:
        """Store readings; when InfluxDB is unreachable they are spooled and sent later, in order.

        Raises :class:`InfluxWriteError` only when InfluxDB refuses the data itself (HTTP 400,
        e.g. a field type conflict; InfluxDB 1.x keeps the other points of such a batch), and
        ValueError, before sending anything, for a device id or metric name with a line break
        or a backslash (which the wire protocol never lets through).
        """
        lines = [line(device_id, reading) for device_id, reading in readings]
        with self._lock:
            if self._spool and time.monotonic() >= self._retry_at:
                self._flush()
            if not lines:
                return
            if self._spool or time.monotonic() < self._retry_at:
                self._spool_lines(lines)  # behind what waits already, to keep the order
                return
            try:
                self._send_lines(lines)
            except _Unavailable as err:
                self._retry_at = time.monotonic() + self.retry_s
                self._spool_lines(lines)
                log.warning("%s; %d readings spooled in %s", err, self.spooled(), self.spool_dir)

    def flush_spool(self) -> int:
        """Try to send what is spooled, oldest first; returns how many readings were written."""
        with self._lock:
            written, _ = self._flush()
            if not self._spool:
                self._retry_at = 0.0
            return written

    def spooled(self) -> int:
        """How many readings wait in the spool."""
        with self._lock:
            return sum(count for _, count in self._spool)

    def _query(self, q: str) -> list[dict[str, Any]]:
        params = {"db": self.database, "q": q, "epoch": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        try:
            status, body = self._request("GET", "query", params)
        except _Unavailable as err:
            raise InfluxError(str(err)) from err
        if status // 100 != 2:
            raise InfluxError(f"InfluxDB answered HTTP {status} to a query: {self._error_text(body)}")
        result = json.loads(body).get("results", [{}])[0]
        if "error" in result:
            if "database not found" in result["error"]:
                return []
            raise InfluxError(f"InfluxDB refused the query {q!r}: {result['error']}")
        return result.get("series", [])

    def readings(self, device_id: str, since: float | None = None, until: float | None = None,
                 limit: int = 1000) -> list[dict]:
        """Readings of one device between ``since`` and ``until``, newest last (the newest ``limit``)."""
        where = [f"{_ident(DEVICE_TAG)} = {_string(device_id)}"]
        if since is not None:
            where.append(f"time >= {ts_to_ns(since)}")
        if until is not None:
            where.append(f"time <= {ts_to_ns(until)}")
        q = (f"SELECT * FROM {_ident(MEASUREMENT)} WHERE {' AND '.join(where)}"
             f" ORDER BY time DESC LIMIT {int(limit)}")
        out = []
        for series in self._query(q):
            columns = series["columns"]
            for row in series.get("values", []):
                point = dict(zip(columns, row))
                values = {_metric_name(k): v for k, v in point.items()
                          if k not in ("time", SEQ_FIELD, DEVICE_TAG) and v is not None}
                out.append({"ts": ns_to_ts(point["time"]), "seq": point.get(SEQ_FIELD), "v": values})
        out.sort(key=lambda r: r["ts"])
        return out

    # ------------------------------------------------------------ open data (dashboard/opendata.py)

    def readings_in_range(self, device_id: str, start: float, end: float,
                          page: int = 1000) -> Iterator[dict]:
        """Readings with ``start <= ts < end``, oldest first, fetched ``page`` points per query.

        For exports of any size; the same as ``SQLiteStore.readings_in_range``. InfluxDB keeps
        one point per (device, time), so paging on the time alone loses nothing.
        """
        after = f"time >= {ts_to_ns(start)}"
        while True:
            q = (f"SELECT * FROM {_ident(MEASUREMENT)} WHERE {_ident(DEVICE_TAG)} = {_string(device_id)}"
                 f" AND {after} AND time < {ts_to_ns(end)} ORDER BY time ASC LIMIT {int(page)}")
            points = []
            for series in self._query(q):
                columns = series["columns"]
                points.extend(dict(zip(columns, row)) for row in series.get("values", []))
            for point in points:
                values = {_metric_name(k): v for k, v in point.items()
                          if k not in ("time", SEQ_FIELD, DEVICE_TAG) and v is not None}
                yield {"ts": ns_to_ts(point["time"]), "seq": point.get(SEQ_FIELD), "v": values}
            if len(points) < page:
                return
            after = f"time > {int(points[-1]['time'])}"

    def reading_count(self, device_id: str | None = None) -> int:
        q = f"SELECT count({_ident(SEQ_FIELD)}) FROM {_ident(MEASUREMENT)}"
        if device_id is not None:
            q += f" WHERE {_ident(DEVICE_TAG)} = {_string(device_id)}"
        total = 0
        for series in self._query(q):
            for row in series.get("values", []):
                total += int(row[1] or 0)
        return total

    # ------------------------------------------------------------ down-sampled history (residents' charts)
    # InfluxDB aggregates with GROUP BY time(): only ~300 rows cross the network for a week.

    def history(self, device_id: str, metric: str, start: float, end: float,
                bucket_s: float) -> list[dict[str, Any]]:
        """Numeric ``metric`` in buckets of ``bucket_s`` seconds: ``{"ts", "min", "avg", "max", "n"}`` each.

        Buckets line up on multiples of ``bucket_s`` since the epoch (InfluxDB's rule), so pass
        a ``start`` that is one too; empty buckets are left out, as in :meth:`SQLiteStore.history`.
        """
        field = _ident(_field_key(metric))
        q = (f"SELECT min({field}), mean({field}), max({field}), count({field}) FROM {_ident(MEASUREMENT)}"
             f" WHERE {_ident(DEVICE_TAG)} = {_string(device_id)}"
             f" AND time >= {ts_to_ns(start)} AND time < {ts_to_ns(end)}"
             f" GROUP BY time({int(bucket_s)}s) fill(none)")
        out = []
        for series in self._query(q):
            for time_ns, lo, mean, hi, n in series.get("values", []):
                if n:
                    out.append({"ts": ns_to_ts(time_ns), "min": lo, "avg": mean, "max": hi, "n": n})
        return out

    def track(self, device_id: str, start: float, end: float, bucket_s: float) -> list[dict[str, Any]]:
        """Where a vehicle was: its last position in each bucket, ``{"ts", "lat", "lon"}``, oldest first."""
        q = (f"SELECT last(\"lat\"), last(\"lon\") FROM {_ident(MEASUREMENT)}"
             f" WHERE {_ident(DEVICE_TAG)} = {_string(device_id)}"
             f" AND time >= {ts_to_ns(start)} AND time < {ts_to_ns(end)}"
             f" GROUP BY time({int(bucket_s)}s) fill(none)")
        out = []
        for series in self._query(q):
            for time_ns, lat, lon in series.get("values", []):
                if isinstance(lat, (int, float)) and isinstance(lon, (int, float)):
                    out.append({"ts": ns_to_ts(time_ns), "lat": lat, "lon": lon})
        return out

    def close(self) -> None:
        """Nothing stays open between requests; the spool is already on disk."""
        with self._lock:
            self._retry_at = 0.0
