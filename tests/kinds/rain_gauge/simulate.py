"""A shower over the simulated rain gauge: the bucket tips as often as the rain fills it."""

from __future__ import annotations

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario


class Shower(Scenario):
    def __init__(self, config: DeviceConfig, pin_factory):
        super().__init__()
        self.pin = pin_factory.pin(config.section("rain").get("pin", 6))
        self.mm_per_tip = float(config.section("rain").get("mm_per_tip", 0.2794))
        self.mm_h = float(config.section("simulate").get("mm_h", 20))
        self.fallen_mm = 0.0
        self.last_s = 0.0

    def tick(self, elapsed_s: float) -> None:
        self.fallen_mm += self.mm_h * (elapsed_s - self.last_s) / 3600
        self.last_s = elapsed_s
        while self.fallen_mm >= self.mm_per_tip:  # one tip: the switch closes, then opens
            self.fallen_mm -= self.mm_per_tip
            self.pin.drive_low()
            self.pin.drive_high()
