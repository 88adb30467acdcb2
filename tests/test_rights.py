"""Who may publish and read what (contract/rights.py), and both brokers enforcing exactly that.

The table is written once, in `jisaku.contract.rights`; the embedded broker asks it for every
publish, subscription and delivery, and Mosquitto gets an ACL file generated from it. The
test at the end runs one table of cases against a real Mosquitto and the embedded broker,
with real clients, and checks that each does what the rights say.
"""

from __future__ import annotations

import pytest

from jisaku.contract import rights

from .test_broker import Broker, broker, linger, peers  # noqa: F401 (broker and peers are fixtures)


def test_rights_table_is_the_wire_contracts_channels() -> None:
    """A device publishes the contract's device channels and reads the gateway's, nothing more."""
    device = {(r.action, r.topic) for r in rights.RIGHTS if r.who == rights.DEVICE}
    assert device == {
        *(("publish", f"jisaku/{{id}}/{c}") for c in ("data", "event", "status", "config/ack", "cmd/ack")),
        ("subscribe", "jisaku/{id}/config"),
        ("subscribe", "jisaku/{id}/cmd"),
        ("subscribe", "jisaku/{id}/update"),
    }
    service = {(r.action, r.topic) for r in rights.RIGHTS if r.who == rights.SERVICE}
    assert service == {("publish", "jisaku/#"), ("subscribe", "jisaku/#")}


@pytest.mark.parametrize(
    ("username", "action", "topic", "allowed"),
    [
        # service accounts: everything under jisaku/, including shared subscriptions
        ("_gateway", "subscribe", "jisaku/#", True),
        ("_gateway", "subscribe", "jisaku/+/data", True),
        ("_gateway", "subscribe", "$share/jisaku/jisaku/+/data", True),
        ("_gateway", "subscribe", "$share/jisaku/jisaku/#", True),
        ("_gateway", "publish", "jisaku/bus-1/config", True),
        ("_dashboard", "publish", "jisaku/bus-1/cmd", True),
        ("_gateway", "subscribe", "#", False),
        ("_gateway", "subscribe", "$SYS/#", False),
        ("_gateway", "subscribe", "$share/jisaku/#", False),
        ("_gateway", "subscribe", "$share//jisaku/#", False),
        ("_gateway", "publish", "other/topic", False),
        ("_gateway", "publish", "jisaku/#", False),
        # devices: write own data/event/status/acks, read own config/cmd
        ("bus-1", "publish", "jisaku/bus-1/data", True),
        ("bus-1", "publish", "jisaku/bus-1/event", True),
        ("bus-1", "publish", "jisaku/bus-1/status", True),
        ("bus-1", "publish", "jisaku/bus-1/config/ack", True),
        ("bus-1", "publish", "jisaku/bus-1/cmd/ack", True),
        ("bus-1", "subscribe", "jisaku/bus-1/config", True),
        ("bus-1", "subscribe", "jisaku/bus-1/cmd", True),
        ("snow.gauge_3", "publish", "jisaku/snow.gauge_3/data", True),
        ("bus-1", "publish", "jisaku/bus-1/config", False),
        ("bus-1", "publish", "jisaku/bus-1/cmd", False),
        ("bus-1", "publish", "jisaku/bus-2/data", False),
        ("bus-1", "publish", "jisaku/bus-1/data/x", False),
        ("bus-1", "publish", "jisaku/bus-1", False),
        ("bus-1", "subscribe", "jisaku/bus-1/data", False),
        ("bus-1", "subscribe", "jisaku/bus-2/config", False),
        ("bus-1", "subscribe", "jisaku/bus-1/#", False),
        ("bus-1", "subscribe", "jisaku/bus-1/+", False),
        ("bus-1", "subscribe", "jisaku/+/config", False),
        ("bus-1", "subscribe", "$share/g/jisaku/bus-2/config", False),
        ("bus-1", "receive", "jisaku/bus-1/config", False),
        # the root itself: "jisaku/#" matches "jisaku" in MQTT (and in Mosquitto's ACL)
        ("_gateway", "publish", "jisaku", True),
        ("bus-1", "publish", "jisaku", False),
        # names that would turn "own topic" into a wildcard or another device's topic
        ("+", "subscribe", "jisaku/+/config", False),
        ("#", "subscribe", "jisaku/#/config", False),
        ("a/b", "publish", "jisaku/a/b/data", False),
        ("", "publish", "jisaku//data", False),
    ],
)
def test_allowed(username: str, action: str, topic: str, allowed: bool) -> None:
    assert rights.allowed(username, action, topic) is allowed


# (who, "publish" or "read", topic): "read" means a message on `topic` reaches `who` when it
# subscribed to exactly that topic. Mosquitto grants every SUBSCRIBE and checks each delivery,
# the embedded broker refuses the SUBSCRIBE already; what arrives is the same.
CASES = [
    ("bus-1", "publish", "jisaku/bus-1/data"),
    ("bus-1", "publish", "jisaku/bus-1/event"),
    ("bus-1", "publish", "jisaku/bus-1/status"),
    ("bus-1", "publish", "jisaku/bus-1/config/ack"),
    ("bus-1", "publish", "jisaku/bus-1/cmd/ack"),
    ("bus-1", "publish", "jisaku/bus-1/config"),
    ("bus-1", "publish", "jisaku/bus-1/cmd"),
    ("bus-1", "publish", "jisaku/bus-2/data"),
    ("bus-1", "publish", "jisaku/bus-1/data/x"),
    ("bus-1", "publish", "jisaku/bus-1"),
    ("bus-1", "publish", "jisaku/_gateway/data"),
    ("bus-1", "publish", "jisaku"),
    ("_gateway", "publish", "jisaku/bus-1/config"),
    ("_gateway", "publish", "jisaku/bus-2/cmd"),
    ("_gateway", "publish", "jisaku/anything/at/all"),
    ("_gateway", "publish", "jisaku"),
    ("_dashboard", "publish", "jisaku/bus-1/cmd"),
    ("bus-1", "read", "jisaku/bus-1/config"),
    ("bus-1", "read", "jisaku/bus-1/cmd"),
    ("bus-1", "read", "jisaku/bus-1/data"),
    ("bus-1", "read", "jisaku/bus-1/config/ack"),
    ("bus-1", "read", "jisaku/bus-2/config"),
    ("bus-1", "read", "jisaku/bus-2/cmd"),
    ("bus-2", "read", "jisaku/bus-2/cmd"),
    ("bus-2", "read", "jisaku/bus-1/cmd"),
    ("_dashboard", "read", "jisaku/bus-1/data"),
    ("_dashboard", "read", "jisaku/bus-2/config"),
    ("_gateway", "read", "jisaku/bus-2/status"),
]

# What each account may certainly publish and read: the markers that end each phase.
OWN_TOPIC = {"bus-1": "jisaku/bus-1/data", "bus-2": "jisaku/bus-2/data",
             "_gateway": "jisaku/_gateway/marker", "_dashboard": "jisaku/_dashboard/marker"}
READABLE = {"bus-1": "jisaku/bus-1/cmd", "bus-2": "jisaku/bus-2/cmd",
            "_gateway": "jisaku/_gateway/marker", "_dashboard": "jisaku/_dashboard/marker"}
SECRETS = {"_gateway": "gateway-secret", "_dashboard": "dashboard-secret",
           "bus-1": "bus-1-secret", "bus-2": "bus-2-secret"}


def test_both_brokers_do_what_the_rights_say(broker: Broker, peers) -> None:
    clients = {who: peers(broker.port, f"rights-{who}", who, secret) for who, secret in SECRETS.items()}
    # Everything published under jisaku/ is seen by a service account (the other one for
    # the dashboard's own publishes).
    for service in ("_gateway", "_dashboard"):
        clients[service].subscribe("jisaku/#")
    for who, topic in READABLE.items():
        if not rights.is_service_account(who):
            clients[who].subscribe(topic)
    # The reads: each reader subscribes to its case topics, which a service account then fills.
    reads = [(i, who, topic) for i, (who, kind, topic) in enumerate(CASES) if kind == "read"]
    for i, who, topic in reads:
        clients[who].subscribe(topic)

    for i, (who, kind, topic) in enumerate(CASES):
        if kind == "publish":
            clients[who].publish(topic, f"case-{i}")
    for i, who, topic in reads:
        writer = "_dashboard" if who == "_gateway" else "_gateway"
        clients[writer].publish(topic, f"case-{i}")
    # Markers last: each client's own marker, then one each reader may read, from its writer.
    for who, topic in OWN_TOPIC.items():
        clients[who].publish(topic, "marker")
    for who, topic in READABLE.items():
        clients["_dashboard" if who == "_gateway" else "_gateway"].publish(topic, "marker")
    for who, topic in READABLE.items():
        assert clients[who].wait_for(topic, "marker"), f"{who} never got its marker"
    for topic in OWN_TOPIC.values():
        assert clients["_gateway"].wait_for(topic, "marker") or clients["_dashboard"].wait_for(topic, "marker")
    linger()

    observed = {}
    for i, (who, kind, topic) in enumerate(CASES):
        if kind == "publish":
            watcher = clients["_gateway" if who == "_dashboard" else "_dashboard"]
            action = rights.PUBLISH
        else:
            watcher = clients[who]
            action = rights.SUBSCRIBE
        got = watcher.received(lambda m, i=i, topic=topic: m.topic == topic and m.payload == f"case-{i}".encode())
        observed[(who, kind, topic)] = (bool(got), rights.allowed(who, action, topic))
    wrong = {case: f"{broker.kind} {'let it through' if seen else 'refused it'}"
             for case, (seen, expected) in observed.items() if seen != expected}
    assert wrong == {}
