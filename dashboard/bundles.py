"""Devices download update bundles meant for their kind, in pieces (docs/updates.md).

    GET /api/v1/devices/{id}/bundles/{version}      HTTP basic: the device's id and its own secret
    GET /api/v1/devices/{id}/bundles/{version}?kind=jisaku     a wheel of jisaku itself (any device)
    GET /api/v1/devices/{id}/bundle-key             the town's public key, which the device pins

HTTP Range is answered (``Range: bytes=0-4095`` → 206 with those bytes), so a board fetches
pieces that fit its memory, and anyone resumes after a dropped link from the bytes it has.
A device gets only the bundles of its own kind: a snow gauge asking for a version that exists
only for printer trays is told there is no such bundle for its kind. The one exception is kind
``jisaku``: the jisaku package itself, as a wheel, which any Pi may download.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse

from jisaku.gateway.bundle_signing import key_paths
from jisaku.gateway.bundle_store import BundleStore

from .device_auth import check_device

router = APIRouter(tags=["updates"])
JISAKU = "jisaku"  # the kind of the bundles that hold the jisaku package itself


@router.get("/api/v1/devices/{device_id}/bundles/{version}",
            summary="A device downloads an update bundle of its kind (HTTP basic; Range for pieces)",
            response_class=FileResponse,
            responses={200: {"description": "the whole bundle", "content": {"application/octet-stream": {}}},
                       206: {"description": "the piece asked for with Range"},
                       401: {"description": "wrong id or secret"},
                       404: {"description": "no bundle of that version for this device's kind"},
                       416: {"description": "the Range asked for is past the end"}})
async def download(request: Request, device_id: str, version: str,
                   kind: str | None = Query(None, description="jisaku: the jisaku package wheel; else the device's kind")):
    registry = request.app.state.registry
    await run_in_threadpool(check_device, registry, device_id, request.headers.get("authorization"))
    record = registry.get(device_id)
    if kind not in (None, record.kind, JISAKU):
        raise HTTPException(404, f"{device_id} may download bundles of its own kind ({record.kind}) or of {JISAKU}")
    store: BundleStore = request.app.state.bundles
    kind = kind or record.kind
    path = store.path_of(kind, version)
    if path is None:
        devices = "Pi" if kind == JISAKU else f"{kind} devices"
        raise HTTPException(404, f"there is no bundle {version!r} for {devices}: an operator"
                                 " publishes one with jisaku bundle publish or POST /api/v1/operator/bundles")
    # Starlette's FileResponse answers Range and If-Range; the ETag changes if the file does,
    # so a device resuming with If-Range never joins pieces of two different files.
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


@router.get("/api/v1/devices/{device_id}/bundle-key",
            summary="A device fetches the town's public key for update bundles, once, and pins it (HTTP basic)",
            response_class=PlainTextResponse,
            responses={200: {"description": "64 hex digits", "content": {"text/plain": {}}},
                       401: {"description": "wrong id or secret"},
                       404: {"description": "this server has no signing key yet"}})
async def public_key(request: Request, device_id: str):
    # Behind the device's own secret: only a device of this town learns which key this server holds,
    # and the device knows it asked its own town (its secret works only there).
    await run_in_threadpool(check_device, request.app.state.registry, device_id, request.headers.get("authorization"))
    _, public = key_paths(Path(request.app.state.bundles.data_dir))
    if not public.exists():
        raise HTTPException(404, "this server has no signing key yet: run jisaku bundle keygen on it")
    return PlainTextResponse(public.read_text(encoding="ascii"))
