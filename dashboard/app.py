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

from jisaku.contract import settings as jisaku_settings
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.bundle_store import BundleStore
from jisaku.gateway.db import Database
from jisaku.gateway.influx import InfluxStore
from jisaku.gateway.pictures import PictureStore
from jisaku.gateway.registry import Registry
from jisaku.gateway.store import SQLiteStore

from . import (api, bundles, counter_pages, device_posts, gtfs_rt, history, opendata, operator, osmand, pages, pictures,
               shelter_pages, shelters, staff_pages)
from .tiles import tile_source
from .towns import TownBook, TownPaths
from .vendor import mount_vendor_files

STATIC = Path(__file__).parent / "static"


def create_app(database_path: Path, phones: osmand.PhonePublisher | None = None,
               readings: InfluxStore | None = None, tiles: str | None = None,
               tiles_attribution: str = "", config_publisher: "operator.ConfigPublisher | None" = None,
               alerts=None) -> FastAPI:
    """The app on the SQLite file at ``database_path``.

    ``phones`` passes positions from phones (``/osmand``) on to the broker; without
    it, ``/osmand`` answers 503. Its caller starts and stops it. ``readings`` is
    where readings are kept when that is not the SQLite file (InfluxDB). ``tiles`` is
    the base map (see dashboard/tiles.py); None: the ``tiles`` setting of jisaku.toml.
    """
    app = FastAPI(
        title="jisaku",
        summary="Live data from the town's own sensors: buses, garbage trucks, festival floats, snow depth.",
        version="1",
    )
    db = Database(database_path)
    app.state.store = SQLiteStore(db)
    app.state.registry = Registry(db)
    app.state.latest = {}  # town id -> api.LatestCache: each town's latest.geojson (api.latest_cache)
    app.state.readings = readings or app.state.store
    app.state.phones = phones
    app.state.pictures = PictureStore(db)
    # Update bundles and the town's key, beside the database as pictures are (data/bundles, data/keys).
    app.state.bundles = BundleStore(database_path.parent, AuditLog(db))
    if tiles is None:
        loaded = jisaku_settings.load()
        tiles, tiles_attribution = loaded.tiles, loaded.tiles_attribution
    app.state.tiles = tile_source(tiles, tiles_attribution)  # the first town's, unless it set its own
    # Every town's name, centre, base map and licence; /t/<id>/… is served as /… for that town.
    app.state.towns = TownBook(app, db, tiles, tiles_attribution)
    app.add_middleware(TownPaths, not_found=pages.town_not_found)
    osmand.hide_keys_in_access_log()
    app.include_router(api.router)
    app.include_router(osmand.router)
    app.include_router(pictures.router)  # cameras' uploads, public copies and thumbnails
    app.include_router(bundles.router)  # devices download update bundles of their kind
    app.include_router(device_posts.router)  # pages that act as a device (after pictures: same prefix)
    app.include_router(pages.router)
    app.include_router(counter_pages.router)  # the counter's hall display and residents' page
    app.include_router(shelter_pages.router)  # /shelters: the plain list residents need in a disaster
    app.include_router(staff_pages.router)  # shelter tally and counter pages that act as a device
    app.include_router(history.router)
    app.include_router(opendata.router)  # /api/v1/export.csv, export.geojson, open-data.json
    app.include_router(shelters.router)  # /api/v1/shelters.csv, shelters.geojson
    app.include_router(gtfs_rt.router)  # /gtfs-rt/vehicle-positions.pb
    # /operator pages and /api/v1/operator: behind login; config_publisher sends devices settings
    operator.install(app, db, app.state.store, app.state.registry, config_publisher, alerts)
    mount_vendor_files(app)  # uPlot, the Japanese font, PMTiles: from npm (`npm ci`)
    # Leaflet comes from the XStatic-Leaflet package on PyPI, so nothing loads from a CDN.
    app.mount("/static/leaflet", StaticFiles(directory=xstatic.pkg.leaflet.BASE_DIR), name="leaflet")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
