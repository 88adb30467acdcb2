"""Who may publish and read which topics: the broker side of the security model, written once.

A device may publish only under its own ``jisaku/<its id>/`` (data, event, status and the
two acks) and read only its own ``config`` and ``cmd``, so a stolen device secret cannot
impersonate or eavesdrop on other devices. Service accounts (names starting with ``_``,
such as ``_gateway``) may publish and read anything under ``jisaku/``. Nobody may do
anything else. Both brokers take their rules from ``RIGHTS``: the embedded one calls
``allowed`` for every publish, subscription and delivery, and ``jisaku.gateway.mosquitto``
writes Mosquitto's ACL file from the same table. docs/protocol.md, "Who may do what".

Example::

    from jisaku.contract import rights
    rights.may_publish("bus-1", "jisaku/bus-1/data")        # True
    rights.may_publish("bus-1", "jisaku/bus-2/data")        # False: someone else's topic
    rights.may_subscribe("bus-1", "jisaku/+/config")        # False: other devices' config
    rights.may_subscribe("_gateway", "$share/g/jisaku/#")   # True
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import DEVICE_CHANNELS, GATEWAY_CHANNELS, TOPIC_ROOT

__all__ = ["PUBLISH", "SUBSCRIBE", "DEVICE", "SERVICE", "OWN_ID", "Right", "RIGHTS",
           "is_service_account", "may_publish", "may_subscribe", "allowed", "allowed_routing_key", "ROLES"]

# The two things a client asks a broker for. "subscribe" also covers each delivery: a
# client reads a message only if it may subscribe to that message's topic.
PUBLISH = "publish"
SUBSCRIBE = "subscribe"

# The two kinds of account. A username starting with "_" is a service account; device
# ids cannot start with it (protocol.DEVICE_ID), so no device can pass for one.
DEVICE = "device"
SERVICE = "service"
SERVICE_PREFIX = "_"

# In a right's topic, stands for the account's own username.
OWN_ID = "{id}"


@dataclass(frozen=True)
class Right:
    """One line of the table: `who` may `action` the topics matched by `topic` (a filter)."""

    who: str  # DEVICE or SERVICE
    action: str  # PUBLISH or SUBSCRIBE
    topic: str  # an MQTT topic filter; OWN_ID is replaced by the username


RIGHTS: tuple[Right, ...] = (
    *(Right(DEVICE, PUBLISH, f"{TOPIC_ROOT}/{OWN_ID}/{channel}") for channel in DEVICE_CHANNELS),
    *(Right(DEVICE, SUBSCRIBE, f"{TOPIC_ROOT}/{OWN_ID}/{channel}") for channel in GATEWAY_CHANNELS),
    Right(SERVICE, PUBLISH, f"{TOPIC_ROOT}/#"),
    Right(SERVICE, SUBSCRIBE, f"{TOPIC_ROOT}/#"),
)


def is_service_account(username: str) -> bool:
    """Whether `username` is a service account (the gateway, the dashboard), not a device."""
    return username.startswith(SERVICE_PREFIX)


def _usable_name(username: str) -> bool:
    # A name with MQTT separators or wildcards would turn "its own topic" into someone
    # else's (a device called "+" subscribing to jisaku/+/config), so such names get nothing.
    return bool(username) and not set(username) & set("/+#\0")


def _strip_shared(topic_filter: str) -> str:
    """`$share/<group>/<filter>` -> `<filter>`: the rights are about what is read, not how."""
    parts = topic_filter.split("/", 2)
    if len(parts) == 3 and parts[0] == "$share" and parts[1] and not set(parts[1]) & set("+#"):
        return parts[2]
    return topic_filter


def _covers(granted: str, wanted: str) -> bool:
    """Whether every topic that filter `wanted` matches is also matched by filter `granted`.

    For a topic name (no wildcards) that is plain MQTT matching. A `$…` topic is never
    matched by a filter that starts with a wildcard, and nothing here starts with one.
    """
    granted_levels, wanted_levels = granted.split("/"), wanted.split("/")
    for i, level in enumerate(granted_levels):
        if level == "#":
            return True  # "a/#" matches "a" and everything below it
        if i == len(wanted_levels):
            return False
        if wanted_levels[i] == "#":
            return False  # asks for more levels than `granted` allows
        if level != "+" and level != wanted_levels[i]:
            return False  # a literal level: "+" in `wanted` is wider than it, too
    return len(wanted_levels) == len(granted_levels)


def _may(username: str, action: str, topic_filter: str) -> bool:
    who = SERVICE if is_service_account(username) else DEVICE
    return any(
        _covers(right.topic.replace(OWN_ID, username), topic_filter)
        for right in RIGHTS
        if right.who == who and right.action == action
    )


def may_publish(username: str, topic: str) -> bool:
    """Whether `username` may publish to `topic` (a topic name: wildcards are refused)."""
    if not _usable_name(username) or not topic or set(topic) & set("+#"):
        return False
    return _may(username, PUBLISH, topic)


def may_subscribe(username: str, topic_filter: str) -> bool:
    """Whether `username` may read every topic `topic_filter` matches (`$share/…` included)."""
    if not _usable_name(username) or not topic_filter:
        return False
    return _may(username, SUBSCRIBE, _strip_shared(topic_filter))


def allowed(username: str, action: str, topic: str) -> bool:
    """`may_publish` or `may_subscribe` by name ("publish" / "subscribe"); anything else: False.

    The embedded broker's `authorize` callback has this shape.
    """
    if action == PUBLISH:
        return may_publish(username, topic)
    if action == SUBSCRIBE:
        return may_subscribe(username, topic)
    return False


def allowed_routing_key(username: str, action: str, routing_key: str) -> bool:
    """`allowed`, asked the way RabbitMQ asks it: about an AMQP routing key, not an MQTT topic.

    RabbitMQ's MQTT plugin turns each '/' of a topic into '.' and '+' into '*', and leaves a
    '.' in a device id as it is: ``jisaku/snow.1/data`` becomes ``jisaku.snow.1.data``. So the
    rights are written the same way (the username included) and compared word by word; a
    device still gets only its own topics, a dotted id included.

        allowed_routing_key("snow.1", "publish", "jisaku.snow.1.data")   # True
        allowed_routing_key("snow", "publish", "jisaku.snow.1.data")     # False: snow.1's
    """
    if action not in (PUBLISH, SUBSCRIBE) or not _usable_name(username) or not routing_key:
        return False
    if action == PUBLISH and set(routing_key) & set("*#"):
        return False
    wanted = routing_key.replace(".", "/").replace("*", "+")
    who = SERVICE if is_service_account(username) else DEVICE
    return any(
        _covers(right.topic.replace(OWN_ID, username).replace(".", "/"), wanted)
        for right in RIGHTS
        if right.who == who and right.action == action
    )


# The operator pages' roles (docs/operators.md): an operator looks after devices, settings
# and alerts; a switcher is an operator who may also switch equipment on and off (outputs of
# a switch box, alert rules that switch); an admin may do all of that and look after the accounts.
ROLES = ("operator", "switcher", "admin")
