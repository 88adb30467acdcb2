"""Devices download update bundles meant for their kind, in pieces (docs/updates.md).

    GET /api/v1/devices/{id}/bundles/{version}      HTTP basic: the device's id and its own secret

HTTP Range is answered (``Range: bytes=0-4095`` → 206 with those bytes), so a board fetches
pieces that fit its memory, and anyone resumes after a dropped link from the bytes it has.
A device gets only the bundles of its own kind: a snow gauge asking for a version that exists
only for printer trays is told there is no such bundle for its kind.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from jisaku.gateway.bundle_store import BundleStore

from .device_auth import check_device

router = APIRouter(tags=["updates"])


@router.get("/api/v1/devices/{device_id}/bundles/{version}",
            summary="A device downloads an update bundle of its kind (HTTP basic; Range for pieces)",
            response_class=FileResponse,
            responses={200: {"description": "the whole bundle", "content": {"application/octet-stream": {}}},
                       206: {"description": "the piece asked for with Range"},
                       401: {"description": "wrong id or secret"},
                       404: {"description": "no bundle of that version for this device's kind"},
                       416: {"description": "the Range asked for is past the end"}})
async def download(request: Request, device_id: str, version: str):
    registry = request.app.state.registry
    await run_in_threadpool(check_device, registry, device_id, request.headers.get("authorization"))
    record = registry.get(device_id)
    store: BundleStore = request.app.state.bundles
    path = store.path_of(record.kind, version)
    if path is None:
        raise HTTPException(404, f"there is no bundle {version!r} for {record.kind} devices: an operator"
                                 " publishes one with jisaku bundle publish or POST /api/v1/operator/bundles")
    # Starlette's FileResponse answers Range and If-Range; the ETag changes if the file does,
    # so a device resuming with If-Range never joins pieces of two different files.
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)
