"""Printer-tray buzzer: beeps when a printout is left on the counter printer's tray.

A TCRT5000 reflective module under the tray sees paper (its output goes low);
when paper lies there longer than ``left_after_s`` the buzzer beeps until the
paper is taken. It needs no network: events are queued and sent when it can.

Wiring (Raspberry Pi, BCM numbers)::

    TCRT5000 VCC -> 3.3V (pin 1)     TCRT5000 GND -> GND (pin 9)
    TCRT5000 DO  -> GPIO17 (pin 11)
    buzzer +     -> GPIO18 (pin 12)  buzzer -     -> GND (pin 14)

Example::

    tray = PrinterTray(config, link)
    tray.run(stop)     # events tray_left / tray_cleared, a reading every report_every_s
"""

from __future__ import annotations

import datetime
import threading
import time

from gpiozero import Buzzer, DigitalInputDevice

from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink

POLL_S = 0.1


class PrinterTray:
    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        settings = config.section("tray")
        self.link = link
        self.left_after_s = float(settings.get("left_after_s", 30))
        self.report_every_s = float(settings.get("report_every_s", 60))
        # The module pulls its output low when paper reflects the light: active when low.
        self.paper = DigitalInputDevice(settings.get("sensor_pin", 17), pull_up=True, pin_factory=pin_factory)
        self.buzzer = Buzzer(settings.get("buzzer_pin", 18), pin_factory=pin_factory)
        self.paper_since: float | None = None
        self.beeping = False
        self.left_today = 0
        self._today = datetime.date.today()

    def step(self, now: float) -> None:
        """Look at the tray once and act on what changed."""
        if datetime.date.today() != self._today:
            self._today, self.left_today = datetime.date.today(), 0
        if self.paper.is_active:
            if self.paper_since is None:
                self.paper_since = now
            elif not self.beeping and now - self.paper_since >= self.left_after_s:
                self.beeping = True
                self.left_today += 1
                self.buzzer.beep(on_time=0.2, off_time=0.3)
                self.link.publish_event("tray_left", {"waited_s": round(now - self.paper_since, 1),
                                                      "left_today": self.left_today})
        elif self.paper_since is not None:
            lay_s = round(now - self.paper_since, 1)
            if self.beeping:
                self.buzzer.off()
                self.beeping = False
                self.link.publish_event("tray_cleared", {"lay_s": lay_s})
            self.paper_since = None

    def apply_settings(self, settings: dict) -> None:
        for name, value in settings.items():
            setattr(self, name, float(value))

    def commands(self) -> dict:
        return {"test_buzzer": self.test_buzzer, "report_now": self.report_now}

    def report_now(self, args: dict) -> tuple[bool, str]:
        self.report()
        return True, "reported"

    def test_buzzer(self, args: dict) -> tuple[bool, str]:
        """Beep twice, so staff can hear the buzzer works (from the operators' page)."""
        self.buzzer.beep(on_time=0.2, off_time=0.2, n=2)
        return True, "beeped twice"

    def report(self) -> None:
        self.link.publish_reading({"paper": int(self.paper.is_active), "left_today": self.left_today})

    def run(self, stop: threading.Event) -> None:
        next_report = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            self.step(now)
            if now >= next_report:
                self.report()
                next_report = now + self.report_every_s
            stop.wait(POLL_S)

    def close(self) -> None:
        self.buzzer.close()
        self.paper.close()
