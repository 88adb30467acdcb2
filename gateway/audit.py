"""The audit log: who changed what, when, and what it was before and after.

Every change an operator makes (a device added, a threshold changed, a secret
rotated, a user created) is recorded here, from the web pages and from the
command line alike. Secrets are never recorded: pass what changed, not the secret.

Example::

    audit = AuditLog(Database(Path("data/jisaku.db")))
    audit.record("tanaka", "device.update", "snow-1",
                 before={"public": True}, after={"public": False})
    audit.entries(limit=20)     # newest first
"""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

from .db import Database, time_range
from .towns import TOWN_OF_OBJECT

def cli_actor() -> str:
    """Who is changing things from the command line: the Unix user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


# Passed as ``town`` to say "work it out from what was changed" (the default).
DERIVED = "\0derived"


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    def record(self, actor: str, action: str, target: str,
               before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
               town: str | None = DERIVED) -> None:
        """One entry; ``town``: the town of what was changed (None: the deployment's, e.g. a town added).

        Left out, it is worked out here, in this one place, from what was changed (see
        :meth:`town_of`), so no caller can forget it and a town's operators see their entries.
        """
        if town == DERIVED:
            town = self.town_of(action, target, before, after)
        self.db.connection.execute(
            "INSERT INTO audit_log (ts, actor, action, target, before, after, town) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), actor, action, target,
             None if before is None else json.dumps(before, ensure_ascii=False, sort_keys=True),
             None if after is None else json.dumps(after, ensure_ascii=False, sort_keys=True), town),
        )

    def town_of(self, action: str, target: str, before: dict[str, Any] | None,
                after: dict[str, Any] | None) -> str | None:
        """The town of what an entry is about, or None (the deployment's: a bundle, a joint account).

        A ``town`` in ``after`` or ``before`` says it (a device or rule as it was, so a removed
        one still has its town); otherwise the thing is looked up by the action's first word.

            town_of("device.update", "snow-1", …)     # devices.town of snow-1
            town_of("rule.delete", "7", {"town": "kita", …}, None)   # "kita"
        """
        for described in (after, before):
            if isinstance(described, dict) and isinstance(described.get("town"), str):
                return described["town"]
        kind = action.split(".", 1)[0]
        key: Any = target
        if kind == "update":  # a device's step in a rollout, or the rollout itself
            kind = "device"
            if isinstance(after, dict) and isinstance(after.get("rollout"), int):
                kind, key = "rollout", after["rollout"]
        sql = TOWN_OF_OBJECT.get(kind)
        if sql is None:
            return None
        row = self.db.connection.execute(sql, (key,)).fetchone()
        return row[0] if row else None

    def entries(self, limit: int = 100, since: float | None = None, until: float | None = None,
                target: str | None = None, town: str | None = None) -> list[dict[str, Any]]:
        """Newest first; of one town's things only when ``town`` is given."""
        within, params = time_range(since, until)
        sql = "SELECT * FROM audit_log WHERE 1=1" + within
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        if town is not None:
            sql += " AND town = ?"
            params.append(town)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [
            {"id": row["id"], "ts": row["ts"], "actor": row["actor"], "action": row["action"],
             "target": row["target"], "town": row["town"],
             "before": None if row["before"] is None else json.loads(row["before"]),
             "after": None if row["after"] is None else json.loads(row["after"])}
            for row in self.db.connection.execute(sql, params)
        ]
