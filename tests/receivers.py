"""Real receivers for notifications in tests: an HTTP webhook endpoint and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from .brokers import HOST, free_port


class WebhookReceiver:
    """An incoming-webhook endpoint on a free port; it answers ``fail_status`` to the first ``fail_first`` posts.

    ``posts`` holds ``(path, status answered, JSON body)`` of every request, in order.
    """

    def __init__(self, fail_first: int = 0, fail_status: int = 500):
        self.posts: list[tuple[str, int, dict]] = []
        self.fail_first, self.fail_status = fail_first, fail_status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.fail_status if receiver.fail_first > 0 else 200
                receiver.fail_first -= status != 200
                receiver.posts.append((self.path, status, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True, name="webhook-receiver").start()

    def delivered(self, path: str | None = None) -> list[dict]:
        """Bodies that were answered 200, optionally only those POSTed to ``path``."""
        return [body for p, status, body in self.posts if status == 200 and (path is None or p == path)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class MailReceiver:
    """A real SMTP server (aiosmtpd) on a free port; ``messages`` are the parsed e-mails."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:
                receiver.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname=HOST, port=self.port)
        self._controller.start()

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def close(self) -> None:
        self._controller.stop()
