"""Starts a board: reads config.json, then runs the example's app for ever.

Every turn of the loop: the app looks at its sensors (``app.step``), Wi-Fi is
joined or watched, the clock is set from NTP when it can be, the link does a
little network work, and the watchdog is fed. If anything hangs for 8 s the
watchdog (``machine.WDT``) restarts the board, which then carries on from
config.json, the saved settings and the outbox in flash.

An app is a class with ``SETTINGS`` (what operators may change, with limits),
``DEFAULTS`` (every setting's value when config.json says nothing), ``PINS``
(default pins per board: ``esp32``, ``rp2``), ``POLL_MS``, and the methods
``step(now_ms)``, ``apply_settings(values)`` and ``commands()``; optionally the
static method ``settings_problems(values)`` for checks across settings.

Example (an example's main.py)::

    import board
    from tray import PrinterTray
    board.start(PrinterTray)
"""

import sys
import time

import machine

import clock
import config
from link import Link
from outbox import Outbox
from wifi import Wifi

WATCHDOG_MS = 8000          # the Pico W's watchdog allows at most 8.3 s
NTP_FIRST_RETRY_MS = 60000
NTP_MAX_RETRY_MS = 3600000


def app_settings(app_class, boot):
    """The app's defaults, overridden by config.json's "settings"; ConfigError on a wrong one."""
    values = dict(app_class.DEFAULTS)
    for name, value in boot.get("settings", {}).items():
        if name not in values:
            raise config.ConfigError("config.json: unknown setting %r (this example takes %s)"
                                     % (name, ", ".join(sorted(values))))
        values[name] = value
    # settings_problems (optional): the app's checks across settings, e.g. alert_cm above warn_cm
    settings = config.Settings(app_class.SETTINGS, values, check=getattr(app_class, "settings_problems", None))
    found = settings.problems({k: values[k] for k in app_class.SETTINGS})
    if found:
        raise config.ConfigError("config.json: " + "; ".join(found))
    return settings


def app_pins(app_class, boot):
    pins = dict(app_class.PINS.get(sys.platform, app_class.PINS["esp32"]))
    pins.update(boot.get("pins", {}))
    return pins


class Board:
    """Everything one board runs, put together; ``turn()`` is one pass of the loop."""

    def __init__(self, app_class, boot, outbox_folder="/outbox", client_class=None):
        self.boot = boot
        clock.utc_offset_s = int(boot.get("utc_offset_h", 9) * 3600)
        self.ntp_host = boot.get("ntp", "pool.ntp.org")
        self.ntp_retry_ms = NTP_FIRST_RETRY_MS
        self.ntp_next = clock.ticks_ms()
        self.settings = app_settings(app_class, boot)
        self.settings.restore()
        self.wifi = Wifi(boot["wifi"]["ssid"], boot["wifi"]["password"])
        self.outbox = Outbox(outbox_folder)
        self.link = Link(boot, self.outbox, self.settings, client_class=client_class, info=self.info)
        self.app = app_class(self.settings.values, app_pins(app_class, boot), self.link)
        self.link.commands = self.app.commands()
        self.link.on_request = getattr(self.app, "answer", None)  # an app with outputs answers whole
        if hasattr(self.app, "check_settings"):  # checks that need the app itself (a schedule's outputs)
            self.settings.check = self.app.check_settings
        self.link.on_settings = self.app.apply_settings
        self.watchdog = machine.WDT(timeout=WATCHDOG_MS)

    def info(self):
        """What the board says about itself in its status, besides fw, queued and dropped."""
        info = {}
        ip = self.wifi.ip()
        if ip:
            info["ip"] = ip
        if hasattr(self.app, "info"):
            info.update(self.app.info())
        return info

    def turn(self):
        self.app.step(clock.ticks_ms())
        network_up = self.wifi.ensure()
        if network_up and self.ntp_host and clock.due() and clock.elapsed_ms(self.ntp_next) >= 0:
            if clock.sync_ntp(self.ntp_host):
                self.ntp_retry_ms = NTP_FIRST_RETRY_MS
            else:  # a closed network without a time server: ask less and less often
                self.ntp_next = time.ticks_add(clock.ticks_ms(), self.ntp_retry_ms)
                self.ntp_retry_ms = min(self.ntp_retry_ms * 2, NTP_MAX_RETRY_MS)
        self.link.poll(network_up)
        self.watchdog.feed()

    def run(self):
        while True:
            self.turn()
            time.sleep_ms(self.app.POLL_MS)


def start(app_class):
    """What main.py calls. A mistake in config.json is printed and the board waits at the prompt."""
    try:
        boot = config.load()
        board = Board(app_class, boot)
    except config.ConfigError as err:
        print("jisaku:", err)
        return
    print("jisaku: %s starting (%s)" % (boot["device_id"], app_class.__name__))
    board.run()
