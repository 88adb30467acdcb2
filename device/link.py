"""A device's connection to the broker.

The link never blocks the sensor loop: a reading is written to the outbox on
disk and the call returns. A sender thread publishes the outbox, oldest first,
whenever the broker is reachable, and forgets a batch only once the broker has
acknowledged it. paho-mqtt's own thread connects and reconnects after a lost
network, waiting longer each time, up to 30 s; the first wait is a little
different on every device, so a hundred boards do not all knock at once after
the broker restarts.

The device may know more than one broker (``"mqtt://box-a:1883 mqtt://box-b:1883"``: a
standby box, the nodes of a cluster). It starts with the first that answers. When the
broker it was using is gone and has not taken it back after ``MOVE_AFTER_FAILED_TRIES``
tries (about 7-21 s with the growing pauses), it moves to the next address, round the
list, and stays there until that one is lost in turn. Nothing is lost by moving: a batch
leaves the outbox only once a broker acknowledged it, so a batch whose acknowledgement
was lost is sent again to the next broker, and the gateway keeps one of each
(device, ts, seq). The device subscribes again on the new broker (a persistent session
lives in one broker) and its last will goes with each connection.

Operators' settings arrive on the retained ``config`` topic and commands on
``cmd``; the device answers each on ``config/ack`` and ``cmd/ack``. Update offers arrive on
the retained ``update`` topic and go to ``on_update(offer)`` (None: the offer was withdrawn),
which hands them to the updater's own thread (device/updater.py).

A device that switches things (``persistent=True``: it has outputs) keeps a persistent
MQTT session (clean_session off, a fixed client id), so a command sent while it was away
for a moment is delivered when it is back; the command's ``expires`` guards the ones
that arrive too late (jisaku.firmware.lib.switchboard refuses them). Such a device also
answers commands whole: ``on_request(command)`` sees the command with its ``id`` and
``expires`` and returns the answer's fields, ``{"ok": False, "code": "interlock",
"reason": ...}`` say, or None to leave it to ``on_command``.

Pictures (a snow camera's snapshots) do not go over MQTT: ``publish_picture`` keeps
them in a picture outbox of their own (``<state_dir>/pictures``) and a second thread
uploads them over HTTP to the town's server (docs/protocol.md, "## Pictures"). That
thread starts with the first picture, so a device that sends none is unchanged.

Example::

    link = DeviceLink("snow-1", secret, "mqtt://127.0.0.1:1883", state_dir=Path("data/devices/snow-1"),
                      server_url="http://192.168.1.10:8000")      # only needed for pictures
    link.start()
    link.publish_reading({"depth_cm": 12.5})
    link.publish_picture(jpeg_bytes)
    link.stop()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from jisaku.contract import protocol
from jisaku.contract.mqtt import BrokerAddress, new_client, spread_reconnects

from .outbox import Outbox
from .picture_outbox import PictureOutbox
from .picture_sender import PictureSender

log = logging.getLogger(__name__)


# What a handler of config or a command returns: (ok, what to say back).
Answer = tuple[bool, Any]
# How long the sender waits for the broker to acknowledge one batch.
ACK_TIMEOUT_S = 10.0
# After (re)connecting, wait this long before sending: after a broker restart the gateway
# (retrying every 0.5 s) is subscribed again before the first reading of a backlog arrives.
BACKLOG_GRACE_S = 2.0
PICTURES_FOLDER = "pictures"
# With more than one broker address: how many tries a broker that was working gets to take
# the device back before it moves to the next address. A restart of the broker is back
# within them; a dead box is left after 1-3 + 2-6 + 4-12 s of pauses, about 7-21 s.
# A broker that never answered since the device came to it gets one try.
MOVE_AFTER_FAILED_TRIES = 3
KEEPALIVE_S = 30


class NoServerError(RuntimeError):
    """A picture to send, but no HTTP address of the town's server to send it to."""


class DeviceLink:
    """Publishes one device's readings, events and status; receives its config and commands.

    ``on_config(settings)`` and ``on_command(do, args)`` run on the network thread
    and return ``(ok, reason_or_result)``; the link sends the acknowledgement.
    """

    def __init__(self, device_id: str, secret: str, broker_url: str | list[str], state_dir: Path,
                 on_config: Callable[[dict[str, Any]], Answer] | None = None,
                 on_command: Callable[[str, dict[str, Any]], Answer] | None = None,
                 outbox_bytes: int = 5_000_000, info: dict[str, Any] | None = None,
                 server_url: str | None = None, pictures_bytes: int = 50_000_000,
                 persistent: bool = False):
        self.device_id = device_id
        # One address, or several to move between (the first preferred); self.broker is the one in use.
        self.brokers = BrokerAddress.parse_list(broker_url)
        self.broker = self.brokers[0]
        self._failed_tries = 0      # tries that failed since the last connection
        self._worked_here = False   # connected to self.broker since coming to it
        self.server_url = server_url   # the dashboard's address, where pictures go (HTTP)
        self.pictures_bytes = pictures_bytes
        self._secret = secret          # the picture sender logs in with it too; never logged
        self._state_dir = Path(state_dir)
        self._pictures_lock = threading.Lock()
        self.pictures: PictureOutbox | None = None          # opened with the first picture
        self._picture_sender: PictureSender | None = None
        self.on_config = on_config
        self.on_command = on_command
        # Sees every command whole first (a device with outputs); None: only on_command.
        self.on_request: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
        # Update offers (device/updater.py): the offer, or None when it was withdrawn. Must return at once.
        self.on_update: Callable[[dict[str, Any] | None], None] | None = None
        # Set once the broker acknowledged a reading taken since this link was made: the
        # "it works" an update's trial waits for (a backlog from before does not count).
        self.reading_delivered = threading.Event()
        self._first_seq: int | None = None
        self.persistent = persistent
        self.info = info or {}
        self.connected = threading.Event()
        self.outbox = Outbox(Path(state_dir) / "outbox.db", max_bytes=outbox_bytes)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._connected_at = 0.0
        self._sender = threading.Thread(target=self._send_loop, name=f"{device_id}-sender", daemon=True)
        # The client id is fixed, so a persistent session (persistent=True) is found again.
        self._client = new_client(f"jisaku-{device_id}", device_id, secret, self.broker,
                                  clean_session=not persistent)
        self._client.will_set(
            protocol.topic(device_id, "status"), protocol.encode_status(protocol.STATUS_OFFLINE), qos=1, retain=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message

    @property
    def state_dir(self) -> Path:
        """The device's folder for what must outlive a reboot (an app may keep its own file there)."""
        return self._state_dir

    def start(self) -> None:
        """Start connecting and sending in the background; returns at once."""
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        self._sender.start()
        if (self._state_dir / PICTURES_FOLDER).is_dir() and self.server_url:
            self._open_pictures()  # pictures left from before a restart go without waiting for a new one

    def stop(self) -> None:
        """Say goodbye (status offline) and disconnect. What is not sent stays in the outbox."""
        self._stopping.set()
        self._wake.set()
        if self._sender.is_alive():
            self._sender.join(timeout=ACK_TIMEOUT_S + 2)
        if self.connected.is_set():
            info = self._client.publish(
                protocol.topic(self.device_id, "status"),
                protocol.encode_status(protocol.STATUS_OFFLINE), qos=1, retain=True,
            )
            try:
                info.wait_for_publish(timeout=2)
            except RuntimeError:
                pass  # the link dropped meanwhile: the broker sends the last will instead
        self._client.disconnect()
        self._client.loop_stop()
        self.outbox.close()
        if self._picture_sender is not None:
            self._picture_sender.stop()

    def publish_reading(self, values: dict[str, Any], ts: float | None = None) -> None:
        """Keep a reading for sending; returns at once, network or not."""
        seq = self.outbox.put("data", {"ts": round(ts if ts is not None else time.time(), 3), "v": values})
        if self._first_seq is None:
            self._first_seq = seq
        self._wake.set()

    def publish_event(self, name: str, values: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"ts": round(time.time(), 3), "event": name}
        if values:
            message["v"] = values
        self.outbox.put("event", message)
        self._wake.set()

    def publish_picture(self, data: bytes, content_type: str = "image/jpeg", ts: float | None = None) -> int:
        """Keep a picture (JPEG or PNG bytes) for uploading; returns its ``seq`` at once, network or not."""
        if not self.server_url:
            raise NoServerError(
                f"{self.device_id}: pictures go to the town's server over HTTP, but its address is not known:"
                f' set [device] server = "http://192.168.1.10:8000" in device.toml, or JISAKU_SERVER')
        pictures, sender = self._open_pictures()
        seq = pictures.put(data, content_type, ts if ts is not None else time.time())
        sender.wake()
        return seq

    def _open_pictures(self) -> tuple[PictureOutbox, PictureSender]:
        with self._pictures_lock:
            if self.pictures is None:
                self.pictures = PictureOutbox(self._state_dir / PICTURES_FOLDER, max_bytes=self.pictures_bytes)
                self._picture_sender = PictureSender(self.device_id, self._secret, self.server_url, self.pictures)
                if not self._stopping.is_set():
                    self._picture_sender.start()
            return self.pictures, self._picture_sender

    # ------------------------------------------------------------ sender thread

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            if not self.connected.wait(timeout=1):
                continue
            grace = self._connected_at + BACKLOG_GRACE_S - time.monotonic()
            if grace > 0:
                self._stopping.wait(timeout=grace)
                continue
            batch = self.outbox.next_batch()
            if batch is None:
                self._wake.wait(timeout=1)
                self._wake.clear()
                continue
            payload = json.dumps(batch.payload, separators=(",", ":"), ensure_ascii=False).encode()
            message = self._client.publish(protocol.topic(self.device_id, batch.channel), payload, qos=1)
            try:
                message.wait_for_publish(timeout=ACK_TIMEOUT_S)
                published = message.is_published()
            except (RuntimeError, ValueError):
                # Not connected (any more): paho says so by raising, also from is_published
                # when the link dropped just as it sent. It stays in the outbox for the next try.
                published = False
            if published:
                self.outbox.remove(batch)
                if batch.channel == "data" and self._first_seq is not None and \
                        any(m.get("seq", 0) >= self._first_seq for m in batch.messages):
                    self.reading_delivered.set()
            else:
                self._stopping.wait(timeout=1)

    # ------------------------------------------------------------ paho callbacks (network thread)

    def _status(self) -> bytes:
        info = {**self.info, "queued": len(self.outbox), "dropped": self.outbox.dropped}
        if self.pictures is not None:  # only a device that sends pictures says how they fare
            info.update(pictures_queued=len(self.pictures), pictures_dropped=self.pictures.dropped,
                        pictures_refused=self.pictures.refused)
        return protocol.encode_status(protocol.STATUS_ONLINE, info)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("%s: the broker at %s refused the connection: %s (check the device id and secret)",
                      self.device_id, self.broker, reason_code)
            return  # paho closes the connection next: _on_disconnect counts the failed try
        self._failed_tries = 0
        self._worked_here = True
        log.info("%s: connected to %s", self.device_id, self.broker)
        client.publish(protocol.topic(self.device_id, "status"), self._status(), qos=1, retain=True)
        client.subscribe([(protocol.topic(self.device_id, "config"), 1), (protocol.topic(self.device_id, "cmd"), 1),
                          (protocol.topic(self.device_id, "update"), 1)])
        self._connected_at = time.monotonic()
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            if not self._stopping.is_set():
                log.warning("%s: lost the broker at %s (%s); readings wait in the outbox until it is back",
                            self.device_id, self.broker, reason_code)
            self.connected.clear()
        else:  # a try that reached the broker but did not end connected (refused, or cut off)
            self._try_failed()

    def _on_connect_fail(self, client, userdata) -> None:
        self._try_failed()  # the broker did not answer at all

    def _try_failed(self) -> None:
        """After a failed try to connect: maybe move to the next broker address (paho tries it next)."""
        self._failed_tries += 1
        allowed = MOVE_AFTER_FAILED_TRIES if self._worked_here else 1
        if len(self.brokers) == 1 or self._failed_tries < allowed or self._stopping.is_set():
            return
        before, self.broker = self.broker, self.brokers[(self.brokers.index(self.broker) + 1) % len(self.brokers)]
        log.warning("%s: moving from %s to %s: %s", self.device_id, before, self.broker,
                    f"it has not taken the device back after {self._failed_tries} tries" if self._worked_here
                    else "the device could not connect there")
        if self._worked_here:
            spread_reconnects(self._client)  # the pauses start short again, at the new broker
        self._failed_tries = 0
        self._worked_here = False
        # Called between paho's tries, with no connection open: its next try goes to the new address.
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=KEEPALIVE_S)

    def _on_message(self, client, userdata, message) -> None:
        channel = message.topic.rsplit("/", 1)[-1]
        if channel == "update" and not message.payload:  # an empty retained message withdraws the offer
            if self.on_update is not None:
                self._safely(self.on_update, None)
            return
        try:
            request = protocol.decode_object(message.payload)
        except protocol.ProtocolError as err:
            log.warning("%s: ignored a %s message: %s", self.device_id, channel, err)
            return
        if channel == "config":
            self._answer_config(request)
        elif channel == "cmd":
            self._answer_command(request)
        elif channel == "update" and self.on_update is not None:
            self._safely(self.on_update, request)

    def _answer_config(self, config: dict[str, Any]) -> None:
        rev = config.get("rev")
        settings = {key: value for key, value in config.items() if key != "rev"}
        if type(rev) is not int:
            ok, reason = False, "config needs a whole-number rev"
        elif self.on_config is None:
            ok, reason = False, "this device takes no settings"
        else:
            ok, reason = self._safely(self.on_config, settings)
        ack: dict[str, Any] = {"rev": rev, "ok": ok}
        if not ok:
            ack["reason"] = str(reason)
            log.warning("%s: refused config rev %s: %s", self.device_id, rev, reason)
        self._client.publish(protocol.topic(self.device_id, "config/ack"), json.dumps(ack), qos=1)

    def _answer_command(self, command: dict[str, Any]) -> None:
        do, args = command.get("do"), command.get("args") or {}
        ok, fields = self._safely(self._whole, command) if self.on_request is not None else (None, None)
        if ok is not None:  # the device's own answer: ok and result, or ok, code and reason
            if not isinstance(fields, dict):
                fields = {"reason": str(fields)}  # on_request itself failed
            ack = {"id": command.get("id"), "ok": ok, **fields}
            self._client.publish(protocol.topic(self.device_id, "cmd/ack"), json.dumps(ack, default=str), qos=1)
            return
        if not isinstance(do, str) or not isinstance(args, dict):
            ok, result = False, "a command needs do (text) and args (an object, optional)"
        elif do == "report_status":
            ok, result = True, json.loads(self._status())
        elif self.on_command is None:
            ok, result = False, f"unknown command {do!r}"
        else:
            ok, result = self._safely(self.on_command, do, args)
        ack = {"id": command.get("id"), "ok": ok, ("result" if ok else "reason"): result}
        self._client.publish(protocol.topic(self.device_id, "cmd/ack"), json.dumps(ack, default=str), qos=1)

    def _whole(self, command: dict[str, Any]) -> tuple[bool | None, dict[str, Any]]:
        answer = self.on_request(command)
        if answer is None:
            return None, {}
        return answer["ok"], {key: value for key, value in answer.items() if key != "ok"}

    def _safely(self, handler: Callable[..., Answer], *args: Any) -> Answer:
        try:
            return handler(*args)
        except Exception as err:  # a bug in a handler must not take the network thread down
            log.exception("%s: handler failed", self.device_id)
            return False, f"the device failed: {err}"
