"""Town-wide switches that operators turn, such as disaster mode.

One row per switch in ``town_state`` (migration 3): its value as JSON, when it was last
turned and by whom. Read by the residents' pages (a banner in disaster mode) and written
only through :class:`jisaku.gateway.changes.Changes`, which records it in the audit log.

Example::

    town = TownState(Database(Path("data/jisaku.db")))
    town.disaster_mode()           # None, or {"since": 1764720000.0, "by": "tanaka"}
"""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Database, write

DISASTER_MODE = "disaster_mode"


class TownState:
    def __init__(self, db: Database):
        self.db = db

    def get(self, name: str) -> dict[str, Any] | None:
        """``{"value", "updated", "actor"}`` of a switch, or None if it was never turned."""
        row = self.db.connection.execute("SELECT value, updated, actor FROM town_state WHERE name=?",
                                         (name,)).fetchone()
        return {"value": json.loads(row["value"]), "updated": row["updated"], "actor": row["actor"]} if row else None

    def set(self, name: str, value: Any, actor: str) -> None:
        with write(self.db.connection) as connection:
            connection.execute(
                "INSERT INTO town_state (name, value, updated, actor) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value=excluded.value, updated=excluded.updated,"
                " actor=excluded.actor", (name, json.dumps(value), time.time(), actor))

    def disaster_mode(self) -> dict[str, Any] | None:
        """``{"since", "by"}`` while the town is in disaster mode, else None."""
        state = self.get(DISASTER_MODE)
        if not state or not state["value"]:
            return None
        return {"since": state["updated"], "by": state["actor"]}
