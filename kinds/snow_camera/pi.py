"""Snow camera: a webcam that sends a snapshot of the road and car park every few minutes.

The picture goes to the town's server over HTTP (``link.publish_picture``: it waits on
the SD card until the server has stored it); a small reading with the picture's size
goes over MQTT like any other, so the map and the alerts see the camera is alive.

Wiring: none. A USB (UVC) webcam goes in a USB socket; an IP camera on the same network
is reached by its snapshot URL. ``[camera]`` in device.toml says which (see capture.py).

Example::

    config = load_device_config("kinds/snow_camera")   # [camera] source, interval
    camera = SnowCamera(config, link)
    camera.snap()          # {"picture_kb": 183.2}, or None when the camera gave no picture
    camera.run(stop)       # a picture every interval_s, and at once on the snap_now command

A camera that stops giving pictures (unplugged, iced over, rebooting) does not stop the
loop: each failure is logged and counted, and the event ``camera_failed`` (with the
reason) goes once when the failures start, ``camera_back`` once pictures come again.
"""

from __future__ import annotations

import logging
import threading
import time

from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink

from .capture import capture_from

log = logging.getLogger(__name__)


class SnowCamera:
    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        self.link = link
        self.interval_s = config.interval_s
        # Nothing is opened here: the webcam or URL is tried at each picture, so a camera
        # plugged in late, or one that reboots, is simply picked up at the next one.
        self.capture = capture_from(config.section("camera"))
        self.failures = 0            # pictures that could not be taken or kept, since start
        self.failing = False         # True from camera_failed until camera_back
        self._snap_now = threading.Event()

    def snap(self) -> dict[str, float] | None:
        """Take one picture and send it; the reading sent with it, or None if it failed."""
        try:
            data, content_type = self.capture()
            self.link.publish_picture(data, content_type)
        except Exception as err:  # whatever went wrong, the next picture is tried on time
            self.failures += 1
            log.warning("%s: no picture this time (%d so far): %s", self.link.device_id, self.failures, err)
            if not self.failing:
                self.failing = True
                self.link.publish_event("camera_failed", {"reason": str(err)[:200]})
            return None
        if self.failing:
            self.failing = False
            self.link.publish_event("camera_back")
        reading = {"picture_kb": round(len(data) / 1000, 1)}
        self.link.publish_reading(reading)
        return reading

    def apply_settings(self, settings: dict) -> None:
        if "interval_s" in settings:
            self.interval_s = float(settings["interval_s"])

    def commands(self) -> dict:
        return {"snap_now": self.snap_now}

    def snap_now(self, args: dict) -> tuple[bool, str]:
        self._snap_now.set()
        return True, "taking a picture now"

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.snap()
            deadline = time.monotonic() + self.interval_s
            while time.monotonic() < deadline and not stop.is_set() and not self._snap_now.is_set():
                stop.wait(0.2)
            self._snap_now.clear()

    def close(self) -> None:
        pass  # the webcam is opened and closed for each picture
