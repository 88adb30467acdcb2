"""The printer tray's simulation: paper put on the tray and taken away, on a schedule.

Named in kind.toml (``simulation = "simulate.py:PaperOnTray"``); ``[simulate]`` in
device.toml sets the schedule. See jisaku.device.simulate for how a scenario runs.
"""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario


class PaperOnTray(Scenario):
    """Paper put on the tray and taken away, on a repeating schedule."""

    def __init__(self, config: DeviceConfig, factory: MockFactory):
        super().__init__()
        tray, simulate = config.section("tray"), config.section("simulate")
        self.pin = factory.pin(tray.get("sensor_pin", 17))
        self.schedule = [(float(p["at_s"]), float(p["stays_s"])) for p in simulate.get("paper", [])]
        self.cycle_s = float(simulate.get("cycle_s", 90))

    def paper_present(self, elapsed_s: float) -> bool:
        t = elapsed_s % self.cycle_s
        return any(at <= t < at + stays for at, stays in self.schedule)

    def tick(self, elapsed_s: float) -> None:
        # The reflective module pulls its output low while paper is there.
        if self.paper_present(elapsed_s):
            self.pin.drive_low()
        else:
            self.pin.drive_high()
