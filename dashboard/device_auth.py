"""Devices that speak HTTP (phones, cameras) log in with their id and their own secret.

The same secret as on MQTT (``jisaku devices add`` prints it), sent as HTTP Basic
authentication: user name the device id, password the secret.

Example::

    device_id = check_device(registry, "cam-1", request.headers.get("authorization"))
"""

from __future__ import annotations

import base64
import binascii

from fastapi import HTTPException

from jisaku.gateway.registry import Registry

CHALLENGE = {"WWW-Authenticate": 'Basic realm="jisaku"'}


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic …`` header, or None."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def check_device(registry: Registry, device_id: str, authorization: str | None, challenge: bool = True) -> str:
    """``device_id`` if the request carries its secret; else 401, saying what to check (never the secret).

    ``challenge=False`` leaves out ``WWW-Authenticate``: for what web pages fetch, where it
    would make the browser pop up its own login box over the page's.
    """
    headers = CHALLENGE if challenge else None
    basic = basic_credentials(authorization)
    if basic is None or basic[0] != device_id:
        raise HTTPException(401, f"log in as {device_id!r} with its secret (HTTP basic: user {device_id},"
                                 " password the secret jisaku devices add printed)", headers)
    if not registry.check_credentials(device_id, basic[1]):
        raise HTTPException(401, f"wrong secret for {device_id!r} (or no such device): an operator can"
                                 " issue a new one with jisaku devices rotate", headers)
    return device_id
