"""Printer-tray buzzer: beeps when a printout is left on the counter printer's tray.

A light sensor (LDR) lies under the tray: a sheet of paper shades it, so the
light level drops. When paper lies there longer than ``left_after_s`` the
buzzer beeps until the paper is taken. All timing is local: it beeps with no
network at all, and its events wait in the outbox until they can be sent.

Sends what the Raspberry Pi version sends: events ``tray_left`` {waited_s,
left_today} and ``tray_cleared`` {lay_s}, and every ``report_every_s`` a
reading {paper, left_today}.

Example::

    tray = PrinterTray({"left_after_s": 30, "report_every_s": 60, "paper_below_pct": 40},
                       {"ldr": 34, "buzzer": 25}, link)
    tray.step(time.ticks_ms())     # call it every 100 ms
"""

import time

import machine

import clock

BEEP_ON_MS = 200
BEEP_CYCLE_MS = 500
BUZZER_HZ = 2000


class PrinterTray:
    #: what operators may change from afar, with its limits (the same as on the Raspberry Pi)
    SETTINGS = {"left_after_s": (1, 3600), "report_every_s": (5, 86400)}
    #: every setting config.json may give; paper_below_pct: the light level (0-100) under which paper lies there
    DEFAULTS = {"left_after_s": 30, "report_every_s": 60, "paper_below_pct": 40}
    PINS = {"esp32": {"ldr": 34, "buzzer": 25}, "rp2": {"ldr": 26, "buzzer": 15}}
    POLL_MS = 100

    def __init__(self, settings, pins, link):
        self.link = link
        self.apply_settings(settings)
        self.ldr = machine.ADC(machine.Pin(pins["ldr"]))
        if hasattr(self.ldr, "atten"):
            self.ldr.atten(machine.ADC.ATTN_11DB)  # ESP32: read the whole 0-3.3 V range
        self.buzzer = machine.PWM(machine.Pin(pins["buzzer"]))
        self.buzzer.freq(BUZZER_HZ)
        self.buzzer.duty_u16(0)
        self.sounding = False
        self.paper_since = None
        self.beeping_since = None   # set while the tray is beeping for a forgotten printout
        self.test_until = None      # set while the test_buzzer command beeps
        self.left_today = 0
        self.today = clock.local_day()
        self.next_report = clock.ticks_ms()

    def apply_settings(self, settings):
        self.left_after_s = settings["left_after_s"]
        self.report_every_s = settings["report_every_s"]
        self.paper_below_pct = settings.get("paper_below_pct", 40)

    def light_pct(self):
        return self.ldr.read_u16() * 100 // 65535

    def paper(self):
        return self.light_pct() < self.paper_below_pct

    def step(self, now):
        """Look at the tray once, act on what changed, and drive the buzzer."""
        if clock.local_day() != self.today:
            self.today, self.left_today = clock.local_day(), 0
        if self.paper():
            if self.paper_since is None:
                self.paper_since = now
            elif self.beeping_since is None:
                waited_ms = time.ticks_diff(now, self.paper_since)
                if waited_ms >= self.left_after_s * 1000:
                    self.beeping_since = now
                    self.left_today += 1
                    self.link.publish_event("tray_left", {"waited_s": round(waited_ms / 1000, 1),
                                                          "left_today": self.left_today})
        elif self.paper_since is not None:
            lay_s = round(time.ticks_diff(now, self.paper_since) / 1000, 1)
            if self.beeping_since is not None:
                self.beeping_since = None
                self.link.publish_event("tray_cleared", {"lay_s": lay_s})
            self.paper_since = None
        self._sound(now)
        if time.ticks_diff(now, self.next_report) >= 0:
            self.report()
            self.next_report = time.ticks_add(now, int(self.report_every_s * 1000))

    def _sound(self, now):
        """Beep 0.2 s on, 0.3 s off while beeping; touch the PWM only when it changes."""
        since = self.beeping_since
        if self.test_until is not None:
            if time.ticks_diff(now, self.test_until) >= 0:
                self.test_until = None
            else:
                since = time.ticks_add(self.test_until, -2 * BEEP_CYCLE_MS)
        on = since is not None and time.ticks_diff(now, since) % BEEP_CYCLE_MS < BEEP_ON_MS
        if on != self.sounding:
            self.sounding = on
            self.buzzer.duty_u16(32768 if on else 0)

    def report(self):
        self.link.publish_reading({"paper": int(self.paper()), "left_today": self.left_today})

    def commands(self):
        return {"test_buzzer": self.test_buzzer, "report_now": self.report_now}

    def test_buzzer(self, args):
        """Beep twice, so staff can hear the buzzer works (from the operators' page)."""
        self.test_until = time.ticks_add(clock.ticks_ms(), 2 * BEEP_CYCLE_MS)
        return True, "beeped twice"

    def report_now(self, args):
        self.report()
        return True, "reported"
