"""A device's sensor loop for the broker tests: a reading every ``every_s`` through a real DeviceLink.

It counts what it took, so a test can compare readings taken with readings stored::

    sensor = Sensor(link, every_s=0.1, metric="n")
    ...
    taken = sensor.pause()
"""

from __future__ import annotations

import threading

from jisaku.device.link import DeviceLink


class Sensor:
    def __init__(self, link: DeviceLink, every_s: float, metric: str = "n"):
        self.link, self.every_s, self.metric = link, every_s, metric
        self.taken = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.link.publish_reading({self.metric: float(self.taken)})
            self.taken += 1

    def pause(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.taken
