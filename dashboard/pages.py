"""Residents' pages: the live map, the same data as a plain list, and one page per device.

Everything is in Japanese and English (:mod:`.i18n`), works on a 360 px phone first,
and shows public devices only: a private device is answered exactly like one that
does not exist, on every page.

Example::

    GET /                  the live map (folium + Leaflet, markers moved by /api/v1/stream)
    GET /list              the same, as text: for screen readers and slow phones
    GET /devices/bus-1     current value, status, and the last 24 h / 7 days
    GET /?lang=en          any page in English (kept in a cookie); default from Accept-Language
"""

from __future__ import annotations

import json
import re
from html import escape
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import folium
from branca.element import Element, MacroElement
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Template

from jisaku.contract import kinds
from jisaku.gateway.store import stale_after
from jisaku.gateway.town_state import TownState
from jisaku.kinds.shelter import occupancy

from . import i18n
from .api import position
from .kind_view import browser_kinds, kind_name, levels_of, metric_label, reading_lines
from . import towns
from .tiles import PMTILES_URL, TileSource
from .towns import TownSettings, town_of

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

# Japan, until the first devices report: the map then fits itself to them.
DEFAULT_CENTER = (36.2, 138.25)

# A vehicle silent this long after going grey is taken off the map: it has gone home.
HIDE_AFTER_STALE_S = 15 * 60
# Metrics that are not worth a chart of their own.
NOT_CHARTED = {"lat", "lon", "heading", "acc_m", "alt_m"}


# ---------------------------------------------------------------- freshness


@dataclass(frozen=True)
class Limits:
    """When a device counts as silent (greyed) and, for vehicles, when it leaves the map."""

    stale_s: float
    hide_s: float | None


def limits(kind: str, interval_s: float | None) -> Limits:
    """Stale when the gateway would call it so (:func:`stale_after`); kinds that move hidden 15 minutes later.

    >>> limits("bus", 5)
    Limits(stale_s=60.0, hide_s=960.0)
    """
    stale_s = stale_after(kind, interval_s)
    return Limits(stale_s, stale_s + HIDE_AFTER_STALE_S if kinds.moves(kind) else None)


def freshness(device: dict[str, Any], now: float) -> str:
    """What a resident should be told: ``live``, ``stale``, ``offline`` or ``waiting`` (never heard from).

    Judged from the time of the newest reading, because phones (OsmAnd) never send a
    status of their own; a device that said goodbye (MQTT last will) is ``offline``.
    """
    if device["ts"] is None:
        return "waiting"
    if now - device["ts"] > limits(device["kind"], device["interval_s"]).stale_s:
        return "stale"
    if device["status"] == "offline":
        return "offline"
    return "live"


def device_levels(store, device: dict[str, Any]) -> tuple[float, float] | None:
    """``(warn, alert)`` the device's value is coloured by (the settings it applied), or None."""
    if levels_of(device["kind"], None) is None:  # most kinds have no levels: no query for a bus
        return None
    state = store.config_state(device["id"])
    return levels_of(device["kind"], state["applied"] if state else None)


def short_label(device_id: str) -> str:
    """The number a resident would call a vehicle by: "bus-12" → "12"; none → ""."""
    match = re.search(r"(\d+)$", device_id)
    return match.group(1) if match else ""


# ---------------------------------------------------------------- what every page needs


def page_context(request: Request, town: TownSettings | None = None, **extra) -> dict[str, Any]:
    """What every residents' page needs; ``town``: the page's town when the path named none (a
    device's page at /devices/<id> is its own town's), else the path's (dashboard/towns.py)."""
    lang = i18n.pick_language(request)
    other = "en" if lang == "ja" else "ja"
    town = town or town_of(request)
    return {"request": request, "lang": lang, "t": i18n.translator(lang), "other_lang": other,
            "fonts": "noto-sans-jp" not in getattr(request.app.state, "vendor_missing", []),
            # links stay inside the town: "" for the first town, "/t/<id>" for the others
            "town": town, "base": town.base_path, "town_name": towns.display_name(town, lang),
            # a banner on every residents' page while the town is in disaster mode
            "disaster": TownState(request.app.state.store.db).disaster_mode(town.id), **extra}


def render(request: Request, template: str, status_code: int = 200, town: TownSettings | None = None,
           **extra) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, page_context(request, town, **extra),
                                          status_code=status_code)
    i18n.remember_language(request, response)
    return response


def town_not_found(scope, town_id: str) -> HTMLResponse:
    """The page for /t/<id>/… of a town this deployment does not serve (dashboard/towns.py)."""
    return render(Request(scope), "not_found.html", status_code=404, missing_town=town_id)


def device_town(request: Request, device: dict[str, Any] | None) -> TownSettings | None:
    """The town whose page shows ``device``: None (answer 404) when the path names another town."""
    if device is None or not towns.shows_device(request, device["town"]):
        return None
    return town_of(request, device["town"])


def display_name(device: dict[str, Any], lang: str) -> str:
    """The name a resident reading ``lang`` is shown: the Japanese one on Japanese pages, if set.

    >>> display_name({"id": "bus-1", "name": "Loop bus", "name_ja": "循環バス"}, "ja")
    '循環バス'
    >>> display_name({"id": "bus-1", "name": "Loop bus", "name_ja": ""}, "ja")
    'Loop bus'
    """
    if lang == "ja" and device.get("name_ja"):
        return device["name_ja"]
    return device["name"] or device["id"]


def residents_page(kind_id: str, device_id: str, base: str = "") -> str:
    """Where residents read about a device: its kind's own page (kind.toml [pages]), else /devices/{id};
    under ``base``, the town's path ("" for the first town)."""
    kind = kinds.get(kind_id)
    page = kind.folder.pages.get("residents") if kind else None
    return base + (page.replace("{id}", quote(device_id)) if page else f"/devices/{quote(device_id)}")


def describe(device: dict[str, Any], lang: str, now: float, base: str = "") -> dict[str, Any]:
    """A device as the list and device pages show it: words in ``lang``, numbers localised."""
    t = i18n.translator(lang)
    values = device["values"]
    state = freshness(device, now)
    return {
        "id": device["id"], "name": display_name(device, lang), "kind": device["kind"],
        "page": residents_page(device["kind"], device["id"], base),
        "kind_label": kind_name(device["kind"], lang), "moves": kinds.moves(device["kind"]),
        "state": state, "state_label": t(f"status.{state}"),
        "updated": (t("status.updated", ago=i18n.format_ago(device["ts"], lang, now))
                    if device["ts"] is not None else t("status.never")),
        "when": i18n.format_datetime(device["ts"], lang) if device["ts"] is not None else "",
        "lines": reading_lines(device["kind"], values, lang), "position": position(device),
        "picture": device.get("picture"),
        "picture_when": _picture_when(device.get("picture"), device["kind"], device["interval_s"], lang, now),
        "metrics": [m for m, v in values.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and m not in NOT_CHARTED],
    }


def _picture_when(picture: dict[str, Any] | None, kind: str, interval_s: float | None, lang: str,
                  now: float) -> str:
    """"Picture taken 3 minutes ago", or "No new picture for 42 min" once the camera went quiet."""
    if not picture:
        return ""
    t = i18n.translator(lang)
    if now - picture["ts"] > limits(kind, interval_s).stale_s:
        return t("picture.quiet", minutes=i18n.format_number((now - picture["ts"]) / 60, lang, 0))
    return t("picture.taken", ago=i18n.format_ago(picture["ts"], lang, now))


def tiles_config(source: TileSource, base: str = "") -> dict[str, Any]:
    """The base map as live.js and device.js take it; a town's .pmtiles file is under its ``base``."""
    config = {"url": base + source.url if source.is_pmtiles else source.url, "attribution": source.attribution,
              "maxZoom": source.max_zoom, "pmtiles": source.is_pmtiles}
    if source.native_zooms is not None:
        config["minNativeZoom"], config["maxNativeZoom"] = source.native_zooms
    return config


# ---------------------------------------------------------------- the live map


class LocalMap(folium.Map):
    """A folium map whose JavaScript and CSS come from this server, never a CDN."""

    default_js = [("leaflet", "/static/leaflet/leaflet.js"), ("jisaku_icons", "/static/icons.js"),
                  ("jisaku_live", "/static/live.js")]
    default_css = [("leaflet_css", "/static/leaflet/leaflet.css"), ("jisaku_css", "/static/jisaku.css")]


class LiveUpdates(MacroElement):
    """Starts live.js on the map; as a child of the map it runs after the map exists."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        jisakuLive({{ this._parent.get_name() }}, {{ this.config }});
        {% endmacro %}
    """)

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        # "</" cannot end the <script> early when written as "<\\/".
        self.config = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")


def render_map(request: Request, center: tuple[float, float], zoom: int, config: dict[str, Any]) -> str:
    town = town_of(request)
    source = towns.tiles_of(request, town)
    live_map = LocalMap(location=center, zoom_start=zoom, tiles=None, control_scale=False,
                        zoom_control=False)  # zoom buttons go bottom-right, in reach of a thumb: live.js
    if not source.is_pmtiles:  # a .pmtiles file is read by live.js with the pmtiles package
        folium.TileLayer(source.url, attr=source.attribution, max_zoom=source.max_zoom).add_to(live_map)
    context = page_context(request)
    root = live_map.get_root()
    head = templates.get_template("_head.html").render(context)
    title = context["t"]("app.title") + (f" · {escape(context['town_name'])}" if context["town_name"] else "")
    root.header.add_child(Element(head + f"<title>{title}</title>"))
    root.html.add_child(Element(templates.get_template("_map_header.html").render(context)))
    LiveUpdates(config).add_to(live_map)
    # folium writes a bare <html>; screen readers need to know the page's language.
    return root.render().replace("<html>", f'<html lang="{context["lang"]}">', 1)


@router.get("/", response_class=HTMLResponse, summary="The live map")
def live_map(request: Request) -> HTMLResponse:
    store = request.app.state.store
    lang = i18n.pick_language(request)
    town = town_of(request)
    devices = store.latest(public_only=True, town=town.id)
    center, zoom = map_view(town, [position(d) for d in devices if position(d)])
    levels = {d["id"]: device_levels(store, d) for d in devices}
    disaster = TownState(store.db).disaster_mode(town.id) is not None
    base = town.base_path
    shown_kinds = browser_kinds(lang)
    if disaster:  # the shelters' button first: what everyone opens the map for now
        shown_kinds = {k: shown_kinds[k] for k in sorted(shown_kinds, key=lambda k: k != "shelter")}
    config = {
        "geojson": f"{base}/api/v1/latest.geojson", "stream": f"{base}/api/v1/stream", "lang": lang, "base": base,
        "words": i18n.js_catalog(lang), "kinds": shown_kinds, "disaster": disaster,
        "shelterLevels": {level: {"label": occupancy.LABELS[level][lang], "colour": occupancy.COLOURS[level],
                                  "text": occupancy.TEXT_COLOURS[level]} for level in occupancy.LEVELS},
        "tiles": tiles_config(towns.tiles_of(request, town), base),
        "pmtilesScript": "/static/vendor/pmtiles/pmtiles.js",
        "limits": {d["id"]: vars(limits(d["kind"], d["interval_s"])) for d in devices},
        "kindLimits": {k: vars(limits(k, None)) for k in (*kinds.registry().kinds, kinds.OTHER)},
        "levels": {device_id: list(shown) for device_id, shown in levels.items() if shown},
        "legends": legends(devices, levels),
    }
    response = HTMLResponse(render_map(request, center, zoom, config))
    i18n.remember_language(request, response)
    return response


def map_view(town: TownSettings, located: list[tuple[float, float]]) -> tuple[tuple[float, float], int]:
    """Where the map opens: the middle of the town's devices; before any reports, the town's own
    centre and zoom (towns table), else all of Japan.

    Example::

        map_view(hida, [(36.23, 137.18), (36.25, 137.19)])   # ((36.24, 137.185), 14)
        map_view(hida, [])                                   # ((hida.lat, hida.lon), hida.zoom)
    """
    if located:
        return (sum(p[0] for p in located) / len(located), sum(p[1] for p in located) / len(located)), 14
    if town.lat is not None and town.lon is not None:
        return (town.lat, town.lon), town.zoom or 14
    return DEFAULT_CENTER, 5


def legends(devices: list[dict[str, Any]], levels: dict[str, tuple[float, float] | None]) -> dict[str, list[float]]:
    """Per kind with levels, the levels its legend shows: the devices' own if they all agree, else the defaults."""
    shown = {}
    for kind_id in {d["kind"] for d in devices if levels.get(d["id"])}:
        used = {levels[d["id"]] for d in devices if d["kind"] == kind_id}
        shown[kind_id] = list(used.pop() if len(used) == 1 else levels_of(kind_id, None))
    return shown


# ---------------------------------------------------------------- the list, and one device


@router.get("/list", response_class=HTMLResponse, summary="Every public device as a plain list")
def device_list(request: Request) -> HTMLResponse:
    lang, now = i18n.pick_language(request), time.time()
    town = town_of(request)
    described = [describe(d, lang, now, town.base_path)
                 for d in request.app.state.store.latest(public_only=True, town=town.id)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for device in described:
        groups.setdefault(device["kind"], []).append(device)
    order = [k.id for k in kinds.all_kinds()] + sorted(set(groups) - set(kinds.registry().kinds))
    sections = [{"kind": k, "title": kind_name(k, lang, plural=True) if kinds.get(k) else k,
                 "devices": groups[k]} for k in order if k in groups]
    return render(request, "list.html", sections=sections)


@router.get("/devices/{device_id}", response_class=HTMLResponse, summary="One public device: now and its history")
def device_page(request: Request, device_id: str) -> HTMLResponse:
    lang, now = i18n.pick_language(request), time.time()
    store = request.app.state.store
    device = next((d for d in store.latest(public_only=True) if d["id"] == device_id), None)
    town = device_town(request, device)
    if town is None:
        # Word for word what a device that never existed gets: a private one (or another town's,
        # under this town's path) stays unknown.
        return render(request, "not_found.html", status_code=404, device_id=device_id)
    base = town.base_path
    shown = describe(device, lang, now, base)
    kind = kinds.get(device["kind"])
    drawn_as = device["kind"] if kind else kinds.OTHER
    levels = device_levels(store, device)
    config = {
        "id": device_id, "lang": lang, "words": i18n.js_catalog(lang), "kind": device["kind"],
        "kinds": {drawn_as: browser_kinds(lang)[drawn_as]},
        "metricNames": {m: metric_label(m, lang) for m in shown["metrics"]},
        "vehicle": shown["moves"], "metrics": shown["metrics"],
        "position": shown["position"], "tiles": tiles_config(towns.tiles_of(request, town), base),
        "api": f"{base}/api/v1",  # history and track: under the town's path, as the page is
        "pmtilesScript": "/static/vendor/pmtiles/pmtiles.js",
        # the levels as faint lines behind the chart of the value they colour
        "levels": {"metric": kind.folder.marker.metric, "values": list(levels)} if levels else None,
        "pictures": f"{base}/api/v1/devices/{device_id}/pictures" if shown["picture"] else None,
    }
    return render(request, "device.html", town=town, device=shown,
                  config=json.dumps(config, ensure_ascii=False).replace("</", "<\\/"))


@router.get(PMTILES_URL, include_in_schema=False)
def pmtiles_file(request: Request) -> Response:
    """The operator's .pmtiles base map; FileResponse answers the range requests the reader makes."""
    source: TileSource = towns.tiles_of(request, town_of(request))
    if not source.is_pmtiles:
        return Response("This map uses no .pmtiles file (setting `tiles`).", status_code=404)
    return FileResponse(source.pmtiles_file, media_type="application/octet-stream")
