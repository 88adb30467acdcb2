"""Vehicle GPS tracker for a bus, a garbage truck or a festival float.

Reads NMEA sentences from a GPS module on a UART and publishes the position
every ``every_s`` seconds or every ``every_m`` metres moved, whichever comes
first. Fixes the receiver marks as not valid are ignored. The GPS also knows
the time: it sets the board's clock when there is no NTP server.

Sends what the Raspberry Pi version sends: readings {lat, lon, speed_kmh, heading}.

Example::

    tracker = VehicleTracker({"every_s": 5, "every_m": 50}, {"uart": 2, "rx": 16, "tx": 17}, link)
    tracker.feed("$GPRMC,...", time.ticks_ms())   # what step() does with each line from the GPS
"""

import math
import time

import machine

import clock
import nmea

EARTH_RADIUS_M = 6371000
LONGEST_LINE = 120  # an NMEA sentence is at most 82 characters; longer is noise


def distance_m(lat1, lon1, lat2, lon2):
    """Great-circle distance (haversine) in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


class VehicleTracker:
    #: what operators may change from afar, with its limits (the same as on the Raspberry Pi)
    SETTINGS = {"every_s": (1, 3600), "every_m": (5, 10000)}
    DEFAULTS = {"every_s": 5, "every_m": 50, "baud": 9600}
    PINS = {"esp32": {"uart": 2, "rx": 16, "tx": 17}, "rp2": {"uart": 0, "rx": 1, "tx": 0}}
    POLL_MS = 50

    def __init__(self, settings, pins, link):
        self.link = link
        self.apply_settings(settings)
        self.uart = machine.UART(pins["uart"], baudrate=settings.get("baud", 9600),
                                 rx=machine.Pin(pins["rx"]), tx=machine.Pin(pins["tx"]))
        self.partial = b""
        self.last_sent = None   # (ticks_ms, lat, lon) of the last position sent
        self.sats = 0

    def apply_settings(self, settings):
        self.every_s = settings["every_s"]
        self.every_m = settings["every_m"]

    def step(self, now):
        """Take what the GPS sent since the last step, line by line."""
        waiting = self.uart.any()
        if not waiting:
            return
        lines = (self.partial + self.uart.read(waiting)).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > LONGEST_LINE:
            self.partial = b""
        for line in lines:
            try:
                text = line.decode()
            except UnicodeError:
                continue  # noise on the wire
            self.feed(text, now)

    def feed(self, line, now):
        fix = nmea.parse(line)
        if fix is None:
            return
        if fix["type"] == "GGA":
            self.sats = fix["sats"]
            return
        if not fix["valid"]:
            return
        if fix["unix"] and clock.due():
            clock.set_unix(fix["unix"])
        if self.should_send(now, fix["lat"], fix["lon"]):
            del fix["type"], fix["valid"], fix["unix"]
            self.link.publish_reading(fix)
            self.last_sent = (now, fix["lat"], fix["lon"])

    def should_send(self, now, lat, lon):
        if self.last_sent is None:
            return True
        sent_at, sent_lat, sent_lon = self.last_sent
        return (time.ticks_diff(now, sent_at) >= self.every_s * 1000
                or distance_m(sent_lat, sent_lon, lat, lon) >= self.every_m)

    def info(self):
        return {"sats": self.sats}

    def commands(self):
        return {"report_now": self.report_now}

    def report_now(self, args):
        self.last_sent = None
        return True, "the next valid fix is sent"
