"""Snow gauge: an HC-SR04 ultrasonic sensor looking down at the ground.

Snow depth is the mount height minus the distance the sensor measures.

Wiring (Raspberry Pi, BCM numbers)::

    HC-SR04 VCC  -> 5V  (pin 2)         HC-SR04 GND -> GND (pin 6)
    HC-SR04 TRIG -> GPIO23 (pin 16)
    HC-SR04 ECHO -> 1 kΩ -> GPIO24 (pin 18), and GPIO24 -> 2 kΩ -> GND
                    (the divider brings the 5 V echo down to 3.3 V)

Example::

    from gpiozero import DistanceSensor
    sensor = DistanceSensor(echo=24, trigger=23, max_distance=4)
    gauge = SnowGauge(config, link, sensor)
    gauge.run(stop)         # publishes {"depth_cm": ...} every interval_s
"""

from __future__ import annotations

import statistics
import threading
import time

from gpiozero import DistanceSensor

from ..config import DeviceConfig
from ..link import DeviceLink

# The HC-SR04 needs about 60 ms between pings for the last echo to die away.
PING_GAP_S = 0.06


class SnowGauge:
    #: what operators may change from afar, with its limits
    SETTINGS = {"interval_s": (1, 86400), "mount_height_cm": (10, 1000), "samples": (1, 15)}

    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        settings = config.section("ultrasonic")
        self.link = link
        self.interval_s = config.interval_s
        self.mount_height_cm = float(settings.get("mount_height_cm", 200))
        self.samples = int(settings.get("samples", 5))
        self.sensor = DistanceSensor(
            echo=settings.get("echo_pin", 24), trigger=settings.get("trigger_pin", 23),
            max_distance=4, pin_factory=pin_factory,
        )
        self._report_now = threading.Event()

    def measure_depth_cm(self) -> float:
        """Snow depth from the median of a few pings (one stray echo changes nothing)."""
        distances = []
        for _ in range(self.samples):
            distances.append(self.sensor.distance * 100)
            threading.Event().wait(PING_GAP_S)
        depth = self.mount_height_cm - statistics.median(distances)
        return round(max(0.0, depth), 1)

    def apply_settings(self, settings: dict) -> None:
        for name, value in settings.items():
            setattr(self, name, int(value) if name == "samples" else float(value))
        self._report_now.set()

    def commands(self) -> dict:
        return {"report_now": self.report_now}

    def report_now(self, args: dict) -> tuple[bool, str]:
        self._report_now.set()
        return True, "measuring now"

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.link.publish_reading({"depth_cm": self.measure_depth_cm()})
            deadline = time.monotonic() + self.interval_s
            while time.monotonic() < deadline and not stop.is_set() and not self._report_now.is_set():
                stop.wait(0.2)
            self._report_now.clear()

    def close(self) -> None:
        self.sensor.close()
