"""The vehicle tracker's simulation: a GPS module's NMEA sentences while driving a route.

Named in kind.toml (``simulation = "simulate.py:DrivingRoute"``); ``[simulate]`` in
device.toml names the route (GeoJSON or GPX) and the speed.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pynmea2

from jisaku.contract.geo import Route, load_route
from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario

KMH_TO_KNOTS = 1 / 1.852


class DrivingRoute(Scenario):
    """A GPS module on a vehicle driving a route at a steady speed: one NMEA sentence a second."""

    def __init__(self, config: DeviceConfig, pin_factory=None):
        super().__init__()
        simulate = config.section("simulate")
        self.route = Route(load_route(config.path(simulate["route"])))
        self.speed_kmh = float(simulate.get("speed_kmh", 25))
        self.start_m = float(simulate.get("start_m", 0))

    def attach(self, app) -> None:
        app.lines = self.lines()  # instead of the serial port, which it has not opened yet

    def start(self) -> None:
        """Nothing to tick: lines() makes each sentence when the tracker asks for it."""

    def lines(self) -> Iterator[str]:
        started = time.monotonic()
        while not self._stop.is_set():
            travelled = self.start_m + (time.monotonic() - started) * self.speed_kmh / 3.6
            lat, lon, heading = self.route.at(travelled)
            yield rmc_sentence(lat, lon, self.speed_kmh * KMH_TO_KNOTS, heading)
            self._stop.wait(1.0)


def rmc_sentence(lat: float, lon: float, knots: float, heading: float, when: datetime.datetime | None = None) -> str:
    """A valid-fix ``$GPRMC`` sentence, as a GPS module sends it."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    lat_deg, lon_deg = int(abs(lat)), int(abs(lon))
    sentence = pynmea2.RMC("GP", "RMC", (
        when.strftime("%H%M%S.00"), "A",
        f"{lat_deg:02d}{(abs(lat) - lat_deg) * 60:07.4f}", "N" if lat >= 0 else "S",
        f"{lon_deg:03d}{(abs(lon) - lon_deg) * 60:07.4f}", "E" if lon >= 0 else "W",
        f"{knots:.1f}", f"{heading:.1f}", when.strftime("%d%m%y"), "", "", "A",
    ))
    return str(sentence)
