"""Which base map the residents' pages draw under the markers (the ``tiles`` setting).

- ``osm``: OpenStreetMap's tile server (needs the internet; fine for a small town's traffic).
- ``gsi``: 地理院タイル, the Geospatial Information Authority of Japan's standard map.
- a URL template such as ``https://tiles.city.lan/{z}/{x}/{y}.png``: your own tile server,
  for a closed network. Set ``tiles_attribution`` to the map's credit.
- a path to a ``.pmtiles`` file of raster tiles: one file, served by this app itself, no
  tile server at all. Also set ``tiles_attribution``. A town's extract often stops at
  zoom 14 or 15; closer in, the map enlarges the most detailed tiles the file has.

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
    native_zooms: tuple[int, int] | None = None   # a .pmtiles file's own min and max zoom

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
        zooms = pmtiles_zooms(path)
        return TileSource(PMTILES_URL, attribution or path.name, max(18, zooms[1]), path.resolve(), zooms)
    parts = urlsplit(name)
    if parts.scheme in ("http", "https") and parts.hostname and all(k in name for k in ("{z}", "{x}", "{y}")):
        return TileSource(name, attribution or parts.hostname, 19)
    raise ValueError(f"tiles {tiles!r} is not a base map: write \"osm\", \"gsi\", a URL template such as "
                     f"https://tiles.city.lan/{{z}}/{{x}}/{{y}}.png, or the path of a .pmtiles file")


# PMTiles v3 header (github.com/protomaps/PMTiles, spec/v3): 127 bytes; byte 7 is the
# version, 99 the tile type, 100 and 101 the min and max zoom.
PMTILES_HEADER_BYTES = 127
RASTER_TILE_TYPES = {2: "PNG", 3: "JPEG", 4: "WebP", 5: "AVIF"}


def pmtiles_zooms(path: Path) -> tuple[int, int]:
    """The min and max zoom of a raster PMTiles file; ValueError saying what is wrong with any other file."""
    with path.open("rb") as f:
        header = f.read(PMTILES_HEADER_BYTES)
    if len(header) < PMTILES_HEADER_BYTES or not header.startswith(b"PMTiles"):
        raise ValueError(f"tiles: {path} is not a PMTiles file. Make one with the pmtiles tool "
                         f"(e.g. `pmtiles convert town.mbtiles town.pmtiles`)")
    if header[7] != 3:
        raise ValueError(f"tiles: {path} is PMTiles version {header[7]}; jisaku reads version 3. "
                         f"Convert it with `pmtiles convert`")
    if header[99] not in RASTER_TILE_TYPES:
        raise ValueError(f"tiles: {path} holds vector tiles (or tiles of an unknown type). The map draws "
                         f"raster tiles (PNG, JPEG, WebP): make a raster extract")
    return header[100], header[101]
