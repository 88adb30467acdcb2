"""How long readings are kept in SQLite: raw for a while, then as hourly figures.

A snow gauge reading once a minute makes half a million rows a year; a bus at one
a second, thirty million. On a Raspberry Pi's SD card that is too much to keep
raw for ever, and nobody needs last winter's depth minute by minute. So, by
default, readings older than 90 days are folded into one row per device, metric
and hour (count, minimum, maximum, sum: the mean is sum / count) and the raw
rows are deleted. Set it in ``jisaku.toml``::

    keep_raw_days = 90       # 0: keep raw readings for ever
    keep_hourly_days = 0     # 0: keep the hourly figures for ever
    keep_pictures_days = 7   # cameras' pictures: all of them this long (0: for ever),
    keep_hourly_pictures_days = 90   # then one an hour this long (0: for ever)

Positions are folded too (an hour's mean position says little, but it is small).
Events, device status and the latest state are not touched. InfluxDB has its own
retention policies; set them there (docs/gateway.md).

Who reads the hourly figures: ``SQLiteStore.history`` (the residents' charts) adds them to
the raw readings still kept, and ``/api/v1/export-hourly.csv`` (dashboard/opendata.py)
publishes them as open data.

Example::

    policy = RetentionPolicy(keep_raw_days=90)
    folded, deleted = policy.apply(db)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .db import Database, write

HOUR = 3600
DAY = 86400

# Folding a day at a time keeps each write transaction short: the gateway goes on
# storing between them.
FOLD = """
INSERT INTO readings_hourly (device_id, hour, metric, n, min, max, sum)
SELECT r.device_id, CAST(r.ts / 3600 AS INTEGER) * 3600, j.key, count(*), min(j.value), max(j.value), sum(j.value)
FROM readings AS r, json_each(r.v) AS j
WHERE r.ts >= ? AND r.ts < ? AND j.type IN ('integer', 'real')
GROUP BY 1, 2, 3
ON CONFLICT (device_id, hour, metric) DO UPDATE SET
    n = n + excluded.n, min = min(min, excluded.min), max = max(max, excluded.max), sum = sum + excluded.sum
"""


@dataclass(frozen=True)
class RetentionPolicy:
    keep_raw_days: float = 90
    keep_hourly_days: float = 0
    keep_pictures_days: float = 7
    keep_hourly_pictures_days: float = 90

    def thin_pictures(self, db: Database, now: float | None = None) -> int:
        """Cameras' pictures: how many were deleted."""
        from .pictures import PictureStore

        return PictureStore(db).thin(
            self.keep_pictures_days, self.keep_hourly_pictures_days, now)

    def apply(self, db: Database, now: float | None = None) -> tuple[int, int]:
        """Fold and delete what is due; returns (hourly rows written, raw readings deleted)."""
        now = time.time() if now is None else now
        connection = db.connection
        folded = deleted = 0
        if self.keep_raw_days > 0:
            # Whole hours only, so an hour is never folded in two halves.
            cutoff = (now - self.keep_raw_days * DAY) // HOUR * HOUR
            oldest = connection.execute("SELECT min(ts) FROM readings").fetchone()[0]
            start = oldest // HOUR * HOUR if oldest is not None else cutoff
            while start < cutoff:
                end = min(start + DAY, cutoff)
                with write(connection):
                    folded += connection.execute(FOLD, (start, end)).rowcount
                    deleted += connection.execute("DELETE FROM readings WHERE ts >= ? AND ts < ?",
                                                  (start, end)).rowcount
                start = end
            with write(connection):
                connection.execute("DELETE FROM quarantine WHERE received < ?", (cutoff,))
        if self.keep_hourly_days > 0:
            with write(connection):
                connection.execute("DELETE FROM readings_hourly WHERE hour < ?", (now - self.keep_hourly_days * DAY,))
        return folded, deleted

    @staticmethod
    def hourly(db: Database, device_id: str, since: float, until: float) -> list[dict]:
        """The hourly figures of one device, oldest first."""
        return [
            {"hour": row["hour"], "metric": row["metric"], "n": row["n"], "min": row["min"],
             "max": row["max"], "mean": row["sum"] / row["n"]}
            for row in db.connection.execute(
                "SELECT * FROM readings_hourly WHERE device_id = ? AND hour >= ? AND hour < ?"
                " ORDER BY hour, metric", (device_id, since, until))
        ]


def hourly_metrics(db: Database, device_id: str) -> set[str]:
    """The metrics of a device that have stored hourly figures (none before the policy first ran)."""
    return {row[0] for row in db.connection.execute(
        "SELECT DISTINCT metric FROM readings_hourly WHERE device_id = ?", (device_id,))}
