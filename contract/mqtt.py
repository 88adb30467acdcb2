"""How every jisaku part connects to the broker: the address and a paho client set up alike.

Devices, the gateway, the dashboard and the command line all talk MQTT 3.1.1 at QoS 1 with
their own username and secret; this is the one place that says how.

Example::

    broker = BrokerAddress.parse("mqtt://127.0.0.1:1883")
    client = new_client("jisaku-snow-1", "snow-1", secret, broker)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

__all__ = ["BrokerAddress", "new_client"]


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        """``mqtt://host:1883`` or ``mqtts://host:8883``."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker {url!r} should look like mqtt://host:1883 or mqtts://host:8883")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def new_client(client_id: str, username: str, password: str, broker: BrokerAddress,
               clean_session: bool = True, client_class: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """A paho client set up the way every jisaku part talks MQTT (3.1.1, QoS 1)."""
    client = client_class(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(username, password)
    if broker.tls:
        client.tls_set()
    # Jitter: after a broker restart, devices come back spread over a few seconds.
    client.reconnect_delay_set(min_delay=random.uniform(1, 3), max_delay=30)
    return client
