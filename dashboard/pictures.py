"""Pictures over HTTP: cameras upload them, residents see the public copies.

    POST /api/v1/devices/{id}/pictures?ts=&seq=     a camera's picture (docs/protocol.md, "Pictures")
    GET  /api/v1/devices/{id}/pictures?since=&until=&limit=   a public camera's pictures, newest first
    GET  /pictures/{file}                           a public copy or thumbnail; names never change

Only public copies are served here, with the camera's black-out areas painted black; the
originals are for operators. A private camera is answered like one that does not exist.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from jisaku.contract import protocol
from jisaku.gateway.pictures import Picture, PictureRefused, PicturesUnavailable, PictureStore, shown_on_map

from .device_auth import check_device
from .api import public_device

router = APIRouter(tags=["pictures"])

# A public copy's name carries its black-out revision, so a browser may keep it for good.
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def _pictures(request: Request) -> PictureStore:
    return request.app.state.pictures


def described(picture: Picture) -> dict:
    """A picture as the API lists it: when, how big, and where its public copy and thumbnail are."""
    return {**shown_on_map(picture), "seq": picture.seq, "width": picture.width, "height": picture.height}


@router.post("/api/v1/devices/{device_id}/pictures", status_code=201,
             summary="A camera uploads a picture (HTTP basic: its id and secret)",
             responses={200: {"description": "stored before: a repeat"}, 401: {"description": "wrong id or secret"},
                        413: {"description": "too large"}, 415: {"description": "not JPEG or PNG"},
                        422: {"description": "does not decode, or a bad ts/seq"},
                        503: {"description": "the server cannot keep it now: try again later"}})
async def upload(request: Request, device_id: str,
                 seq: int = Query(..., ge=0, description="the camera's picture counter"),
                 ts: float | None = Query(None, description="when it was taken, UTC epoch seconds"),
                 age: float | None = Query(None, ge=0, description="instead of ts: seconds since it was taken")):
    received = time.time()
    registry = request.app.state.registry
    await run_in_threadpool(check_device, registry, device_id, request.headers.get("authorization"))
    store = _pictures(request)
    data = bytearray()
    async for chunk in request.stream():
        if len(data) <= store.max_bytes:  # past the limit, keep only what the quarantine needs
            data += chunk
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        taken = protocol.taken_at(ts, age, received)
    except protocol.ProtocolError as err:
        refused = PictureRefused(422, err.reason, str(err))
        await run_in_threadpool(store.quarantine, device_id, data, refused, received)
        return JSONResponse({"detail": refused.detail, "reason": refused.reason}, status_code=422)
    try:
        stored, picture = await run_in_threadpool(store.store, device_id, data, content_type, taken, seq, received)
    except PictureRefused as refused:
        return JSONResponse({"detail": refused.detail, "reason": refused.reason}, status_code=refused.status)
    except PicturesUnavailable as err:
        return JSONResponse({"detail": str(err)}, status_code=503, headers={"Retry-After": "60"})
    if not stored:
        return JSONResponse({"stored": False, "duplicate": True, **described(picture)}, status_code=200)
    return {"stored": True, **described(picture)}


@router.get("/api/v1/devices/{device_id}/pictures", summary="A public camera's pictures, newest first")
def pictures(request: Request, device_id: str,
             since: float | None = Query(None, description="UTC epoch seconds"),
             until: float | None = Query(None, description="UTC epoch seconds, not included"),
             limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    public_device(request, device_id)
    return [described(p) for p in _pictures(request).pictures(device_id, since, until, limit)]


@router.get("/pictures/{name:path}", include_in_schema=False)
def picture_file(request: Request, name: str) -> FileResponse:
    """A public copy or thumbnail by the name the API gave; an original is never served here."""
    store = _pictures(request)
    device_id = name.split("/", 1)[0]
    if ".m" not in name or not name.endswith(".jpg") or ".." in name.split("/"):
        raise HTTPException(404, "no such picture")
    public_device(request, device_id)
    path = store.folder / name
    if not path.is_file():
        raise HTTPException(404, "no such picture (its black-out areas may have changed: ask the API again)")
    return FileResponse(path, media_type="image/jpeg", headers=IMMUTABLE)
