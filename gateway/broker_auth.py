"""Who may log in to RabbitMQ, and what they may do there, answered from the registry.

RabbitMQ asks a small HTTP service for every login and every right (its
``rabbitmq_auth_backend_http`` plugin, with ``rabbitmq_auth_backend_cache`` in front so it
asks again only every few seconds). This module is that service. It answers from the
device registry and from ``jisaku.contract.rights.RIGHTS``, the same table the embedded
broker and Mosquitto's ACL come from, so a RabbitMQ cluster needs no account files and no
sync: a device added on the operator pages can log in at once, a revoked one is refused
at its next login and loses its rights within the cache time.

The registry keeps only PBKDF2 hashes of the secrets, which RabbitMQ cannot check itself;
that is why the check is here and not in RabbitMQ's own user database.

What it allows:

- a device logs in over MQTT only (RabbitMQ passes MQTT's client id; an AMQP login has none),
  uses only its own subscription queue (``mqtt-subscription-<client id>qos0/1``) and
  ``amq.topic``, and publishes and reads only its own topics (rights.allowed_routing_key);
- a service account (``_gateway``, ``_dashboard``) uses ``amq.topic``, the gateways' queues (``jisaku-…``) and
  MQTT subscription queues, and everything under ``jisaku/``.

Example::

    auth = BrokerAuth(Registry(Database(Path("data/jisaku.db"))))
    server = auth.serve("127.0.0.1", 8089)      # in a thread; server.shutdown() stops it
    # each node's rabbitmq.conf: auth_http.user_path = http://127.0.0.1:8089/user, ...
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from jisaku.contract import rights

from .rabbitmq import EXCHANGE, QUEUE_PREFIX
from .registry import Registry

log = logging.getLogger(__name__)

ALLOW, DENY = "allow", "deny"
# RabbitMQ's words for an action on a topic, in rights' words.
_TOPIC_ACTIONS = {"write": rights.PUBLISH, "read": rights.SUBSCRIBE}
_MQTT_QUEUE = "mqtt-subscription-"


class BrokerAuth:
    """The answers; ``serve`` puts them on HTTP for RabbitMQ."""

    def __init__(self, registry: Registry):
        self.registry = registry
        # One SQLite connection for all of RabbitMQ's requests, one at a time.
        self._lock = threading.Lock()

    def user(self, username: str, password: str, client_id: str | None) -> bool:
        """May `username` log in? Devices only over MQTT (with a client id)."""
        if not rights.is_service_account(username) and not client_id:
            log.warning("refused %r: a device logs in over MQTT, not AMQP", username)
            return False
        with self._lock:
            ok = self.registry.check_credentials(username, password)
        if not ok:
            log.warning("refused %r: unknown account, revoked, or a wrong secret", username)
        return ok

    def active(self, username: str) -> bool:
        """Whether the account still exists (a device removed or revoked since it logged in: no)."""
        if rights.is_service_account(username):
            return True  # service accounts are never revoked; their secret file is the key
        with self._lock:
            return self.registry.get(username) is not None and not self.registry.is_revoked(username)

    def vhost(self, username: str, vhost: str) -> bool:
        return vhost == "/" and self.active(username)

    def resource(self, username: str, kind: str, name: str, permission: str, client_id: str | None) -> bool:
        """May `username` use exchange or queue `name` (permission configure, write or read)?"""
        if kind == "exchange":
            return name == EXCHANGE and permission in ("write", "read") and self.active(username)
        if kind != "queue":
            return False
        if rights.is_service_account(username):
            # The gateways' queues (jisaku-gateway, a standby's jisaku-standby) and MQTT's.
            return name.startswith((QUEUE_PREFIX, _MQTT_QUEUE))
        # A device: only the queue RabbitMQ's MQTT plugin makes for its own subscriptions.
        return bool(client_id) and name in (f"{_MQTT_QUEUE}{client_id}qos0", f"{_MQTT_QUEUE}{client_id}qos1") \
            and self.active(username)

    def topic(self, username: str, name: str, permission: str, routing_key: str) -> bool:
        """May `username` publish to (write) or read (read) `routing_key` on exchange `name`?"""
        action = _TOPIC_ACTIONS.get(permission)
        return (name == EXCHANGE and action is not None
                and rights.allowed_routing_key(username, action, routing_key) and self.active(username))

    def answer(self, path: str, form: dict[str, str]) -> bool:
        """One request from RabbitMQ: its path and its fields."""
        username = form.get("username", "")
        client_id = form.get("client_id")
        if path == "/user":
            return self.user(username, form.get("password", ""), client_id)
        if path == "/vhost":
            return self.vhost(username, form.get("vhost", ""))
        if path == "/resource":
            return self.resource(username, form.get("resource", ""), form.get("name", ""),
                                 form.get("permission", ""), client_id)
        if path == "/topic":
            return self.topic(username, form.get("name", ""), form.get("permission", ""),
                              form.get("routing_key", ""))
        return False

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """Answer RabbitMQ on http://host:port in a background thread; ``.shutdown()`` stops it."""
        server = ThreadingHTTPServer((host, port), _handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="broker-auth", daemon=True).start()
        return server


def _handler(auth: BrokerAuth) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # RabbitMQ is told to POST (auth_http.http_method = post): secrets never sit in a URL.
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode("utf-8", "replace")).items()}
            self._reply(form)

        def do_GET(self) -> None:
            self._reply({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})

        def _reply(self, form: dict[str, str]) -> None:
            try:
                allowed = auth.answer(urlsplit(self.path).path, form)
            except Exception:  # a locked database: refuse this once, RabbitMQ asks again
                log.exception("could not answer RabbitMQ's %s", urlsplit(self.path).path)
                allowed = False
            body = (ALLOW if allowed else DENY).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # one line per publish would drown the log
            pass

    return Handler
