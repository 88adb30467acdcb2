"""Which town a residents' page or public API request is about: ``/t/<id>/…`` or the first town.

One deployment serves several towns (gateway/towns.py). Each town's public pages and API are
under ``/t/<id>/``; the paths without it keep meaning the first town, so a deployment with one
town keeps its addresses. :class:`TownPaths` (an ASGI middleware) takes the prefix off, so the
same handlers answer both, and leaves the town id in the request's state for :func:`town_of`::

    GET /t/hida/list                 -> the /list handler; town_of(request).id == "hida"
    GET /t/hida/api/v1/latest.geojson
    GET /list                        -> town_of(request) is the first town
    GET /t/nowhere/list              -> 404, the residents' "not found" page

A device's own addresses (``/devices/<id>``, ``/api/v1/devices/<id>/…``, ``/counter/<id>``,
``/pictures/<id>/…``) also work without the prefix whatever the device's town, since device ids
are unique across the deployment; under another town's prefix they are 404 (:func:`shows_device`).

Operators have one address, ``/operator``; ``/t/<id>/operator`` is 404, so a town operator's
pages never depend on the path they came by (their session says their town).

Example::

    town = town_of(request)
    town.name, town.base_path        # "Hida (demo)", "/t/hida"
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from jisaku.contract import settings as settings_module
from jisaku.contract.settings import Settings
from jisaku.gateway.db import Database
from jisaku.gateway.towns import TownError, Towns, TownSettings

from .tiles import TileSource, tile_source

# /t/<id> alone, or /t/<id>/<rest>: the id as gateway/towns.TOWN_ID allows it
PREFIX = re.compile(r"^/t/([a-z][a-z0-9-]{0,31})(/.*)?$")
# How long the towns' settings are kept in memory. A town added or renamed with `jisaku towns`
# (another process) shows within this; an unknown id is looked up again at once anyway.
REFRESH_S = 2.0
# Paths that are not the town's under /t/<id>/: the operators' (one address, their session says
# the town) and the shared assets (the pages link /static/… without the prefix).
NOT_UNDER_A_TOWN = ("/operator", "/api/v1/operator")

STATE_KEY = "jisaku_town"  # in scope["state"]: the town id the path named, None without /t/


def deployment_settings(app) -> Settings:
    """The deployment's settings: ``app.state.settings`` if set, else jisaku.toml and JISAKU_* (once)."""
    if getattr(app.state, "settings", None) is None:
        app.state.settings = settings_module.load()
    return app.state.settings


class TownBook:
    """Every town's settings with the empty ones filled in from jisaku.toml, kept for REFRESH_S.

    The deployment's settings are read from the app each time (tests replace them); the
    dashboard's own ``tiles`` argument (if given) stands for jisaku.toml's ``tiles``.

    Example::

        book = TownBook(app, db)
        book.get("hida").name          # "Hida (demo)"; None for an unknown id
        book.first().id                # "main"
    """

    def __init__(self, app, db: Database, tiles: str | None = None, tiles_attribution: str = ""):
        self.app = app
        self.towns = Towns(db)
        self.tiles_setting = (tiles, tiles_attribution)
        self._lock = threading.Lock()
        self._by_id: dict[str, TownSettings] = {}
        self._first: str | None = None
        self._read = float("-inf")
        self._defaults: Settings | None = None
        self._tiles: dict[tuple[str, str], TileSource] = {}

    def defaults(self) -> Settings:
        settings = deployment_settings(self.app)
        if self.tiles_setting[0] is not None:
            settings = replace(settings, tiles=self.tiles_setting[0], tiles_attribution=self.tiles_setting[1])
        return settings

    def _refresh(self, force: bool = False) -> None:
        with self._lock:
            settings = deployment_settings(self.app)
            if not force and settings is self._defaults and time.monotonic() - self._read < REFRESH_S:
                return
            self._defaults = settings
            defaults = self.defaults()
            ids = self.towns.ids()
            self._by_id = {town_id: self.towns.settings(town_id, defaults) for town_id in ids}
            self._first = ids[0] if ids else None
            self._read = time.monotonic()

    def get(self, town_id: str) -> TownSettings | None:
        self._refresh()
        if town_id not in self._by_id:
            self._refresh(force=True)  # added a moment ago by `jisaku towns add`
        return self._by_id.get(town_id)

    def first(self) -> TownSettings:
        self._refresh()
        if self._first is None:
            self._refresh(force=True)
        if self._first is None:
            raise TownError("this deployment has no town: add one with `jisaku towns add ID --name NAME`")
        return self._by_id[self._first]

    def tiles(self, town: TownSettings) -> TileSource:
        """The town's base map (dashboard/tiles.py), made once per setting."""
        key = (town.tiles, town.tiles_attribution)
        if key not in self._tiles:
            self._tiles[key] = tile_source(*key)
        return self._tiles[key]


class TownPaths:
    """ASGI middleware: ``/t/<id>/<rest>`` is served as ``/<rest>`` with the town in the request's state.

    An unknown town, or an operator path under a town, gets the residents' "not found" page.
    """

    def __init__(self, app: ASGIApp, not_found):
        self.app = app
        self.not_found = not_found  # (scope, town_id) -> an ASGI response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        match = PREFIX.match(scope["path"])
        if match is None:
            state[STATE_KEY] = None
            return await self.app(scope, receive, send)
        town_id, rest = match.group(1), match.group(2) or "/"
        book: TownBook = scope["app"].state.towns if "app" in scope else self.app.state.towns
        if book.get(town_id) is None or rest.startswith(NOT_UNDER_A_TOWN):
            response = self.not_found(scope, town_id)
            return await response(scope, receive, send)
        state[STATE_KEY] = town_id
        scope = dict(scope, path=rest, raw_path=rest.encode())
        await self.app(scope, receive, send)


def named_town(request: Request) -> str | None:
    """The town id the path named (``/t/<id>/…``), or None when it named none."""
    return request.scope.get("state", {}).get(STATE_KEY)


def town_of(request: Request, town_id: str | None = None) -> TownSettings:
    """The town a request is about: the one its path names, else ``town_id`` if given, else the first."""
    book: TownBook = request.app.state.towns
    named = named_town(request) or town_id
    town = book.get(named) if named else None
    return town or book.first()


def shows_device(request: Request, device_town: str) -> bool:
    """Whether a device of ``device_town`` may be shown at this path: always without /t/ (ids are
    unique), under /t/<id>/ only when it is that town's. Otherwise answer as for a missing device.

    Example::

        shows_device(request, "main")   # GET /t/hida/devices/snow-1: False; GET /devices/snow-1: True
    """
    named = named_town(request)
    return named is None or named == device_town


def tiles_of(request: Request, town: TownSettings) -> TileSource:
    return request.app.state.towns.tiles(town)


def display_name(town: TownSettings, lang: str) -> str:
    """The town's name for a page in ``lang``: the Japanese one on Japanese pages, if set; may be ""."""
    return (town.name_ja if lang == "ja" and town.name_ja else town.name) or ""


def town_json(town: TownSettings) -> dict[str, Any]:
    """The town as ``/api/v1/town`` names it."""
    return {"id": town.id, "name": town.name, "name_ja": town.name_ja, "base_path": town.base_path,
            "lat": town.lat, "lon": town.lon, "zoom": town.zoom}
