"""Update bundles in the operator API: admins publish signed bundles, operators see them.

    POST /api/v1/operator/bundles      multipart, field ``bundle``: a file jisaku bundle build made (admins)
    GET  /api/v1/operator/bundles      every published bundle, newest first

The server keeps only bundles its own public key verifies (gateway/bundle_store.py), so an
upload proves nothing by itself: the signature, made where the private key is, does.

Example (Python, httpx, logged in as in api.py)::

    with open("snow_gauge-1.4.0.bundle", "rb") as f:
        client.post("/api/v1/operator/bundles", files={"bundle": f}, headers={"X-CSRF-Token": token})
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from jisaku.contract.bundles import MAX_BUNDLE_BYTES, BundleRefused
from jisaku.gateway.bundle_store import BundleStore, NoTownKey, PublishedBundle, VersionTaken

from . import models
from .api import ERRORS
from .auth import Session, check_csrf, require_admin, require_operator

router = APIRouter(prefix="/api/v1/operator", tags=["operator"], responses=ERRORS,
                   dependencies=[Depends(require_operator), Depends(check_csrf)])

# The multipart wrapping around the file: a boundary and a few headers.
ENVELOPE = 64 * 1024


def _store(request: Request) -> BundleStore:
    return request.app.state.bundles


def _info(bundle: PublishedBundle) -> dict:
    return {**asdict(bundle), "download": f"/api/v1/devices/{{device_id}}/bundles/{bundle.version}"}


class TooLarge(ValueError):
    """An upload larger than a bundle may be."""


def _too_large(err: TooLarge) -> JSONResponse:
    return JSONResponse({"detail": str(err), "reason": "size"}, status_code=413)


def check_declared_size(request: Request) -> None:
    """TooLarge when the request says up front that it is too large: nothing more is read."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BUNDLE_BYTES + ENVELOPE:
        raise TooLarge(f"a bundle is at most {MAX_BUNDLE_BYTES:,} bytes")


async def receive_upload(store: BundleStore, upload: UploadFile) -> Path:
    """Copy an uploaded bundle into a scratch file in the store's folder, so publishing it is a
    rename; TooLarge past the limit. The caller deletes the scratch file."""
    scratch = store.scratch_file()
    written = 0
    try:
        with open(scratch, "wb") as out:
            while piece := await upload.read(1024 * 1024):
                written += len(piece)
                if written > MAX_BUNDLE_BYTES:
                    raise TooLarge(f"a bundle is at most {MAX_BUNDLE_BYTES:,} bytes")
                out.write(piece)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return scratch


@router.get("/bundles", response_model=list[models.BundleInfo], summary="Published update bundles, newest first")
def bundles(request: Request):
    return [_info(bundle) for bundle in _store(request).bundles()]


@router.post("/bundles", response_model=models.PublishedBundle, status_code=201,
             summary="Publish a signed update bundle (admins); it is checked against the town's key",
             responses={200: {"description": "the very same bundle was published before"},
                        400: {"description": "refused: bad signature, hash, path or format; `reason` says which"},
                        409: {"description": "that kind and version were published with other contents, or the"
                                             " server has no town key yet (jisaku bundle keygen): `detail` says which"},
                        413: {"description": "larger than a bundle may be"}})
async def publish(request: Request, session: Annotated[Session, Depends(require_admin)],
                  bundle: Annotated[UploadFile, File(description="the .bundle file jisaku bundle build wrote")]):
    store = _store(request)
    try:
        check_declared_size(request)
        scratch = await receive_upload(store, bundle)
    except TooLarge as err:
        return _too_large(err)
    try:
        published, new = await run_in_threadpool(store.publish, scratch, session.user.name)
    except BundleRefused as refused:
        return JSONResponse({"detail": str(refused), "reason": refused.reason}, status_code=400)
    except VersionTaken as err:
        return JSONResponse({"detail": str(err)}, status_code=409)
    except NoTownKey as err:  # not 503: trying again does not help until an admin makes the key
        return JSONResponse({"detail": str(err)}, status_code=409)
    finally:
        scratch.unlink(missing_ok=True)
    return JSONResponse(models.PublishedBundle(**_info(published), new=new).model_dump(),
                        status_code=201 if new else 200)
