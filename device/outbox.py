"""The device's outbox: every reading and event waits here, on disk, until the broker has it.

A bus drives through a tunnel, the office router reboots, the LTE dongle loses
signal for an afternoon: readings keep being taken and wait in this small
SQLite file. They survive a reboot of the device and are sent in order, in
batches, when the link is back. When the outbox is full the oldest go first,
and the loss is counted (and reported in the device's status).

The outbox also hands out ``seq``, so numbering carries on across reboots.

Example::

    outbox = Outbox(Path("data/devices/snow-1/outbox.db"), max_bytes=5_000_000)
    outbox.put("data", {"ts": 1732300000.0, "v": {"depth_cm": 12.5}})   # seq is added
    for batch in outbox.batches():                                       # oldest first
        ...publish, then outbox.remove(batch)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY,     -- the order things happened in
    channel TEXT NOT NULL,           -- data or event
    message TEXT NOT NULL            -- the JSON object, seq included
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# A batch is one MQTT message; the gateway takes at most 1,000 readings in one.
BATCH_READINGS = 200


@dataclass
class Batch:
    """What one MQTT message will carry: several readings, or one event."""

    channel: str
    ids: list[int]
    messages: list[dict[str, Any]]

    @property
    def payload(self) -> Any:
        return self.messages if self.channel == "data" and len(self.messages) > 1 else self.messages[0]


class Outbox:
    def __init__(self, path: Path, max_bytes: int = 5_000_000):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a reading acknowledged by put() is on the SD card even if the power goes.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._bytes = self._db.execute("SELECT coalesce(sum(length(message)), 0) FROM outbox").fetchone()[0]

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return row[0] if row else 0

    def _bump(self, name: str, by: int = 1) -> int:
        value = self._counter(name) + by
        self._db.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, value))
        return value

    @property
    def dropped(self) -> int:
        """How many messages were thrown away because the outbox was full, ever."""
        with self._lock:
            return self._counter("dropped")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def put(self, channel: str, message: dict[str, Any]) -> int:
        """Keep a message (without ``seq``) for sending; returns the ``seq`` it was given."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._bump("seq")
            text = json.dumps({**message, "seq": seq}, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
            self._db.execute("INSERT INTO outbox (channel, message) VALUES (?, ?)", (channel, text))
            self._bytes += len(text)
            if self._bytes > self.max_bytes:
                self._drop_oldest()
            return seq

    def _drop_oldest(self) -> None:
        # Free a tenth of the space at once, so a full outbox is not trimmed on every put.
        target = self.max_bytes * 0.9
        dropped = 0
        for row_id, size in self._db.execute("SELECT id, length(message) FROM outbox ORDER BY id").fetchall():
            if self._bytes <= target:
                break
            self._db.execute("DELETE FROM outbox WHERE id=?", (row_id,))
            self._bytes -= size
            dropped += 1
        self._bump("dropped", dropped)

    def next_batch(self) -> Batch | None:
        """The oldest messages that go together in one MQTT message, or None when empty."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, channel, message FROM outbox ORDER BY id LIMIT ?", (BATCH_READINGS,)
            ).fetchall()
        if not rows:
            return None
        channel = rows[0][1]
        if channel != "data":
            rows = rows[:1]
        batch = Batch(channel, [], [])
        for row_id, row_channel, message in rows:
            if row_channel != channel:
                break  # keep the order: a later event waits for the readings before it
            batch.ids.append(row_id)
            batch.messages.append(json.loads(message))
        return batch

    def remove(self, batch: Batch) -> None:
        """The broker has the batch: forget it."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for row_id in batch.ids:
                row = self._db.execute("DELETE FROM outbox WHERE id=? RETURNING length(message)", (row_id,)).fetchone()
                if row:
                    self._bytes -= row[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
