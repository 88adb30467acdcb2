"""Rain gauge: a tipping-bucket rain gauge; its reed switch closes once at each tip.

Wiring (Raspberry Pi, BCM numbers)::

    reed switch -> GPIO6 (pin 31) and GND (pin 34); the Pi's own pull-up holds it high

Example::

    gauge = RainGauge(config, link)
    gauge.run(stop)        # a reading {"rain_mm_h": 12.3, "tips": 11} every interval_s
"""

from __future__ import annotations

import threading
import time

from gpiozero import Button

from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink


class RainGauge:
    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        rain = config.section("rain")
        self.link = link
        self.interval_s = config.interval_s
        self.mm_per_tip = float(rain.get("mm_per_tip", 0.2794))
        self.warn_mm_h, self.alert_mm_h = 10.0, 30.0
        self.tips = 0
        self._lock = threading.Lock()
        self.bucket = Button(rain.get("pin", 6), pull_up=True, pin_factory=pin_factory)
        self.bucket.when_pressed = self._tipped

    def _tipped(self) -> None:
        with self._lock:
            self.tips += 1

    def report(self, seconds: float) -> None:
        with self._lock:
            tips, self.tips = self.tips, 0
        self.link.publish_reading({"rain_mm_h": round(tips * self.mm_per_tip * 3600 / seconds, 1), "tips": tips})

    def apply_settings(self, settings: dict) -> None:
        for name, value in settings.items():
            setattr(self, name, float(value))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            stop.wait(self.interval_s)
            self.report(time.monotonic() - started)

    def close(self) -> None:
        self.bucket.close()
