"""Where a snow camera's pictures come from: an IP camera's snapshot URL, or a USB webcam.

``[camera] source`` in device.toml chooses::

    [camera]
    source = "http://192.168.1.20/snapshot.jpg"   # an IP camera: one JPEG per request
    user = "admin"                                 # optional: basic or digest login
    password = "..."

    [camera]
    source = "/dev/video0"                         # a USB (UVC) webcam, through V4L2
    width = 1280
    height = 720

A USB webcam is asked for one MJPEG frame: the webcam itself compresses it to a JPEG,
so the Pi sends the bytes as they are and never decodes video. That needs the small,
pure-Python ``linuxpy`` (``pip install 'jisaku[camera]'``), imported only when a
webcam is used, so a device that sends no pictures never needs it.

Example::

    capture = capture_from({"source": "http://192.168.1.20/snapshot.jpg"})
    data, content_type = capture()        # (b"\\xff\\xd8...", "image/jpeg")
    capture = capture_from({"source": "/dev/video0", "width": 1280, "height": 720})
    data, content_type = capture()
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

# What a picture starts with: how we know a camera really sent one.
MAGIC = {b"\xff\xd8": "image/jpeg", b"\x89PNG": "image/png"}
HTTP_TIMEOUT_S = 15.0
# A webcam's first frames after it starts are dark or blurred while its exposure settles.
WARM_UP_FRAMES = 5

Capture = Callable[[], tuple[bytes, str]]


class CaptureError(RuntimeError):
    """The camera gave no picture, with what to check."""


def picture_type(data: bytes) -> str:
    """``image/jpeg`` or ``image/png`` from the bytes themselves; CaptureError for anything else."""
    for magic, content_type in MAGIC.items():
        if data.startswith(magic):
            return content_type
    raise CaptureError(f"the camera sent {len(data)} bytes that are not a JPEG or PNG picture"
                       f" (they start {data[:16]!r}): is the URL the camera's snapshot page?")


def capture_from(camera: dict[str, Any]) -> Capture:
    """A function that takes one picture from the source ``[camera]`` names (nothing is opened yet)."""
    source = str(camera.get("source", "/dev/video0"))
    if source.startswith(("http://", "https://")):
        return lambda: http_snapshot(source, camera.get("user"), camera.get("password"))
    if source.startswith("/dev/"):
        return lambda: webcam_snapshot(source, int(camera.get("width", 1280)), int(camera.get("height", 720)))
    raise CaptureError(f"[camera] source must be an IP camera's http://.../snapshot.jpg or a webcam's"
                       f" /dev/video0, not {source!r}")


def http_snapshot(url: str, user: str | None = None, password: str | None = None) -> tuple[bytes, str]:
    """One picture from an IP camera's snapshot URL; with ``user``, basic or digest login as the camera asks."""
    handlers = []
    if user:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, url, user, password or "")
        # Both: urllib answers whichever the camera's 401 asks for (cheap cameras use either).
        handlers = [urllib.request.HTTPDigestAuthHandler(passwords), urllib.request.HTTPBasicAuthHandler(passwords)]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=HTTP_TIMEOUT_S) as answer:
            data = answer.read()
    except OSError as err:  # urllib's errors are OSErrors: no answer, 401, 404...
        raise CaptureError(f"the camera at {url} gave no picture: {err}") from None
    return data, picture_type(data)


def webcam_snapshot(device: str, width: int = 1280, height: int = 720) -> tuple[bytes, str]:
    """One JPEG from a USB webcam, as the webcam compressed it (V4L2, MJPEG)."""
    try:
        from linuxpy.video.device import Device, PixelFormat, V4L2Error, VideoCapture
    except ImportError:
        raise CaptureError("a USB webcam needs linuxpy: pip install 'jisaku[camera]'") from None
    data = b""
    try:
        with Device(device) as webcam:
            stream = VideoCapture(webcam)
            stream.set_format(width, height, "MJPG")
            if stream.get_format().pixel_format != PixelFormat.MJPEG:
                raise CaptureError(f"the webcam at {device} cannot give MJPEG pictures: use another"
                                   " UVC webcam, or an IP camera's snapshot URL")
            with stream:
                for count, frame in enumerate(stream):
                    if count >= WARM_UP_FRAMES:
                        data = bytes(frame)
                        break
    except (OSError, V4L2Error) as err:  # not plugged in, busy in another program, no permission (group video)
        raise CaptureError(f"the webcam at {device} gave no picture: {err}") from None
    if not data:
        raise CaptureError(f"the webcam at {device} stopped before giving a picture")
    return data, picture_type(data)
