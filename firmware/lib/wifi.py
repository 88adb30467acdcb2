"""Joining the Wi-Fi network, and joining again when it drops, without blocking.

``ensure()`` is called on every turn of the main loop. It starts a join and
returns at once; if the join has not worked after a while it gives up and
waits longer before each new try (2 s, 4 s, ... up to 60 s, a little different
on every board so a hundred boards do not all knock at once after a power cut).

Example::

    link = Wifi("office", "secret")
    while True:
        if link.ensure():          # True once joined
            print(link.ip())
"""

import network
import random
import time

import clock

JOIN_WAIT_MS = 15000
FIRST_BACKOFF_MS = 2000
MAX_BACKOFF_MS = 60000


class Wifi:
    def __init__(self, ssid, password):
        self.ssid = ssid
        self.password = password
        self.wlan = network.WLAN(network.STA_IF)
        self.backoff_ms = FIRST_BACKOFF_MS
        self.joining_since = None
        self.next_try = clock.ticks_ms()

    def connected(self):
        return self.wlan.isconnected()

    def ip(self):
        return self.wlan.ifconfig()[0] if self.connected() else None

    def ensure(self):
        """True when joined; otherwise start or watch a join and return False at once."""
        if self.wlan.isconnected():
            self.joining_since = None
            self.backoff_ms = FIRST_BACKOFF_MS
            return True
        now = clock.ticks_ms()
        if self.joining_since is not None:
            if time.ticks_diff(now, self.joining_since) < JOIN_WAIT_MS:
                return False
            # This join did not work out: stop it and wait before the next.
            self.wlan.disconnect()
            self.joining_since = None
            self.next_try = time.ticks_add(now, self.backoff_ms + random.getrandbits(10))
            self.backoff_ms = min(self.backoff_ms * 2, MAX_BACKOFF_MS)
            return False
        if time.ticks_diff(now, self.next_try) < 0:
            return False
        self.wlan.active(True)
        self.wlan.connect(self.ssid, self.password)
        self.joining_since = now
        return False
