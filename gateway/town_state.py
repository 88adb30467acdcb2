"""Each town's switches that its operators turn, such as disaster mode.

One row per town and switch in ``town_state`` (migrations 3 and 6): its value as JSON, when
it was last turned and by whom. Read by the residents' pages (a banner in disaster mode) and
written only through :class:`jisaku.gateway.changes.Changes`, which records it in the audit
log. ``town=None`` means the first town (an upgraded database's switches are its).

Example::

    state = TownState(Database(Path("data/jisaku.db")))
    state.disaster_mode("hida")     # None, or {"since": 1764720000.0, "by": "tanaka"}
    state.disaster_mode()           # the first town's
"""

from __future__ import annotations

import json
import time
from typing import Any

from .db import Database, write
from .towns import Towns

DISASTER_MODE = "disaster_mode"


class TownState:
    def __init__(self, db: Database):
        self.db = db

    def _town(self, town: str | None) -> str:
        return town if town is not None else Towns(self.db).first()

    def get(self, name: str, town: str | None = None) -> dict[str, Any] | None:
        """``{"value", "updated", "actor"}`` of a town's switch, or None if it was never turned."""
        row = self.db.connection.execute("SELECT value, updated, actor FROM town_state WHERE town=? AND name=?",
                                         (self._town(town), name)).fetchone()
        return {"value": json.loads(row["value"]), "updated": row["updated"], "actor": row["actor"]} if row else None

    def set(self, name: str, value: Any, actor: str, town: str | None = None) -> None:
        with write(self.db.connection) as connection:
            connection.execute(
                "INSERT INTO town_state (town, name, value, updated, actor) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (town, name) DO UPDATE SET value=excluded.value, updated=excluded.updated,"
                " actor=excluded.actor", (self._town(town), name, json.dumps(value), time.time(), actor))

    def disaster_mode(self, town: str | None = None) -> dict[str, Any] | None:
        """``{"since", "by"}`` while the town is in disaster mode, else None."""
        state = self.get(DISASTER_MODE, town)
        if not state or not state["value"]:
            return None
        return {"since": state["updated"], "by": state["actor"]}
