"""How every jisaku part connects to the broker: the address and a paho client set up alike.

Devices, the gateway, the dashboard and the command line all talk MQTT 3.1.1 at QoS 1 with
their own username and secret; this is the one place that says how.

Example::

    broker = BrokerAddress.parse("mqtt://127.0.0.1:1883")
    client = new_client("jisaku-snow-1", "snow-1", secret, broker)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()

A device may know more than one broker (a standby box, the nodes of a cluster); it is
given them as one text, the first preferred::

    BrokerAddress.parse_list("mqtt://box-a:1883 mqtt://box-b:1883")   # or comma separated
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

__all__ = ["BrokerAddress", "new_client", "spread_reconnects"]

SEVERAL = "mqtt://box-a:1883 mqtt://box-b:1883"  # how several addresses are written, for messages


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        """``mqtt://host:1883`` or ``mqtts://host:8883``."""
        if len(_split(url)) > 1:
            # The gateway, the dashboard and the command line talk to the broker of their own box.
            raise ValueError(f"broker {url!r} is several addresses; only a device takes more than one"
                             " (jisaku device run, config.json): give one here, e.g. mqtt://127.0.0.1:1883")
        try:
            parts = urlsplit(url if "://" in url else f"mqtt://{url}")
            port = parts.port
        except ValueError:  # a port that is not a number
            parts, port = None, None
        # A host name, an IPv4 address or an IPv6 one: a ";" or "|" is a list written wrongly.
        if parts is None or parts.scheme not in ("mqtt", "mqtts") or not re.fullmatch(r"[\w.:-]+", parts.hostname or ""):
            raise ValueError(f"broker {url!r} should look like mqtt://host:1883 or mqtts://host:8883")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883), tls)

    @classmethod
    def parse_list(cls, urls: str | list[str]) -> list["BrokerAddress"]:
        """One address or several, the first preferred: ``"mqtt://box-a:1883 mqtt://box-b:1883"``
        (spaces or commas between them), or a list of them (device.toml, config.json)."""
        texts = [urls] if isinstance(urls, str) else urls
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise ValueError(f"broker {urls!r} should be text such as \"{SEVERAL}\"")
        items = [item for text in texts for item in _split(text)]
        if not items:
            raise ValueError(f"no broker address given: write one, mqtt://host:1883, or several, {SEVERAL}")
        addresses = []
        for item in items:
            try:
                addresses.append(cls.parse(item))
            except ValueError:
                raise ValueError(f"broker address {item!r} should look like mqtt://host:1883 or"
                                 f" mqtts://host:8883; several are written {SEVERAL}") from None
        if len({address.tls for address in addresses}) > 1:
            # One client, set up once: TLS or not is the same for every address.
            raise ValueError(f"brokers {' '.join(map(str, addresses))} mix mqtt:// and mqtts://:"
                             " use one kind for all of them")
        if len(set(addresses)) < len(addresses):
            raise ValueError(f"broker {' '.join(map(str, addresses))} names the same address twice")
        return addresses

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _split(text: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]


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
    spread_reconnects(client)
    return client


def spread_reconnects(client: mqtt.Client) -> None:
    """Wait 1-3 s before the first try to reconnect, doubling up to 30 s; also starts the pauses anew.

    The first pause is a little different on every device, so after a broker restart
    devices come back spread over a few seconds.
    """
    client.reconnect_delay_set(min_delay=random.uniform(1, 3), max_delay=30)
