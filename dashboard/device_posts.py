"""Devices that post the wire contract over HTTP: web pages that act as a device.

A shelter's staff count people on a phone page, and a town with no buttons yet runs its
counter from a web page. Such a page is a device like any other: registered, with its own
secret, and it sends exactly what a board sends on MQTT (docs/protocol.md), to

    POST /api/v1/devices/{id}/data     a reading, or {"readings": [...]}
    POST /api/v1/devices/{id}/event    an event

logged in with HTTP basic (user the device id, password its secret; a 401 here carries no
``WWW-Authenticate``, which would make a browser pop up its own login box over the page's). The dashboard
publishes the message on ``jisaku/<id>/<channel>`` and answers 200 only once the broker
has it (PUBACK), so a page forgets a message only after that; a message sent twice has
the same (ts, seq) and the gateway keeps it once. The page keeps what it could not send
and sends it in order later: see static/device_outbox.js.

    GET /api/v1/devices/{id}/self      what the page needs to start: its name, kind,
                                       settings and newest reading (same login)

Example::

    curl -u shelter-1:SECRET -H 'content-type: application/json' \\
         -d '{"ts": 1764720000.5, "seq": 7, "v": {"count": 12}}' \\
         http://127.0.0.1:8000/api/v1/devices/shelter-1/data
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from jisaku.contract import protocol

from .broker_connection import BrokerUnavailable
from .device_auth import check_device
from .osmand import NO_PUBLISHER, NOT_REACHABLE

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/devices", tags=["devices over HTTP"])

_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}, "examples": {
        "reading": {"value": {"ts": 1764720000.5, "seq": 7, "v": {"count": 12}}},
        "event": {"value": {"ts": 1764720000.5, "seq": 8, "event": "ticket", "v": {"number": 12}}},
    }}},
}
_ANSWERS = {
    200: {"description": "the broker has it: forget it"},
    400: {"description": "it breaks the wire contract: sending it again will not help"},
    401: {"description": "no secret, or the wrong one"},
    413: {"description": "too large"},
    503: {"description": "the broker is not reachable: keep it and try again"},
}


def _check(channel: str, payload: bytes) -> None:
    """Raise 400 with the contract's own words if ``payload`` is not a valid message."""
    try:
        if channel == "data":
            protocol.decode_readings(payload, received_at=time.time())
        else:
            protocol.decode_event(payload, received_at=time.time())
    except protocol.ProtocolError as err:
        raise HTTPException(400, f"{err.reason}: {err}") from None


def _publish(request: Request, device_id: str, channel: str, payload: bytes) -> None:
    publisher = getattr(request.app.state, "phones", None)
    if publisher is None:
        raise HTTPException(503, NO_PUBLISHER)
    check_device(request.app.state.registry, device_id, request.headers.get("authorization"), challenge=False)
    _check(channel, payload)
    try:
        publisher.publish(device_id, payload, channel)
    except BrokerUnavailable as err:
        log.warning("could not publish %s of %s: %s", channel, device_id, err)
        raise HTTPException(503, NOT_REACHABLE) from None


@router.post("/{device_id}/{channel}", responses=_ANSWERS, openapi_extra={"requestBody": _BODY},
             summary="A device's reading or event, sent over HTTP (a staff page, a phone)")
async def post_message(request: Request, device_id: str, channel: Literal["data", "event"]) -> dict[str, Any]:
    body = await request.body()
    if len(body) > protocol.MAX_PAYLOAD_BYTES:
        raise HTTPException(413, f"at most {protocol.MAX_PAYLOAD_BYTES} bytes a message")
    await run_in_threadpool(_publish, request, device_id, channel, body)
    return {"ok": True}


@router.get("/{device_id}/self", responses={401: _ANSWERS[401]},
            summary="For a device's own page: its name, kind, the operators' settings and its newest reading")
def device_self(request: Request, device_id: str) -> dict[str, Any]:
    registry, store = request.app.state.registry, request.app.state.store
    check_device(registry, device_id, request.headers.get("authorization"), challenge=False)
    device = registry.get(device_id)
    config = store.config_state(device_id) or {}
    latest = next((d for d in store.latest(public_only=False) if d["id"] == device_id), None)
    return {
        "id": device.id, "kind": device.kind, "name": device.name, "name_ja": device.name_ja,
        "settings": config.get("settings") or {},
        "values": latest["values"] if latest else {}, "ts": latest["ts"] if latest else None,
    }
