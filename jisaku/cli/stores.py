"""Opening the stores the settings name: SQLite always, InfluxDB for readings when asked.

Example::

    registry, store, influx = open_stores(settings.load())
"""

from __future__ import annotations

from jisaku.gateway.db import Database
from jisaku.gateway.influx import InfluxStore
from jisaku.gateway.registry import Registry
from jisaku.gateway.store import SQLiteStore

from jisaku.contract.settings import Settings


def open_stores(settings: Settings) -> tuple[Registry, SQLiteStore, InfluxStore | None]:
    """The registry and latest state (SQLite), and the readings' InfluxDB if ``store`` names one."""
    db = Database(settings.sqlite_path)
    influx = InfluxStore(settings.influx_url, settings.data_dir / "influx-spool") if settings.influx_url else None
    return Registry(db), SQLiteStore(db, keep_readings=influx is None), influx
