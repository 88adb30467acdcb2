# Test stand-in for umqtt.simple: a client talking to an in-memory broker.
#
# Not shipped to boards (they get the real one with ``mip install umqtt.simple``).
# ``broker`` keeps what was published, retained messages, and the credentials it accepts.
# A test with more than one broker puts them in ``brokers`` by host; any other host is ``broker``.



class MQTTException(Exception):
    pass


class Broker:
    def __init__(self):
        self.up = True
        self.users = {}          # user -> password; empty: refuse everyone
        self.published = []      # (topic, payload bytes, retain, qos)
        self.retained = {}
        self.queued = []         # (topic, payload) waiting for the connected client
        self.client = None
        self.connects = 0
        self.tries = 0           # connects tried, whether they worked or not

    def deliver(self, topic, payload, retain=False):
        # Something the gateway sends to the device.
        if retain:
            self.retained[topic] = payload
        if self.client is not None and topic in self.client.subscribed:
            self.queued.append((topic, payload))

    def _store(self, topic, payload, retain, qos):
        if isinstance(payload, str):
            payload = payload.encode()
        self.published.append((topic, payload, retain, qos))
        if retain:
            self.retained[topic] = payload

    def go_down(self):
        # The broker stops; it sends the connected client's last will first.
        if self.client is not None and self.client.lw_topic:
            self._store(self.client.lw_topic, self.client.lw_msg, self.client.lw_retain, self.client.lw_qos)
        self.client = None
        self.up = False

    def on(self, topic):
        return [p for t, p, r, q in self.published if t == topic]


broker = Broker()
brokers = {}


class _Sock:
    def settimeout(self, seconds):
        pass

    def close(self):
        pass


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.client_id, self.user, self.pswd, self.keepalive = client_id, user, password, keepalive
        self.cb = None
        self.sock = None
        self.lw_topic = self.lw_msg = None
        self.lw_retain, self.lw_qos = False, 0
        self.subscribed = []
        self.broker = brokers.get(server, broker)

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.lw_topic, self.lw_msg, self.lw_retain, self.lw_qos = topic, msg, retain, qos

    def connect(self, clean_session=True, timeout=None):
        broker = self.broker
        broker.tries += 1
        if not broker.up:
            raise OSError(113)  # EHOSTUNREACH
        if broker.users.get(self.user) != self.pswd:
            raise MQTTException(5)  # not authorised
        broker.connects += 1
        broker.client = self
        self.sock = _Sock()
        return False

    def _check(self):
        if self.broker.client is not self or not self.broker.up:
            raise OSError(104)  # ECONNRESET

    def publish(self, topic, msg, retain=False, qos=0):
        self._check()
        self.broker._store(topic, msg, retain, qos)

    def subscribe(self, topic, qos=0):
        self._check()
        self.subscribed.append(topic)
        if topic in self.broker.retained:
            self.broker.queued.append((topic, self.broker.retained[topic]))

    def ping(self):
        self._check()

    def check_msg(self):
        self._check()
        queued = self.broker.queued
        for i in range(len(queued)):
            topic, payload = queued[i]
            if topic in self.subscribed:
                queued.pop(i)
                self.cb(topic.encode(), payload)
                return

    def disconnect(self):
        self.broker.client = None
