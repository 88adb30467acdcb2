"""The dashboard: a FastAPI app serving the live map, the public API and every asset.

Example::

    app = create_app(Path("data/jisaku.db"))
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

from pathlib import Path

import xstatic.pkg.leaflet
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from jisaku.gateway.db import Database
from jisaku.gateway.influx import InfluxStore
from jisaku.gateway.registry import Registry
from jisaku.gateway.store import SQLiteStore

from . import api, osmand, pages

STATIC = Path(__file__).parent / "static"


def create_app(database_path: Path, phones: osmand.PhonePublisher | None = None,
               readings: InfluxStore | None = None) -> FastAPI:
    """The app on the SQLite file at ``database_path``.

    ``phones`` passes positions from phones (``/osmand``) on to the broker; without
    it, ``/osmand`` answers 503. Its caller starts and stops it. ``readings`` is
    where readings are kept when that is not the SQLite file (InfluxDB).
    """
    app = FastAPI(
        title="jisaku",
        summary="Live data from the town's own sensors: buses, garbage trucks, festival floats, snow depth.",
        version="1",
    )
    db = Database(database_path)
    app.state.store = SQLiteStore(db)
    app.state.registry = Registry(db)
    app.state.latest = api.LatestCache(app.state.store)
    app.state.readings = readings or app.state.store
    app.state.phones = phones
    osmand.hide_keys_in_access_log()
    app.include_router(api.router)
    app.include_router(osmand.router)
    app.include_router(pages.router)
    # Leaflet comes from the XStatic-Leaflet package on PyPI, so nothing loads from a CDN.
    app.mount("/static/leaflet", StaticFiles(directory=xstatic.pkg.leaflet.BASE_DIR), name="leaflet")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
