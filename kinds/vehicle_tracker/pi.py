"""Vehicle GPS tracker for a bus, a garbage truck or a festival float.

Reads NMEA sentences from a serial GPS module and publishes the position every
``every_s`` seconds or every ``every_m`` metres moved, whichever comes first.
Fixes the receiver marks as not valid are ignored.

Wiring (Raspberry Pi, BCM numbers; enable the serial port with raspi-config)::

    GPS VCC -> 3.3V (pin 1)     GPS GND -> GND (pin 6)
    GPS TX  -> GPIO15 / RXD (pin 10)
    GPS RX  -> GPIO14 / TXD (pin 8)

Example::

    import serial
    port = serial.Serial("/dev/serial0", 9600, timeout=1)
    tracker = VehicleTracker(config, link, lines=(raw.decode("ascii", "replace") for raw in port))
    tracker.run(stop)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import pynmea2

from jisaku.contract.geo import distance_m
from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink

log = logging.getLogger(__name__)

KNOTS_TO_KMH = 1.852


def open_serial_lines(port: str, baud: int) -> Iterable[str]:
    """NMEA lines from a real serial GPS module."""
    import serial  # only needed on a real device

    with serial.Serial(port, baud, timeout=2) as connection:
        for raw in connection:
            yield raw.decode("ascii", errors="replace")


class VehicleTracker:
    # pin_factory is not used (the GPS talks over the serial port), but every kind's app takes it.
    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None, lines: Iterable[str] | None = None):
        settings = config.section("gps")
        self.link = link
        self.every_s = float(settings.get("every_s", 5))
        self.every_m = float(settings.get("every_m", 50))
        self.lines = lines if lines is not None else open_serial_lines(
            settings.get("port", "/dev/serial0"), int(settings.get("baud", 9600))
        )
        self.last_sent: tuple[float, float, float] | None = None  # (monotonic time, lat, lon)

    @staticmethod
    def parse_fix(line: str) -> dict[str, float] | None:
        """Position, speed and heading from an RMC sentence with a valid fix, else None."""
        try:
            sentence = pynmea2.parse(line.strip())
        except pynmea2.ParseError:
            return None
        if not isinstance(sentence, pynmea2.types.talker.RMC) or sentence.status != "A":
            return None
        fix = {"lat": round(sentence.latitude, 6), "lon": round(sentence.longitude, 6)}
        if sentence.spd_over_grnd is not None:
            fix["speed_kmh"] = round(float(sentence.spd_over_grnd) * KNOTS_TO_KMH, 1)
        if sentence.true_course is not None:
            fix["heading"] = round(float(sentence.true_course), 1)
        return fix

    def apply_settings(self, settings: dict) -> None:
        for name, value in settings.items():
            setattr(self, name, float(value))

    def commands(self) -> dict:
        return {"report_now": self._report_next_fix}

    def _report_next_fix(self, args: dict) -> tuple[bool, str]:
        self.last_sent = None
        return True, "the next valid fix is sent"

    def should_send(self, now: float, lat: float, lon: float) -> bool:
        if self.last_sent is None:
            return True
        sent_at, sent_lat, sent_lon = self.last_sent
        return now - sent_at >= self.every_s or distance_m(sent_lat, sent_lon, lat, lon) >= self.every_m

    def run(self, stop: threading.Event) -> None:
        for line in self.lines:
            if stop.is_set():
                return
            fix = self.parse_fix(line)
            if fix is None:
                continue
            now = time.monotonic()
            if self.should_send(now, fix["lat"], fix["lon"]):
                self.link.publish_reading(fix)
                self.last_sent = (now, fix["lat"], fix["lon"])

    def close(self) -> None:
        pass
