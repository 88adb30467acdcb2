"""The picture sender against a small real HTTP server that answers as docs/protocol.md
("## Pictures") says the town's server does, and keeps what it stores."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jisaku.device.picture_outbox import PictureOutbox
from jisaku.device.picture_sender import PictureSender

from .brokers import HOST, free_port
from .town import wait_until

SECRET = "the camera's own secret"
JPEG = b"\xff\xd8\xff\xe0" + b"snow" * 2000      # enough of a JPEG for this server: its first bytes
PNG = b"\x89PNG\r\n\x1a\n" + b"snow" * 2000
MAX_BYTES = 100_000                               # the server's picture_max_bytes (1 MiB in a town)


class PictureServer:
    """``POST /api/v1/devices/{id}/pictures`` as the contract has it, storing one picture per (device, ts, seq).

    ``answers`` is a list of statuses to give instead, one per request, before behaving normally.
    """

    def __init__(self, port: int, secrets: dict[str, str]):
        self.port, self.secrets = port, secrets
        self.stored: list[dict] = []          # what it stored, in order
        self.requests: list[tuple[int, dict]] = []   # every request's answer and query
        self.answers: list[int] = []
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    def start(self) -> "PictureServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = server.answer(self.path, self.headers, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer((HOST, self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="picture-server").start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        with self.lock:
            status, answer = self._answer(url.path, query, headers, body)
            self.requests.append((status, query))
            return status, answer

    def _answer(self, path: str, query: dict, headers, body: bytes) -> tuple[int, dict]:
        parts = path.split("/")   # ['', 'api', 'v1', 'devices', id, 'pictures']
        if len(parts) != 6 or parts[1:4] != ["api", "v1", "devices"] or parts[5] != "pictures":
            return 404, {"detail": "Not Found"}
        device_id = parts[4]
        scheme, _, credentials = headers.get("Authorization", "").partition(" ")
        user, _, secret = base64.b64decode(credentials).decode().partition(":") if scheme == "Basic" else ("", "", "")
        if user != device_id or self.secrets.get(device_id) != secret:
            return 401, {"detail": "wrong device or secret"}
        if self.answers:
            return self.answers.pop(0), {"detail": "told to"}
        if len(body) > MAX_BYTES:
            return 413, {"detail": f"a picture is at most {MAX_BYTES} bytes"}
        content_type = headers.get("Content-Type")
        magic = {"image/jpeg": b"\xff\xd8", "image/png": b"\x89PNG"}
        if content_type not in magic or not body.startswith(magic[content_type]):
            return 415, {"detail": f"not a JPEG or PNG picture ({content_type})"}
        if "seq" not in query or ("ts" in query) == ("age" in query):
            return 422, {"detail": "needs seq, and ts or age"}
        key = (device_id, query.get("ts"), query["seq"])
        if any(p["key"] == key for p in self.stored):
            return 200, {"stored": False, "duplicate": True}
        self.stored.append({"key": key, "device_id": device_id, "ts": float(query["ts"]) if "ts" in query else None,
                            "seq": int(query["seq"]), "content_type": content_type, "body": body})
        return 201, {"stored": True}


@pytest.fixture
def outbox(tmp_path):
    return PictureOutbox(tmp_path / "pictures", max_bytes=10_000_000)


@pytest.fixture
def server():
    started = PictureServer(free_port(), {"cam-1": SECRET}).start()
    yield started
    started.stop()


@pytest.fixture
def senders():
    running: list[PictureSender] = []

    def start(outbox, port, secret=SECRET):
        sender = PictureSender("cam-1", secret, f"http://{HOST}:{port}", outbox)
        sender.start()
        running.append(sender)
        return sender

    yield start
    for sender in running:
        sender.stop()


def test_pictures_arrive_oldest_first_with_the_devices_id_and_secret_and_are_forgotten(outbox, server, senders):
    for n in range(3):
        outbox.put(JPEG + bytes([n]), "image/jpeg", ts=1732300000.0 + n)
    outbox.put(PNG, "image/png", ts=1732300003.5)
    sender = senders(outbox, server.port)
    wait_until(lambda: len(outbox) == 0, 10, "every picture is sent and forgotten")
    assert [(p["seq"], p["ts"], p["content_type"]) for p in server.stored] == [
        (1, 1732300000.0, "image/jpeg"), (2, 1732300001.0, "image/jpeg"), (3, 1732300002.0, "image/jpeg"),
        (4, 1732300003.5, "image/png")]
    assert server.stored[2]["body"] == JPEG + bytes([2]) and server.stored[3]["body"] == PNG
    assert sender.sent == 4 and outbox.refused == 0
    assert not list(outbox.folder.glob("*.jpg")), "forgotten on disk too"

    outbox.put(JPEG, "image/jpeg", ts=1732300600.0)
    sender.wake()
    wait_until(lambda: len(server.stored) == 5, 3, "a new picture goes at once, not at the next look")


def test_a_picture_stored_before_is_forgotten_without_a_second_copy(outbox, server, senders):
    outbox.put(JPEG, "image/jpeg", ts=1732300000.0)
    server.stored.append({"key": ("cam-1", "1732300000.000", "1")})   # the answer to the first try was lost
    senders(outbox, server.port)
    wait_until(lambda: len(outbox) == 0, 10, "the duplicate answer (200) lets the device forget it")
    assert len(server.stored) == 1 and server.requests[0][0] == 200


def test_a_server_in_trouble_keeps_the_picture_until_it_is_stored(outbox, server, senders):
    server.answers = [500, 503]               # its disk is full, then it restarts
    outbox.put(JPEG, "image/jpeg", ts=1732300000.0)
    sender = senders(outbox, server.port)
    wait_until(lambda: len(server.requests) >= 1, 5, "the first try")
    assert len(outbox) == 1, "a 500 keeps the picture"
    wait_until(lambda: len(outbox) == 0, 15, "tried again, with pauses, until it is stored")
    assert [status for status, _ in server.requests] == [500, 503, 201]
    assert len(server.stored) == 1 and sender.sent == 1


def test_pictures_taken_while_the_server_is_away_all_arrive_once_it_is_back(outbox, senders):
    port = free_port()
    for n in range(3):
        outbox.put(JPEG + bytes([n]), "image/jpeg", ts=1732300000.0 + n)
    senders(outbox, port)                      # nobody listens on the port yet: connection refused
    time.sleep(3)
    assert len(outbox) == 3, "nothing is forgotten while nobody answers"
    server = PictureServer(port, {"cam-1": SECRET}).start()
    try:
        wait_until(lambda: len(outbox) == 0, 15, "everything arrives once the server is up")
        assert [p["seq"] for p in server.stored] == [1, 2, 3]
        assert [status for status, _ in server.requests] == [201, 201, 201], "none twice"
    finally:
        server.stop()


def test_a_picture_the_server_cannot_take_is_dropped_and_counted(outbox, server, senders):
    outbox.put(b"GIF89a not a jpeg", "image/jpeg", ts=1732300000.0)      # 415
    outbox.put(JPEG * 20, "image/jpeg", ts=1732300001.0)                  # 413: too large
    outbox.put(JPEG, "image/jpeg", ts=1732300002.0)
    senders(outbox, server.port)
    wait_until(lambda: len(outbox) == 0, 10, "refused pictures do not block the ones after them")
    assert [status for status, _ in server.requests] == [415, 413, 201]
    assert [p["seq"] for p in server.stored] == [3]
    assert outbox.refused == 2
    assert PictureOutbox(outbox.folder).refused == 2, "counted across restarts, to be reported"


def test_a_wrong_secret_keeps_the_pictures_until_it_is_put_right(outbox, server, senders):
    outbox.put(JPEG, "image/jpeg", ts=1732300000.0)
    wrong = senders(outbox, server.port, secret="an old secret")
    wait_until(lambda: len(server.requests) >= 2, 10, "the device keeps trying")
    wrong.stop()
    assert {status for status, _ in server.requests} == {401}
    assert len(outbox) == 1 and outbox.refused == 0, "a 401 is not the picture's fault: it waits"
    senders(outbox, server.port)               # the operator gave the device its new secret
    wait_until(lambda: len(outbox) == 0, 10, "with the right secret it goes")
    assert len(server.stored) == 1


def test_stop_returns_quickly_even_while_waiting_to_try_again(outbox, senders):
    outbox.put(JPEG, "image/jpeg", ts=1732300000.0)
    sender = senders(outbox, free_port())      # nobody there: it pauses between tries
    time.sleep(1.5)
    began = time.monotonic()
    sender.stop()
    assert time.monotonic() - began < 1
    assert len(outbox) == 1


# ---------------------------------------------------------------- through the device's link


def test_a_device_link_keeps_pictures_and_uploads_them_to_its_server(tmp_path, server):
    from jisaku.device.link import DeviceLink

    # No broker listens: readings would wait, and pictures go their own way, over HTTP.
    link = DeviceLink("cam-1", SECRET, f"mqtt://{HOST}:{free_port()}", tmp_path / "cam-1",
                      server_url=f"http://{HOST}:{server.port}")
    link.start()
    try:
        assert link.publish_picture(JPEG) == 1
        wait_until(lambda: server.stored, 5, "the picture reaches the server")
        assert server.stored[0]["body"] == JPEG and abs(server.stored[0]["ts"] - time.time()) < 5
        assert json.loads(link._status())["pictures_queued"] == 0
    finally:
        link.stop()


def test_a_device_link_with_no_server_says_what_to_set(tmp_path):
    from jisaku.device.link import DeviceLink, NoServerError

    link = DeviceLink("cam-1", SECRET, f"mqtt://{HOST}:{free_port()}", tmp_path / "cam-1")
    with pytest.raises(NoServerError, match=r'\[device\] server = "http://.*JISAKU_SERVER'):
        link.publish_picture(JPEG)
    assert "pictures_queued" not in json.loads(link._status()), "a device without pictures reports as before"


def test_the_server_address_comes_from_device_toml_then_the_environment_then_the_command(tmp_path):
    from jisaku.device.config import DeviceConfigError, load_device_config
    from jisaku.device.runner import picture_server

    (tmp_path / "device.toml").write_text('[device]\nid = "cam-1"\nkind = "snow_camera"\n')
    plain = load_device_config(tmp_path)
    named = load_device_config(tmp_path, {"device": {"server": "http://10.0.0.5:8000"}})
    env = {"JISAKU_SERVER": "https://town.example/jisaku"}
    assert picture_server(named, "http://127.0.0.1:8000", env) == "http://10.0.0.5:8000"
    assert picture_server(plain, "http://127.0.0.1:8000", env) == "https://town.example/jisaku"
    assert picture_server(plain, "http://127.0.0.1:8000", {}) == "http://127.0.0.1:8000"
    assert picture_server(plain, None, {}) is None
    with pytest.raises(DeviceConfigError, match="must be like"):
        picture_server(load_device_config(tmp_path, {"device": {"server": "10.0.0.5:8000"}}), None, {})
