"""The board's link to the MQTT broker (umqtt.simple), with an outbox that waits out outages.

``publish_reading`` and ``publish_event`` only put the message in the outbox and
return: the sensor loop never waits for the network. ``poll()``, called on
every turn of the main loop, does the rest, one small step at a time:

- (re)connects with the device's own id and secret, and a last will, so the
  broker announces ``offline`` (retained) if the board vanishes; waits longer
  after each failed try (2 s ... 60 s, with jitter);
- says ``online`` (retained, with fw, ip, queued, dropped) and listens on the
  device's ``config`` and ``cmd`` topics, answering on ``config/ack`` and ``cmd/ack``;
- sends the outbox oldest first, a batch per MQTT message, and forgets a batch
  only after the broker acknowledged it (QoS 1: umqtt waits for the PUBACK);
- pings the broker so it knows the board is alive (keepalive);
- moves to the next broker when its broker is gone, if config.json names several.

A board with outputs (config.json has "outputs") keeps a persistent session
(clean_session off, a fixed client id): a command sent while it was away for a
moment is delivered when it is back, and its ``expires`` guards the late ones.
Its app answers commands whole through ``on_request(command, payload)`` (the
answer's fields, with a ``code`` when refused; None to leave it to the ordinary
commands).

Example::

    link = Link(boot, Outbox(), settings, app_commands, on_settings=app.apply_settings)
    link.publish_reading({"depth_cm": 37.0})
    while True:
        link.poll(wifi.connected())
"""

import json
import random
import time

import clock
import config
import protocol

FW_VERSION = "0.1.0"
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 5   # below the watchdog's 8 s, so a dead broker cannot reset the board
ACK_TIMEOUT_S = 5
BACKLOG_GRACE_MS = 2000  # after a broker restart the gateway subscribes again first
FIRST_BACKOFF_MS = 2000
MAX_BACKOFF_MS = 60000
# With more than one broker in config.json (a standby box, a cluster's nodes) the board
# starts with the first that answers. When the one it was using is gone and has not taken
# it back after MOVE_AFTER_FAILED_TRIES tries (2 + 4 + 8 s of pauses; a restart is back
# within them), it moves to the next, round the list, and tries it after the next pause
# (16 s): about half a minute in all. A broker that never let the board in since it came
# gets one try. Nothing is lost: a batch leaves the outbox only once a broker acknowledged
# it, and one sent again to the next broker is kept once by the gateway.
MOVE_AFTER_FAILED_TRIES = 3
INBOX = 4               # config/cmd messages waiting to be handled
VERSION = None  # the app version this board runs, set by versions.py; None: as jisaku flash put on


class Link:
    def __init__(self, boot, outbox, settings=None, commands=None, on_settings=None, info=None,
                 client_class=None):
        self.boot = boot          # config.json: an app with outputs finds them here
        self.device_id = boot["device_id"]
        self.secret = boot["secret"]
        self.brokers = config.brokers(boot["broker"])  # [(host, port), ...], the first preferred
        self.at = 0              # which of them the board uses
        self.tries_left = 1      # failed tries before moving on (more once this broker worked)
        self.outbox = outbox
        self.settings = settings
        self.commands = commands or {}
        self.on_settings = on_settings
        self.on_request = None    # sees every command whole first (a board with outputs)
        self.persistent = bool(boot.get("outputs"))
        self.info = info          # a function returning more status, e.g. {"ip": ...}
        self.client_class = client_class
        self.client = None
        self.inbox = []
        self.connected_at = 0
        self.last_sent = 0
        self.next_try = clock.ticks_ms()
        self.backoff_ms = FIRST_BACKOFF_MS
        self.topic_status = protocol.topic(self.device_id, "status")
        self.topic_config = protocol.topic(self.device_id, "config")
        self.topic_cmd = protocol.topic(self.device_id, "cmd")

    # ---------------------------------------------------------------- what the app calls

    def publish_reading(self, values):
        """Queue one reading, e.g. ``{"depth_cm": 37.0}``; returns its seq."""
        protocol.check_values(values)  # a wrong name or value fails here, not at the gateway
        return self._put("data", {"v": values})

    def publish_event(self, name, values=None):
        """Queue one event, e.g. ``("tray_left", {"waited_s": 31.0})``; returns its seq."""
        protocol.event(0, name, values)
        message = {"event": name}
        if values:
            message["v"] = values
        return self._put("event", message)

    def _put(self, channel, message):
        now = clock.unix()
        if now is None:
            return self.outbox.put(channel, message, taken=clock.board_time())
        message["ts"] = now
        return self.outbox.put(channel, message)

    def status(self):
        # runs_on and version: which update bundles fit this device (docs/updates.md)
        info = {"fw": FW_VERSION, "runs_on": "board", "version": VERSION, "queued": len(self.outbox),
                "dropped": self.outbox.dropped}
        if self.info:
            info.update(self.info())
        return info

    # ---------------------------------------------------------------- the loop's part

    def poll(self, network_up=True):
        """One small step of the network work; returns at once when there is nothing to do."""
        if self.client is None:
            self.outbox.save()  # offline: what waits goes to flash, a few at a time
            if network_up and time.ticks_diff(clock.ticks_ms(), self.next_try) >= 0:
                self._connect()
            return
        try:
            self.client.check_msg()
            while self.inbox:
                topic, payload = self.inbox.pop(0)
                self._handle(topic, payload)
            if clock.elapsed_ms(self.connected_at) >= BACKLOG_GRACE_MS and self._send_batch():
                return
            if clock.elapsed_ms(self.last_sent) >= KEEPALIVE_S * 500:
                self.client.ping()
                self.last_sent = clock.ticks_ms()
        except Exception as err:  # OSError or MQTTException: the connection is gone
            print("jisaku: lost the broker (%r); readings wait in the outbox" % (err,))
            self._lost()

    def _connect(self):
        if self.client_class is None:
            from umqtt.simple import MQTTClient  # installed with: mip install umqtt.simple
            self.client_class = MQTTClient
        host, port = self.brokers[self.at]
        client = self.client_class("jisaku-" + self.device_id, host, port=port,
                                   user=self.device_id, password=self.secret, keepalive=KEEPALIVE_S)
        client.set_callback(self._on_message)
        client.set_last_will(self.topic_status, protocol.encode_status(protocol.OFFLINE), retain=True, qos=1)
        try:
            clean = not self.persistent  # persistent: commands wait in the broker while we are away
            try:
                client.connect(clean, timeout=CONNECT_TIMEOUT_S)
            except TypeError:  # an older umqtt.simple without the timeout
                client.connect(clean)
            self.client = client
            client.publish(self.topic_status, protocol.encode_status(protocol.ONLINE, self.status()), True, 1)
            client.subscribe(self.topic_config, 1)
            client.subscribe(self.topic_cmd, 1)
            client.subscribe(protocol.topic(self.device_id, "update"), 1)
        except Exception as err:  # OSError, or MQTTException when the broker refuses the id/secret
            print("jisaku: cannot reach the broker at %s:%s (%r); trying again later" % (host, port, err))
            self._lost()
            self.tries_left -= 1
            if self.tries_left < 1 and len(self.brokers) > 1:
                # The pauses keep growing: boards whose brokers are all gone do not knock ever faster.
                self.at = (self.at + 1) % len(self.brokers)
                self.tries_left = 1
                print("jisaku: moving on to the broker at %s:%s" % self.brokers[self.at])
            return
        self.tries_left = MOVE_AFTER_FAILED_TRIES
        self.backoff_ms = FIRST_BACKOFF_MS
        self.connected_at = self.last_sent = clock.ticks_ms()

    def _lost(self):
        client, self.client = self.client, None
        if client is not None:
            try:
                client.sock.close()
            except Exception:
                pass
        # Wait longer after each failure; the random part spreads a hundred boards out.
        self.next_try = time.ticks_add(clock.ticks_ms(), self.backoff_ms + random.getrandbits(10))
        self.backoff_ms = min(self.backoff_ms * 2, MAX_BACKOFF_MS)

    def _publish(self, channel, payload, qos=1):
        sock = getattr(self.client, "sock", None)
        if sock is not None:
            sock.settimeout(ACK_TIMEOUT_S)  # check_msg left it blocking for ever
        if isinstance(payload, str):
            payload = payload.encode()  # umqtt counts the length: bytes, not characters
        self.client.publish(protocol.topic(self.device_id, channel), payload, False, qos)
        self.last_sent = clock.ticks_ms()

    def _send_batch(self):
        batch = self.outbox.next_batch()
        if batch is None:
            return False
        channel, lines = batch
        fresh = self.outbox.from_this_boot()
        texts = [self._message_text(line, fresh) for line in lines]
        payload = texts[0] if len(texts) == 1 else "[" + ",".join(texts) + "]"
        self._publish(channel, payload)  # returns once the broker acknowledged (PUBACK)
        self.outbox.remove(batch)
        return True

    def _message_text(self, line, fresh):
        """The JSON to send for one outbox line: a message without ts gets ts or age now."""
        _, taken, text = line.split(" ", 2)
        if taken == "-" or not fresh:
            # A reading from before a reset without a clock: its age is unknown,
            # so the gateway stamps it on arrival.
            return text
        taken = int(taken)
        now = clock.unix()
        if now is not None:
            return '{"ts":%d,%s' % (taken + clock.offset, text[1:])
        return '{"age":%d,%s' % (max(0, clock.board_time() - taken), text[1:])

    # ---------------------------------------------------------------- config and commands

    def _on_message(self, topic, payload):
        # Runs inside umqtt while it waits: only note it, answer after (no publish in here).
        if len(self.inbox) < INBOX:
            self.inbox.append((topic, payload))

    def _handle(self, topic, payload):
        if isinstance(topic, bytes):
            topic = topic.decode()
        if topic.endswith("/update"):
            if payload:  # empty: the offer was withdrawn
                import versions  # only now: the steady loop does not carry the updater
                versions.offered(self, payload)
            return
        try:
            request = protocol.decode_object(payload)
        except protocol.ProtocolError as err:
            print("jisaku: ignored a message on", topic, ":", err)
            return
        if topic == self.topic_config:
            self._answer_config(request)
        elif topic == self.topic_cmd:
            self._answer_command(request, payload)

    def _answer_config(self, request):
        if self.settings is None:
            ack = {"rev": request.get("rev"), "ok": False, "reason": "this device takes no settings"}
        else:
            ack = self.settings.apply(request)
            if ack["ok"] and self.on_settings:
                self.on_settings(self.settings.values)
        if not ack["ok"]:
            print("jisaku: refused config rev", ack["rev"], ":", ack["reason"])
        self._publish("config/ack", json.dumps(ack))

    def _answer_command(self, request, payload=None):
        do, args = request.get("do"), request.get("args") or {}
        # A board with outputs answers whole (the payload too: it reads expires exactly).
        answer = self.on_request and self.on_request(request, payload)
        if answer:
            answer["id"] = request.get("id")
            self._publish("cmd/ack", json.dumps(answer))
            return
        if not isinstance(do, str) or not isinstance(args, dict):
            ok, result = False, "a command needs do (text) and args (an object, optional)"
        elif do == "report_status":
            ok, result = True, self.status()
        elif do in self.commands:
            try:
                ok, result = self.commands[do](args)
            except Exception as err:  # a bug in a command must not stop the board
                ok, result = False, "the device failed: %r" % err
        else:
            ok, result = False, "unknown command %r" % do
        ack = {"id": request.get("id"), "ok": ok}
        ack["result" if ok else "reason"] = result
        self._publish("cmd/ack", json.dumps(ack))
