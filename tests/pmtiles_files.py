"""Small raster PMTiles files for the tests, written with the pmtiles package (protomaps).

Every tile is the same plain colour, so a screenshot can tell the base map from the page.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer


def plain_png(rgb: tuple[int, int, int], size: int = 256) -> bytes:
    """A size × size PNG of one colour (no imaging library needed for that)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))  # filter byte 0, then the pixels
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def tile_xy(lat: float, lon: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return min(x, n - 1), min(y, n - 1)


def write_raster_pmtiles(path: Path, south: float, west: float, north: float, east: float,
                         zooms: range, rgb: tuple[int, int, int], tile_type=TileType.PNG) -> Path:
    """A PMTiles v3 file with a tile at every zoom in ``zooms`` over the box, each a plain ``rgb`` PNG."""
    png = plain_png(rgb)
    ids = []
    for z in zooms:
        (x0, y0), (x1, y1) = tile_xy(north, west, z), tile_xy(south, east, z)
        ids += [zxy_to_tileid(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    with path.open("wb") as f:
        writer = Writer(f)
        for tile_id in sorted(ids):
            writer.write_tile(tile_id, png)
        e7 = lambda degrees: int(degrees * 10_000_000)  # noqa: E731
        writer.finalize({
            "tile_type": tile_type, "tile_compression": Compression.NONE,
            "min_lon_e7": e7(west), "min_lat_e7": e7(south), "max_lon_e7": e7(east), "max_lat_e7": e7(north),
            "center_zoom": zooms[-1], "center_lon_e7": e7((west + east) / 2), "center_lat_e7": e7((south + north) / 2),
        }, {"name": "test town", "attribution": "test tiles"})
    return path
