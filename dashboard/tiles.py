"""Which base map the residents' pages draw under the markers (the ``tiles`` setting).

- ``osm``: OpenStreetMap's tile server (needs the internet; fine for a small town's traffic).
- ``gsi``: 地理院タイル, the Geospatial Information Authority of Japan's standard map.
- a URL template such as ``https://tiles.city.lan/{z}/{x}/{y}.png``: your own tile server,
  for a closed network. Set ``tiles_attribution`` to the map's credit.
- a path to a ``.pmtiles`` file of raster tiles: one file, served by this app itself, no
  tile server at all. Also set ``tiles_attribution``.

Example::

    source = tile_source("gsi")
    source.url            # "https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# Where this app serves a .pmtiles file (with HTTP range requests, which the PMTiles reader uses).
PMTILES_URL = "/tiles/base.pmtiles"

OSM = ("https://tile.openstreetmap.org/{z}/{x}/{y}.png",
       '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors', 19)
GSI = ("https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png",
       '<a href="https://maps.gsi.go.jp/development/ichiran.html">地理院タイル</a>', 18)


@dataclass(frozen=True)
class TileSource:
    url: str                        # a Leaflet URL template, or PMTILES_URL
    attribution: str                # HTML shown in the map's corner
    max_zoom: int = 18
    pmtiles_file: Path | None = None

    @property
    def is_pmtiles(self) -> bool:
        return self.pmtiles_file is not None


def tile_source(tiles: str = "osm", attribution: str = "") -> TileSource:
    """The base map named by the ``tiles`` setting; ValueError saying what to write when it is not one."""
    name = tiles.strip()
    if name.lower() == "osm":
        return TileSource(*OSM)
    if name.lower() == "gsi":
        return TileSource(*GSI)
    if name.lower().endswith(".pmtiles"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ValueError(f"tiles: the PMTiles file {path} does not exist. Give the path of a raster "
                             f".pmtiles file, or tiles = \"osm\" / \"gsi\" / a URL template")
        return TileSource(PMTILES_URL, attribution or path.name, 18, path.resolve())
    parts = urlsplit(name)
    if parts.scheme in ("http", "https") and parts.hostname and all(k in name for k in ("{z}", "{x}", "{y}")):
        return TileSource(name, attribution or parts.hostname, 19)
    raise ValueError(f"tiles {tiles!r} is not a base map: write \"osm\", \"gsi\", a URL template such as "
                     f"https://tiles.city.lan/{{z}}/{{x}}/{{y}}.png, or the path of a .pmtiles file")
