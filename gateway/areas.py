"""Areas on the map for alert rules: a circle, or a polygon drawn or pasted as GeoJSON.

An area is given as JSON, either a circle::

    {"type": "circle", "lat": 36.1461, "lon": 137.2522, "radius_m": 300}

or GeoJSON (RFC 7946: coordinates are ``[lon, lat]``): a ``Polygon`` or
``MultiPolygon``, or a ``Feature`` / ``FeatureCollection`` holding one, as
geojson.io and most map tools export them. Holes in polygons are honoured.

Example::

    area = parse_area({"type": "Polygon", "coordinates": [[[137.25, 36.14], [137.26, 36.14],
                                                           [137.26, 36.15], [137.25, 36.14]]]})
    area.contains(36.142, 137.255)      # True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jisaku.contract.geo import distance_m


class AreaError(ValueError):
    pass


@dataclass(frozen=True)
class Circle:
    lat: float
    lon: float
    radius_m: float

    def contains(self, lat: float, lon: float) -> bool:
        return distance_m(self.lat, self.lon, lat, lon) <= self.radius_m


Ring = list[tuple[float, float]]  # (lon, lat) points, first == last


@dataclass(frozen=True)
class Polygons:
    """One or more polygons, each an outer ring followed by its holes."""

    polygons: list[list[Ring]]

    def contains(self, lat: float, lon: float) -> bool:
        # Even-odd rule over all rings of a polygon: inside the outer ring and not in a hole.
        return any(sum(_in_ring(ring, lon, lat) for ring in rings) % 2 == 1 for rings in self.polygons)


def _in_ring(ring: Ring, x: float, y: float) -> bool:
    """Ray casting: count the ring's edges a ray from (x, y) towards +x crosses."""
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


Area = Circle | Polygons


def parse_area(data: Any) -> Area:
    """Turn an area's JSON into something with ``contains(lat, lon)``; AreaError says what is wrong."""
    if not isinstance(data, dict):
        raise AreaError("an area is a JSON object: a circle or a GeoJSON Polygon")
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features") or []
        if len(features) != 1:
            raise AreaError(f"a pasted FeatureCollection must hold exactly one area; it holds {len(features)}")
        return parse_area(features[0])
    if kind == "Feature":
        return parse_area(data.get("geometry"))
    if kind == "circle":
        try:
            lat, lon, radius = (float(data[key]) for key in ("lat", "lon", "radius_m"))
        except (KeyError, TypeError, ValueError):
            raise AreaError('a circle is {"type": "circle", "lat": 36.14, "lon": 137.25, "radius_m": 300}') from None
        _check_point(lon, lat)
        if not radius > 0:
            raise AreaError(f"a circle's radius_m must be more than 0, not {radius}")
        return Circle(lat, lon, radius)
    if kind == "Polygon":
        return Polygons([_polygon(data.get("coordinates"))])
    if kind == "MultiPolygon":
        coordinates = data.get("coordinates")
        if not isinstance(coordinates, list) or not coordinates:
            raise AreaError("a MultiPolygon's coordinates are a list of polygons")
        return Polygons([_polygon(polygon) for polygon in coordinates])
    raise AreaError(f"an area must be a circle, a GeoJSON Polygon or MultiPolygon (or a Feature of one), not {kind!r}")


def _polygon(rings: Any) -> list[Ring]:
    if not isinstance(rings, list) or not rings:
        raise AreaError("a Polygon's coordinates are a list of rings, each a list of [lon, lat] points")
    parsed = []
    for ring in rings:
        try:
            points = [(float(p[0]), float(p[1])) for p in ring]
        except (TypeError, ValueError, IndexError):
            raise AreaError("each point of a polygon is [lon, lat], two numbers") from None
        if len(points) < 4 or points[0] != points[-1]:
            raise AreaError("a polygon ring needs at least 4 points and must end where it starts (GeoJSON rings are closed)")
        for lon, lat in points:
            _check_point(lon, lat)
        parsed.append(points)
    return parsed


def _check_point(lon: float, lat: float) -> None:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise AreaError(f"point lat {lat}, lon {lon} is off the Earth: GeoJSON puts lon first, [lon, lat]")
