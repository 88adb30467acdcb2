"""The practice space: learners' devices and rules, and promoting a device to a town device.

A practice device (``devices.practice``) goes through the whole pipeline: it is stored,
charted for operators, shown on the practice map (``/operator/practice``) and its rules
are judged. It never reaches residents (registry.SHOWN_TO_RESIDENTS), and its alerts go
only to the rule owner's own target (notify_routes.py).

Promotion makes it a town device in one audited step (``device.promote``). With
``keep_history`` its readings stay and the residents' map shows them at once; without,
what it recorded while practising (readings, events, pictures, hourly figures, its
latest row, its status history) is deleted in the same transaction, so the town's open
data starts clean. Its practice rules stay practice rules.

Example::

    practice = Practice(Database(Path("data/jisaku.db")))
    practice.promote("trainer", "snow-9", keep_history=False)   # {"readings": 120, "events": 2, ...}
    practice.set_target("sato", LearnerTarget(webhook={"url": "https://hooks.example.jp/abc"}))
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .audit import AuditLog
from .changes import NotFound, OperationError
from .db import Database, write
from .notify_routes import LearnerTarget, learner_target
from .pictures import Picture, PictureStore
from .registry import Registry

log = logging.getLogger(__name__)

# What a device recorded, table by table (each has a device_id column); all go on promotion
# without keep_history. The device's registration, settings and alerts stay.
HISTORY_TABLES = ("readings", "events", "readings_hourly", "latest", "status_history", "alert_tracks")


class Practice:
    def __init__(self, db: Database, pictures: PictureStore | None = None):
        self.db = db
        self.registry = Registry(db)
        self.audit = AuditLog(db)
        self.pictures = pictures or PictureStore(db)

    def promote(self, actor: str, device_id: str, keep_history: bool) -> dict[str, int]:
        """Make a practice device a town device; returns how many rows of each kind were deleted."""
        connection = self.db.connection
        deleted: dict[str, int] = {}
        doomed: list[Picture] = []
        with write(connection):
            device = self.registry.get(device_id)
            if device is None:
                raise NotFound(f"no device {device_id!r}")
            if not device.practice:
                raise OperationError(f"{device_id} is not a practice device: it is a town device already")
            if keep_history:
                # The residents' map renders again when something on it changed: this did.
                connection.execute("UPDATE latest SET updated=? WHERE device_id=?", (time.time(), device_id))
            else:
                doomed = [Picture(**dict(row)) for row in
                          connection.execute("SELECT * FROM pictures WHERE device_id=?", (device_id,))]
                deleted["pictures"] = connection.execute("DELETE FROM pictures WHERE device_id=?",
                                                         (device_id,)).rowcount
                for table in HISTORY_TABLES:
                    deleted[table] = connection.execute(f"DELETE FROM {table} WHERE device_id=?",
                                                        (device_id,)).rowcount
            self.registry.set_practice(device_id, False)
            self.audit.record(actor, "device.promote", device_id, {"practice": True},
                              {"practice": False, "keep_history": keep_history, "deleted": deleted},
                              town=device.town)
        # The rows first: a crash leaves unlisted files, never a listed picture without its file.
        for picture in doomed:
            for path in (self.pictures.original_file(picture), self.pictures.public_file(picture),
                         self.pictures.thumb_file(picture)):
                path.unlink(missing_ok=True)
        log.info("%s promoted %s (%s)", actor, device_id, "history kept" if keep_history else f"deleted {deleted}")
        return deleted

    # ------------------------------------------------------------ a learner's own target

    def target(self, user: str) -> LearnerTarget | None:
        return learner_target(self.db, user)

    def set_target(self, actor: str, user: str, target: LearnerTarget | None) -> None:
        """Set (None: remove) where ``user``'s practice alerts go; audited without the URL's token."""
        with write(self.db.connection) as connection:
            row = connection.execute("SELECT town FROM users WHERE name=?", (user,)).fetchone()
            if row is None:
                raise NotFound(f"no user {user!r}")
            before = learner_target(self.db, user)
            connection.execute("UPDATE users SET notify=? WHERE name=?",
                               (None if target is None else target.model_dump_json(exclude_none=True), user))
            self.audit.record(actor, "user.notify", user, _shown(before), _shown(target), town=row["town"])


def _shown(target: LearnerTarget | None) -> dict[str, Any] | None:
    if target is None:
        return None
    return {"kind": "webhook" if target.webhook else "email", "to": target.described()}
