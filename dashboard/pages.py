"""Residents' pages: the live map."""

from __future__ import annotations

import folium
from branca.element import Element, MacroElement
from jinja2 import Template
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["pages"])

# Japan, until the first devices report: the map then fits itself to them.
DEFAULT_CENTER = (36.2, 138.25)


class LocalMap(folium.Map):
    """A folium map whose JavaScript and CSS come from this server, never a CDN."""

    default_js = [("leaflet", "/static/leaflet/leaflet.js"), ("jisaku_live", "/static/live.js")]
    default_css = [("leaflet_css", "/static/leaflet/leaflet.css"), ("jisaku_css", "/static/jisaku.css")]


class LiveUpdates(MacroElement):
    """Starts live.js on the map; as a child of the map it runs after the map exists."""

    _template = Template("""
        {% macro script(this, kwargs) %}
        jisakuLive({{ this._parent.get_name() }},
                   {geojson: "/api/v1/latest.geojson", stream: "/api/v1/stream"});
        {% endmacro %}
    """)


HEADER = """
<header class="jisaku-bar">
  <h1>Town live map <span lang="ja">まちのライブマップ</span></h1>
  <p id="jisaku-summary" aria-live="polite">Loading…</p>
</header>
"""


def render_map(center: tuple[float, float], zoom: int) -> str:
    live_map = LocalMap(location=center, zoom_start=zoom, tiles="OpenStreetMap", control_scale=True)
    root = live_map.get_root()
    root.header.add_child(Element('<title>jisaku live map</title>'
                                  '<meta name="viewport" content="width=device-width, initial-scale=1">'))
    root.html.add_child(Element(HEADER))
    LiveUpdates().add_to(live_map)
    return root.render()


@router.get("/", response_class=HTMLResponse, summary="The live map")
def live_map(request: Request) -> HTMLResponse:
    located = [d for d in request.app.state.store.latest(public_only=True) if d["lat"] is not None]
    if located:
        center = (sum(d["lat"] for d in located) / len(located), sum(d["lon"] for d in located) / len(located))
        zoom = 14
    else:
        center, zoom = DEFAULT_CENTER, 5
    return HTMLResponse(render_map(center, zoom))
