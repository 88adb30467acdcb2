"""The equipment watch's simulation: pretend equipment on this computer that goes down and up.

Named in kind.toml (``simulation = "simulate.py:EquipmentOnTheLan"``). For each check in
device.toml it puts a pretend box on 127.0.0.1 and points the check at it, so the real
checking code runs against real sockets:

- a ``tcp`` check gets a real listening TCP port; while "down" the port is closed, and
  the check sees "connection refused";
- an ``http`` check gets a real small web server; while "down" it answers HTTP 503;
- a ``ping`` check gets a pretend network (ICMP needs no port to fake, and a laptop may not
  be allowed to ping): it answers in about a millisecond, or, while "down", not at all.

``[simulate]`` in device.toml says when: ``down = [{ check = "router", at_s = 30, for_s = 40 }]``
within a repeating ``cycle_s``, and ``lost_ping = { check = "phone_exchange", at_s = 15 }``
drops one ping (tried again, it answers: no alarm). See jisaku.device.simulate.

Example::

    world = EquipmentOnTheLan(config, factory)
    world.attach(watch)          # the checks now reach 127.0.0.1
    world.start()                # router down at 30 s for 40 s, ...
"""

from __future__ import annotations

import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario
from jisaku.kinds.equipment_watch.checks import HttpCheck, PingCheck, Result, TcpCheck

HOST = "127.0.0.1"


class PretendPort:
    """A TCP port on 127.0.0.1 that can be opened and closed, like a service on a box."""

    def __init__(self):
        self.port = 0
        self.listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again after a close: the checks keep calling it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._answer, args=(listener,), daemon=True, name=f"port-{self.port}").start()

    def _answer(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the box went down
                return
            connection.close()

    def close(self) -> None:
        if self.listener is not None:
            # shutdown() wakes the thread waiting in accept(); close() alone may not.
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None

    def set_up(self, up: bool) -> None:
        if up and self.listener is None:
            self.open()
        elif not up:
            self.close()


class PretendStatusPage:
    """A small web server on 127.0.0.1: 200 "OK" while up, 503 while down."""

    def __init__(self):
        self.up = True
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = (200, b"OK\n") if page.up else (503, b"Service Unavailable\n")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_port}/status"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True, name="status-page").start()

    def set_up(self, up: bool) -> None:
        self.up = up

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PretendNetwork:
    """Answers pings for one pretend box: about a millisecond while up, nothing while down."""

    def __init__(self):
        self.up = True
        self.lose_next = False

    def ping(self, host: str, timeout_s: float) -> Result:
        if self.lose_next:  # one lost packet, as on a busy network
            self.lose_next = False
            return Result(False, None, "timed out")
        if not self.up:
            return Result(False, None, "timed out")
        return Result(True, round(random.uniform(0.4, 1.8), 1))

    def set_up(self, up: bool) -> None:
        self.up = up

    def close(self) -> None:
        pass


class EquipmentOnTheLan(Scenario):
    """Pretend equipment for each check, down and up on the schedule of ``[simulate]``."""

    def __init__(self, config: DeviceConfig, factory=None):
        super().__init__()
        simulate = config.section("simulate")
        self.cycle_s = float(simulate.get("cycle_s", 180))
        self.down = [(d["check"], float(d["at_s"]), float(d["for_s"])) for d in simulate.get("down", [])]
        lost = simulate.get("lost_ping")
        self.lost_ping = (lost["check"], float(lost["at_s"])) if lost else None
        self.boxes: dict[str, PretendPort | PretendStatusPage | PretendNetwork] = {}
        self.last_t = -1.0

    def attach(self, app) -> None:
        """Point every check of the app at its pretend box on this computer."""
        for check in app.checks:
            if isinstance(check, TcpCheck):
                box = PretendPort()
                check.host, check.port = HOST, box.port
            elif isinstance(check, HttpCheck):
                box = PretendStatusPage()
                check.url = box.url
            elif isinstance(check, PingCheck):
                box = PretendNetwork()
                check.pinger = box.ping
            else:
                continue
            self.boxes[check.name] = box

    def is_up(self, name: str, t: float) -> bool:
        return not any(check == name and at <= t < at + lasts for check, at, lasts in self.down)

    def tick(self, elapsed_s: float) -> None:
        t = elapsed_s % self.cycle_s
        for name, box in self.boxes.items():
            box.set_up(self.is_up(name, t))
        if self.lost_ping and self.last_t < self.lost_ping[1] <= t:
            box = self.boxes.get(self.lost_ping[0])
            if isinstance(box, PretendNetwork):
                box.lose_next = True
        self.last_t = t

    def stop(self) -> None:
        super().stop()
        for box in self.boxes.values():
            box.close()
