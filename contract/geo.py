"""Distances, bearings and routes on the Earth (WGS-84, degrees)."""

from __future__ import annotations

import bisect
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

EARTH_RADIUS_M = 6_371_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine); good to well under 1 % at town scale."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Compass heading from the first point to the second, 0-360 (0 = north)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(x, y)) % 360


def load_route(path: Path) -> list[tuple[float, float]]:
    """Points ``(lat, lon)`` of a route: a GeoJSON LineString or a GPX track/route."""
    if path.suffix.lower() == ".gpx":
        root = ET.parse(path).getroot()
        points = [
            (float(p.get("lat")), float(p.get("lon")))
            for p in root.iter()
            if p.tag.rsplit("}", 1)[-1] in ("trkpt", "rtept")
        ]
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("type") == "FeatureCollection":
            data = data["features"][0]
        if data.get("type") == "Feature":
            data = data["geometry"]
        if data.get("type") != "LineString":
            raise ValueError(f"{path}: expected a GeoJSON LineString, found {data.get('type')}")
        points = [(lat, lon) for lon, lat, *_ in data["coordinates"]]
    if len(points) < 2:
        raise ValueError(f"{path}: a route needs at least two points")
    return points


class Route:
    """A route to travel along: where am I after ``metres``? (loops back to the start)."""

    def __init__(self, points: list[tuple[float, float]]):
        self.points = points
        self.cumulative = [0.0]
        for (a_lat, a_lon), (b_lat, b_lon) in zip(points, points[1:]):
            self.cumulative.append(self.cumulative[-1] + distance_m(a_lat, a_lon, b_lat, b_lon))
        self.length_m = self.cumulative[-1]

    def at(self, metres: float) -> tuple[float, float, float]:
        """``(lat, lon, heading)`` at ``metres`` along the route, wrapping round."""
        metres %= self.length_m
        i = max(0, min(len(self.points) - 2, bisect.bisect_right(self.cumulative, metres) - 1))
        (a_lat, a_lon), (b_lat, b_lon) = self.points[i], self.points[i + 1]
        span = self.cumulative[i + 1] - self.cumulative[i]
        f = (metres - self.cumulative[i]) / span if span else 0.0
        return a_lat + (b_lat - a_lat) * f, a_lon + (b_lon - a_lon) * f, bearing_deg(a_lat, a_lon, b_lat, b_lon)

