"""The snow camera: its simulation draws real JPEGs, and a camera sends them through the
device's link to a server that answers as docs/protocol.md says, counting what fails."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image, ImageChops, ImageStat

from jisaku.device.config import load_device_config
from jisaku.device.link import DeviceLink
from jisaku.device.runner import build

from .brokers import HOST, free_port
from .test_picture_sender import SECRET, PictureServer
from .town import KINDS, wait_until

CLOCK_CORNER = (1040, 660, 1280, 720)   # where the simulated clock is drawn


def queued(link: DeviceLink) -> list[tuple[str, dict]]:
    """What waits in the link's outbox for the broker: (channel, message), oldest first."""
    with sqlite3.connect(link.outbox.path) as db:
        return [(channel, json.loads(message)) for channel, message in
                db.execute("SELECT channel, message FROM outbox ORDER BY id")]


@pytest.fixture
def camera_link(tmp_path):
    server = PictureServer(free_port(), {"cam-1": SECRET}).start()
    # No broker listens: readings and events wait in the outbox, where the test reads them.
    link = DeviceLink("cam-1", SECRET, f"mqtt://{HOST}:{free_port()}", tmp_path / "cam-1",
                      server_url=f"http://{HOST}:{server.port}")
    link.start()
    yield link, server
    link.stop()
    server.stop()


def test_the_simulation_draws_real_jpegs_with_its_clock(tmp_path):
    config = load_device_config(KINDS / "snow_camera")
    camera, scene = build(config, link=None, simulate=True)
    pictures = []
    for elapsed_s in (0.0, 1.5, 240.0):       # 1.5 s is 3 simulated minutes; 240 s is 8 hours of snowfall
        data, content_type = scene.picture(elapsed_s)
        assert content_type == "image/jpeg" and 50_000 < len(data) < 250_000, len(data)
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == (1280, 720)
        pictures.append(image.convert("RGB"))
    clocks = [p.crop(CLOCK_CORNER) for p in pictures]
    assert max(ImageStat.Stat(ImageChops.difference(clocks[0], clocks[1])).mean) > 2, "the clock moved on"
    assert scene.depth_cm(240.0) > scene.depth_cm(0.0) + 20, "the snow got deeper"
    assert camera.capture == scene.capture, "in simulation the camera takes the scene's pictures"


def test_a_simulated_camera_sends_its_picture_and_a_reading_that_says_it_is_alive(camera_link):
    link, server = camera_link
    camera, scene = build(load_device_config(KINDS / "snow_camera"), link, simulate=True)
    scene.tick(120.0)
    reading = camera.snap()
    wait_until(lambda: server.stored, 10, "the picture reaches the server")
    picture = server.stored[0]
    assert picture["content_type"] == "image/jpeg" and picture["seq"] == 1
    assert Image.open(io.BytesIO(picture["body"])).size == (1280, 720)
    assert reading == {"picture_kb": round(len(picture["body"]) / 1000, 1)}
    assert [(channel, message["v"]) for channel, message in queued(link)] == [("data", reading)]


def test_a_camera_that_gives_no_picture_is_counted_and_the_loop_goes_on(tmp_path, camera_link):
    link, server = camera_link
    snapshots = SnapshotCamera(free_port(), user="admin", password="yuki")
    (tmp_path / "device.toml").write_text(
        '[device]\nid = "cam-1"\nkind = "snow_camera"\ninterval_s = 0.2\n'
        f'[camera]\nsource = "http://{HOST}:{snapshots.port}/snapshot.jpg"\nuser = "admin"\npassword = "yuki"\n')
    camera, _ = build(load_device_config(tmp_path), link, simulate=False)
    stop = threading.Event()
    loop = threading.Thread(target=camera.run, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_until(lambda: camera.failures >= 3, 10, "the IP camera is not up yet: pictures fail, and are counted")
        assert loop.is_alive()
        snapshots.start()
        wait_until(lambda: server.stored, 10, "once the camera answers, its pictures go to the server")
    finally:
        stop.set()
        loop.join(5)
        snapshots.stop()
    assert server.stored[0]["body"] == JPEG_SNAPSHOT
    assert snapshots.logins, "the camera's login was given when it asked (basic auth)"
    events = [message for channel, message in queued(link) if channel == "event"]
    assert [e["event"] for e in events] == ["camera_failed", "camera_back"], "each once, however many failures"
    assert "gave no picture" in events[0]["v"]["reason"]


JPEG_SNAPSHOT = b"\xff\xd8\xff\xe0 an IP camera's snapshot"


class SnapshotCamera:
    """An IP camera's snapshot URL that asks for a login (HTTP basic), as cheap cameras do."""

    def __init__(self, port: int, user: str, password: str):
        self.port = port
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.logins: list[str] = []
        self.httpd: ThreadingHTTPServer | None = None

    def start(self) -> None:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.headers.get("Authorization") != camera.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                camera.logins.append(self.headers["Authorization"])
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(JPEG_SNAPSHOT)))
                self.end_headers()
                self.wfile.write(JPEG_SNAPSHOT)

        self.httpd = ThreadingHTTPServer((HOST, self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
