"""Where readings, events, device status and quarantined messages are kept (SQLite).

The gateway hands over a :class:`Batch` of what arrived in the last few
milliseconds and it is written in one transaction; the dashboard reads the
``latest`` table, kept up to date here, instead of scanning history.

Example::

    store = SQLiteStore(Database(Path("data/jisaku.db")))
    store.write(Batch(readings=[("snow-1", Reading(ts, 1, {"depth_cm": 12.5}))]))
    store.readings("snow-1", since=ts - 3600)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jisaku.contract import kinds
from jisaku.contract.protocol import Event, Reading, Status

from .audit import AuditLog
from .commands import Answer, CommandBook, decode_outputs, save_outputs
from .updates import UPDATE_EVENT, record_progress, save_software
from .db import Database, write

# Enough of a bad payload to see what went wrong, not enough to fill a disk.
QUARANTINE_PAYLOAD_BYTES = 4096


@dataclass
class Quarantined:
    topic: str
    payload: bytes
    reason: str
    detail: str
    received: float


@dataclass
class ConfigAck:
    device_id: str
    rev: int
    ok: bool
    reason: str | None
    received: float


@dataclass
class Batch:
    readings: list[tuple[str, Reading]] = field(default_factory=list)
    events: list[tuple[str, Event]] = field(default_factory=list)
    statuses: list[tuple[str, Status, float]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    config_acks: list[ConfigAck] = field(default_factory=list)
    # Devices' answers to commands (cmd/ack): (device id, answer, received)
    command_acks: list[tuple[str, Answer, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.readings) + len(self.events) + len(self.statuses) + len(self.quarantined)
                + len(self.config_acks) + len(self.command_acks))


def _json(values: dict[str, Any]) -> str:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


# A device silent for this many of its reporting intervals (and at least a minute) is
# "stale". One registered without an interval (interval_s) is expected to report as
# often as its kind usually does.
STALE_AFTER_INTERVALS = 3
MIN_STALE_S = 60.0
OTHER_INTERVAL_S = 300.0  # a kind no kind folder describes (each folder says its own interval_s)


# How often a device reports: the interval_s it applied from the operators' settings (what it
# really runs with), else the one it was registered with. An operator who sets a gauge to
# report hourly must not see it turn "stale" after three minutes. (SQL over devices d and
# device_config c.)
RUNNING_INTERVAL = "COALESCE(json_extract(c.applied, '$.interval_s'), d.interval_s)"


def stale_after(kind: str, interval_s: float | None) -> float:
    """Seconds of silence after which a device of ``kind`` counts as stale.

    >>> stale_after("snow_gauge", None), stale_after("bus", 5)
    (1800.0, 60.0)
    """
    interval = interval_s or kinds.interval_s(kind, OTHER_INTERVAL_S)
    return max(STALE_AFTER_INTERVALS * interval, MIN_STALE_S)


class SQLiteStore:
    """``keep_readings=False`` when readings go to another store (InfluxDB): this one then
    keeps the latest values, status, events and quarantine only."""

    def __init__(self, db: Database, keep_readings: bool = True):
        self.db = db
        self.keep_readings = keep_readings

    # ------------------------------------------------------------ writing

    def write(self, batch: Batch) -> None:
        now = time.time()
        connection = self.db.connection
        # One transaction: all of the batch or none of it. The write lock is taken up front,
        # so that two gateways sharing the file wait for each other instead of failing half-way.
        with write(connection):
            rows = [(device_id, r.ts, r.seq, _json(r.values), now) for device_id, r in batch.readings]
            if self.keep_readings:
                # Re-sent readings share (device, ts, seq) with the stored ones: kept once.
                connection.executemany(
                    "INSERT OR IGNORE INTO readings (device_id, ts, seq, v, received) VALUES (?, ?, ?, ?, ?)", rows)
            connection.executemany(
                "INSERT OR IGNORE INTO events (device_id, ts, seq, event, v, received) VALUES (?, ?, ?, ?, ?, ?)",
                [(device_id, e.ts, e.seq, e.name, _json(e.values), now) for device_id, e in batch.events],
            )
            connection.executemany(
                "INSERT INTO latest (device_id, ts, v, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET"
                "  v = json_patch(latest.v, excluded.v), ts = excluded.ts, updated = excluded.updated"
                " WHERE excluded.ts >= latest.ts",
                self._latest_rows(connection, batch, now),
            )
            for device_id, status, received in batch.statuses:
                self._write_status(connection, device_id, status, received)
            self._heard_from(connection, {device_id for device_id, _ in batch.readings}
                             | {device_id for device_id, _ in batch.events}, now)
            connection.executemany(
                "INSERT INTO quarantine (received, topic, payload, reason, detail) VALUES (?, ?, ?, ?, ?)",
                [(q.received, q.topic, q.payload[:QUARANTINE_PAYLOAD_BYTES], q.reason, q.detail)
                 for q in batch.quarantined],
            )
            # Only the answer to the newest revision counts; an older one was overtaken.
            connection.executemany(
                "UPDATE device_config SET acked_rev=?, ok=?, reason=?, acked=?,"
                " applied = CASE WHEN ? THEN settings ELSE applied END"
                " WHERE device_id=? AND rev=?",
                [(a.rev, int(a.ok), a.reason, a.received, int(a.ok), a.device_id, a.rev) for a in batch.config_acks],
            )
            if batch.command_acks:
                CommandBook(self.db).record_answers(connection, batch.command_acks)
            updates = [(device_id, e) for device_id, e in batch.events if e.name == UPDATE_EVENT]
            if updates:
                record_progress(connection, AuditLog(self.db), updates)

    @staticmethod
    def _latest_rows(connection, batch: Batch, now: float) -> list[tuple[str, float, str, float]]:
        """One row per device: the batch's readings merged, oldest first.

        A back-filled reading older than the stored latest one must not overwrite a
        newer value, so those are left out (and the update's WHERE guards the rest).
        """
        by_device: dict[str, list[Reading]] = {}
        for device_id, reading in batch.readings:
            by_device.setdefault(device_id, []).append(reading)
        if not by_device:
            return []
        stored = dict(connection.execute(
            f"SELECT device_id, ts FROM latest WHERE device_id IN ({','.join('?' * len(by_device))})",
            list(by_device)).fetchall())
        rows = []
        for device_id, readings in by_device.items():
            newest_stored = stored.get(device_id, float("-inf"))
            merged: dict[str, Any] = {}
            newest = None
            for reading in sorted(readings, key=lambda r: r.ts):
                if reading.ts >= newest_stored:
                    merged.update(reading.values)
                    newest = reading.ts
            if newest is not None:
                rows.append((device_id, newest, _json(merged), now))
        return rows

    @staticmethod
    def _heard_from(connection, device_ids: set[str], now: float) -> None:
        """A device that sends readings is online, though it was stale or never said so (phones)."""
        if not device_ids:
            return
        known = dict(connection.execute(
            f"SELECT device_id, state FROM device_status WHERE device_id IN ({','.join('?' * len(device_ids))})",
            list(device_ids)).fetchall())
        for device_id in device_ids:
            if known.get(device_id, "stale") == "stale":
                connection.execute("INSERT INTO status_history (device_id, ts, state) VALUES (?, ?, 'online')",
                                   (device_id, now))
                connection.execute(
                    "INSERT INTO device_status (device_id, state, since) VALUES (?, 'online', ?)"
                    " ON CONFLICT (device_id) DO UPDATE SET state = 'online', since = excluded.since",
                    (device_id, now))

    def mark_stale(self, now: float | None = None) -> list[str]:
        """Mark online devices silent for longer than :func:`stale_after` as stale.

        A device that went offline cleanly (its last will) stays offline; "stale" is for
        one that still looks connected but says nothing: a hung sensor, a lost GPS, a
        phone in a drawer. Returns the devices marked.
        """
        now = time.time() if now is None else now
        rows = self.db.connection.execute(
            f"SELECT d.id, d.kind, {RUNNING_INTERVAL} AS interval_s, s.since, l.updated"
            " FROM devices d JOIN device_status s ON s.device_id = d.id"
            " LEFT JOIN latest l ON l.device_id = d.id"
            " LEFT JOIN device_config c ON c.device_id = d.id WHERE s.state = 'online'").fetchall()
        silent = [row["id"] for row in rows
                  if now - max(row["since"], row["updated"] or 0) > stale_after(row["kind"], row["interval_s"])]
        if silent:
            connection = self.db.connection
            with write(connection):
                for device_id in silent:
                    changed = connection.execute(
                        "UPDATE device_status SET state = 'stale', since = ? WHERE device_id = ? AND state = 'online'",
                        (now, device_id)).rowcount
                    if changed:
                        connection.execute("INSERT INTO status_history (device_id, ts, state) VALUES (?, ?, 'stale')",
                                            (device_id, now))
        return silent

    def status_history(self, device_id: str, since: float = 0) -> list[dict[str, Any]]:
        """A device's status changes (online, offline, stale) since ``since``, oldest first."""
        return [{"ts": row["ts"], "state": row["state"]} for row in self.db.connection.execute(
            "SELECT ts, state FROM status_history WHERE device_id = ? AND ts >= ? ORDER BY ts", (device_id, since))]

    @staticmethod
    def _write_status(connection, device_id: str, status: Status, received: float) -> None:
        # A device with outputs lists them in its online status; kept apart, because its
        # "offline" (the last will) carries no info and would wipe them from `info`.
        outputs = decode_outputs(status.info)
        if outputs:
            save_outputs(connection, device_id, outputs, received)
        save_software(connection, device_id, status.info, received)  # its version, for updates
        row = connection.execute("SELECT state, since FROM device_status WHERE device_id=?", (device_id,)).fetchone()
        if row is not None and received < row["since"]:
            # Overtaken (gateways sharing a subscription may store messages out of order):
            # it belongs in the history, but the current state is newer.
            if status.state != row["state"]:
                connection.execute("INSERT INTO status_history (device_id, ts, state) VALUES (?, ?, ?)",
                                   (device_id, received, status.state))
            return
        if row is None or row["state"] != status.state:
            connection.execute(
                "INSERT INTO status_history (device_id, ts, state) VALUES (?, ?, ?)",
                (device_id, received, status.state),
            )
            connection.execute(
                "INSERT OR REPLACE INTO device_status (device_id, state, since, info) VALUES (?, ?, ?, ?)",
                (device_id, status.state, received, _json(status.info)),
            )
        elif status.info:
            connection.execute(
                "UPDATE device_status SET info=? WHERE device_id=?", (_json(status.info), device_id)
            )

    # ------------------------------------------------------------ device settings

    def next_config(self, device_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Record a new revision of a device's settings and return it.

        ``changes`` are laid over the newest revision, or over what the device last applied
        if it refused the newest: a refused value does not come back in every later
        revision, and one not yet answered (the device is away) is not lost.
        """
        connection = self.db.connection
        with write(connection):
            row = connection.execute("SELECT rev, settings, applied, acked_rev, ok FROM device_config"
                                     " WHERE device_id=?", (device_id,)).fetchone()
            rev = (row["rev"] if row else 0) + 1
            if row is None:
                before = {}
            elif row["acked_rev"] == row["rev"] and not row["ok"]:
                before = json.loads(row["applied"])
            else:
                before = json.loads(row["settings"])
            settings = {**before, **changes}
            connection.execute(
                "INSERT INTO device_config (device_id, rev, settings, pushed) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET rev=excluded.rev, settings=excluded.settings,"
                " pushed=excluded.pushed",
                (device_id, rev, _json(settings), time.time()),
            )
        return {"rev": rev, **settings}

    def config_state(self, device_id: str) -> dict[str, Any] | None:
        """The newest settings of a device and whether it applied them: applied, refused or pending."""
        row = self.db.connection.execute("SELECT * FROM device_config WHERE device_id=?", (device_id,)).fetchone()
        if row is None:
            return None
        if row["acked_rev"] != row["rev"]:
            state = "pending"
        else:
            state = "applied" if row["ok"] else "refused"
        return {"rev": row["rev"], "settings": json.loads(row["settings"]), "state": state,
                "reason": row["reason"] if state == "refused" else None, "acked": row["acked"],
                # what the device is running with: the settings of the newest revision it applied
                "applied": json.loads(row["applied"])}

    # ------------------------------------------------------------ reading

    def latest(self, public_only: bool = True, town: str | None = None) -> list[dict[str, Any]]:
        """Every registered device with its newest values and its status: of one town, or of all (None).

        ``public_only``: only those residents may see (public, and not practice devices).
        """
        sql = (
            f"SELECT d.id, d.kind, d.name, d.name_ja, d.public, {RUNNING_INTERVAL} AS interval_s, d.lat, d.lon,"
            "       d.attributes, d.town, d.practice,"
            "       l.ts, l.v, l.picture, s.state, s.since, c.settings"
            " FROM devices d"
            " LEFT JOIN latest l ON l.device_id = d.id"
            " LEFT JOIN device_status s ON s.device_id = d.id"
            " LEFT JOIN device_config c ON c.device_id = d.id"
        )
        sql, params = sql + " WHERE 1=1", []
        if public_only:
            sql += " AND d.public = 1 AND d.practice = 0"  # registry.SHOWN_TO_RESIDENTS
        if town is not None:
            sql += " AND d.town = ?"
            params.append(town)
        rows = self.db.connection.execute(sql + " ORDER BY d.id", params).fetchall()
        return [
            {
                "id": row["id"], "kind": row["kind"], "name": row["name"], "name_ja": row["name_ja"],
                "public": bool(row["public"]),
                "interval_s": row["interval_s"], "lat": row["lat"], "lon": row["lon"],
                "ts": row["ts"], "values": json.loads(row["v"]) if row["v"] else {},
                "status": row["state"] or "unknown", "status_since": row["since"],
                "picture": json.loads(row["picture"]) if row["picture"] else None,
                # the operators' newest settings for it (what it was told, applied or not yet)
                "settings": json.loads(row["settings"]) if row["settings"] else None,
                "attributes": json.loads(row["attributes"]),
                "town": row["town"], "practice": bool(row["practice"]),
            }
            for row in rows
        ]

    def last_update(self) -> float:
        """When anything on the map last changed; cheap enough to poll every second."""
        row = self.db.connection.execute(
            "SELECT max(m) FROM (SELECT max(updated) AS m FROM latest UNION ALL SELECT max(since) FROM device_status"
            # new settings change the map too: a shelter opened or closed by the operators
            " UNION ALL SELECT max(pushed) FROM device_config)"
        ).fetchone()
        return row[0] or 0.0

    def readings(self, device_id: str, since: float | None = None, until: float | None = None,
                 limit: int = 1000) -> list[dict[str, Any]]:
        """Readings of one device between ``since`` and ``until``, newest last."""
        rows = self.db.connection.execute(
            "SELECT ts, seq, v FROM ("
            "  SELECT ts, seq, v FROM readings WHERE device_id = ? AND ts >= ? AND ts <= ?"
            "  ORDER BY ts DESC LIMIT ?"
            ") ORDER BY ts",
            (device_id, since if since is not None else 0.0, until if until is not None else 1e12, limit),
        ).fetchall()
        return [{"ts": row["ts"], "seq": row["seq"], "v": json.loads(row["v"])} for row in rows]

    # ------------------------------------------------------------ open data (dashboard/opendata.py, gtfs_rt.py)

    def readings_in_range(self, device_id: str, start: float, end: float,
                          page: int = 1000) -> Iterator[dict[str, Any]]:
        """Readings with ``start <= ts < end``, oldest first, fetched ``page`` rows at a time.

        For exports of any size: only one page is in memory at once. Same shape as
        :meth:`readings`; :class:`~jisaku.gateway.influx.InfluxStore` has the same method.
        """
        after_ts, after_seq = start, None
        while True:
            if after_seq is None:
                rows = self.db.connection.execute(
                    "SELECT ts, seq, v FROM readings WHERE device_id = ? AND ts >= ? AND ts < ?"
                    " ORDER BY ts, seq LIMIT ?", (device_id, start, end, page)).fetchall()
            else:  # keyset paging: after the last (ts, seq) of the previous page
                rows = self.db.connection.execute(
                    "SELECT ts, seq, v FROM readings WHERE device_id = ? AND ts < ?"
                    " AND (ts > ? OR (ts = ? AND seq > ?)) ORDER BY ts, seq LIMIT ?",
                    (device_id, end, after_ts, after_ts, after_seq, page)).fetchall()
            for row in rows:
                yield {"ts": row["ts"], "seq": row["seq"], "v": json.loads(row["v"])}
            if len(rows) < page:
                return
            after_ts, after_seq = rows[-1]["ts"], rows[-1]["seq"]

    def latest_updated(self) -> dict[str, float]:
        """When each device's latest values last changed, by this machine's clock (for Last-Modified)."""
        return {row[0]: row[1] for row in self.db.connection.execute("SELECT device_id, updated FROM latest")}

    def events(self, device_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.connection.execute(
            "SELECT ts, seq, event, v FROM events WHERE device_id = ? ORDER BY ts DESC LIMIT ?",
            (device_id, limit),
        ).fetchall()
        return [{"ts": r["ts"], "seq": r["seq"], "event": r["event"], "v": json.loads(r["v"])} for r in rows]

    def reading_count(self, device_id: str | None = None) -> int:
        if device_id is None:
            return self.db.connection.execute("SELECT count(*) FROM readings").fetchone()[0]
        return self.db.connection.execute(
            "SELECT count(*) FROM readings WHERE device_id=?", (device_id,)
        ).fetchone()[0]

    def quarantine_counts(self) -> dict[str, int]:
        rows = self.db.connection.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason")
        return {reason: count for reason, count in rows}

    def quarantined(self, limit: int = 100, reason: str | None = None) -> list[dict[str, Any]]:
        """The newest quarantined messages first, of one reason or all."""
        rows = self.db.connection.execute(
            "SELECT received, topic, payload, reason, detail FROM quarantine"
            " WHERE ? IS NULL OR reason = ? ORDER BY id DESC LIMIT ?", (reason, reason, limit)
        ).fetchall()
        return [dict(row) for row in rows]

    # ------------------------------------------------------------ down-sampled history (residents' charts)
    # Aggregated in SQL so that a week of 1 Hz readings (600,000 rows) leaves SQLite as ~300 rows.

    def history(self, device_id: str, metric: str, start: float, end: float,
                bucket_s: float) -> list[dict[str, Any]]:
        """Numeric ``metric`` of one device in buckets of ``bucket_s`` seconds from ``start`` to ``end``.

        Each bucket: ``{"ts": bucket start, "min", "avg", "max", "n"}``; empty buckets are left out.
        Readings the retention policy has folded (gateway/retention.py) count from their hourly
        figures: an hour falls in the bucket where it starts, so buckets of a whole number of
        hours are exact and shorter ones show the hour in its first bucket.
        Example: ``store.history("snow-1", "depth_cm", now - 86400, now, 300)``.
        """
        params = {"start": start, "end": end, "bucket": bucket_s, "device": device_id,
                  "path": _json_path(metric), "metric": metric}
        # MATERIALIZED: each reading's JSON is parsed once, not once per aggregate (twice as fast).
        # total() rather than sum(): a float even for whole numbers, so the mean is not cut to an integer.
        raw = ("WITH r AS MATERIALIZED ("
               "  SELECT ts, json_extract(v, :path) AS x FROM readings"
               "  WHERE device_id = :device AND ts >= :start AND ts < :end)"
               " SELECT CAST((ts - :start) / :bucket AS INTEGER) AS b, min(x) AS lo, total(x) AS s, max(x) AS hi,"
               " count(x) AS n FROM r WHERE typeof(x) IN ('integer', 'real') GROUP BY b")
        # A reading is either raw or folded, never both (the fold deletes in the same
        # transaction), so adding the two up counts each reading once.
        sql = (raw + " UNION ALL"
               " SELECT CAST((hour - :start) / :bucket AS INTEGER), min, sum, max, n FROM readings_hourly"
               " WHERE device_id = :device AND metric = :metric AND hour >= :start AND hour < :end")
        sql = f"SELECT b, min(lo), total(s) / sum(n), max(hi), sum(n) FROM ({sql}) GROUP BY b ORDER BY b"
        rows = self.db.connection.execute(sql, params).fetchall()
        return [{"ts": start + b * bucket_s, "min": lo, "avg": mean, "max": hi, "n": n}
                for b, lo, mean, hi, n in rows]

    def track(self, device_id: str, start: float, end: float, bucket_s: float) -> list[dict[str, Any]]:
        """Where a vehicle was: its last position in each bucket, ``{"ts", "lat", "lon"}``, oldest first."""
        # SQLite takes the bare columns lat and lon from the row with max(ts) in each bucket.
        rows = self.db.connection.execute(
            "SELECT max(ts), lat, lon FROM ("
            "  SELECT ts, json_extract(v, '$.lat') AS lat, json_extract(v, '$.lon') AS lon FROM readings"
            "  WHERE device_id = :device AND ts >= :start AND ts < :end"
            ") WHERE typeof(lat) IN ('integer', 'real') AND typeof(lon) IN ('integer', 'real')"
            " GROUP BY CAST((ts - :start) / :bucket AS INTEGER) ORDER BY 1",
            {"start": start, "end": end, "bucket": bucket_s, "device": device_id},
        ).fetchall()
        return [{"ts": ts, "lat": lat, "lon": lon} for ts, lat, lon in rows]


def _json_path(metric: str) -> str:
    """The JSON path of a metric in a reading's ``v``, quoted so that dots in a name are taken literally."""
    if '"' in metric or "\\" in metric:
        raise ValueError(f"metric name {metric!r} may not hold a quote or a backslash")
    return '$."' + metric + '"'
