"""Updates from afar in the operator pages and API: offer a bundle to devices, and follow it.

Admins start and stop rollouts; every operator sees them, and each device's version and
progress (gateway/updates.py does the work; docs/updates.md explains it).

API::

    POST /api/v1/operator/rollouts           {"kind", "version", "devices"?: [...], "first"?: 2, "wait_min"?: 30}
         → 201 the rollout, each device "offered" or "waiting"                                     (admins)
    GET  /api/v1/operator/rollouts            newest first, with how many devices are in each state
    GET  /api/v1/operator/rollouts/{id}       one, with every device's progress
    POST /api/v1/operator/rollouts/{id}/stop  devices not yet downloading are not offered it        (admins)
    GET  /api/v1/operator/devices/{id}/updates  what the device runs, and its offers newest first

Pages: ``/operator/updates`` (bundles, uploading one, starting a rollout, the rollouts) and
``/operator/updates/{id}`` (one rollout, device by device).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from jisaku.contract.bundles import BundleRefused
from jisaku.dashboard import i18n
from jisaku.gateway.bundle_store import NoTownKey, VersionTaken
from jisaku.gateway.updates import NoSuchBundle, Rollout, UpdateBook, UpdateError

from . import models
from .api import ERRORS
from .auth import Session, check_csrf, require_admin, require_operator
from .bundles import TooLarge, check_declared_size, receive_upload
from .pages import render, see
from .scope import within

api_router = APIRouter(prefix="/api/v1/operator", tags=["operator updates"], responses=ERRORS,
                       dependencies=[Depends(require_operator), Depends(check_csrf)])
page_router = APIRouter(prefix="/operator", include_in_schema=False,
                        dependencies=[Depends(require_operator), Depends(check_csrf)])

RolloutIdPath = Annotated[int, PathParam(ge=1, le=2**53, examples=[3])]  # SQLite holds up to 2**63
DeviceIdPath = Annotated[str, PathParam(max_length=64, examples=["snow-1"])]


def _book(request: Request) -> UpdateBook:
    return UpdateBook(request.app.state.operator_ops.db, request.app.state.bundles)


def _town(request: Request, session: Session, asked: str | None) -> str | None:
    """Whose devices a rollout may reach: the account's town; a joint body's choice, or every town."""
    if session.user.town is None and not asked:
        return None
    try:
        return request.app.state.operator_ops.changes.town_for(session.user.town, asked or None)
    except ValueError as err:
        raise UpdateError(str(err)) from None


def _refused(err: UpdateError) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=404 if isinstance(err, NoSuchBundle) else 400)


# ---------------------------------------------------------------- API


@api_router.post("/rollouts", response_model=Rollout, status_code=201,
                 summary="Offer a published bundle to devices, a few first (admins)",
                 responses={404: {"description": "no such bundle is published"}})
def start(body: models.RolloutRequest, request: Request, session: Annotated[Session, Depends(require_admin)]):
    try:
        town = _town(request, session, body.town)
        rollout = _book(request).start(body.kind, body.version, body.devices, body.first, body.wait_min,
                                       body.trial_s, actor=session.user.name, within=town)
    except UpdateError as err:
        return _refused(err)
    return JSONResponse(rollout.model_dump(mode="json"), status_code=201)


@api_router.get("/rollouts", response_model=list[Rollout], summary="Rollouts, newest first")
def rollouts(request: Request):
    return _book(request).rollouts(town=within(request))


@api_router.get("/rollouts/{rollout_id}", response_model=Rollout,
                summary="One rollout and every device's progress: offered, downloading, verified, switched,"
                        " running, rolled_back, refused")
def rollout(rollout_id: RolloutIdPath, request: Request):
    found = _book(request).rollout(rollout_id)
    if found is None:
        return JSONResponse({"detail": f"no rollout {rollout_id}"}, status_code=404)
    return found


@api_router.post("/rollouts/{rollout_id}/stop", response_model=Rollout,
                 summary="Stop a rollout: devices not yet downloading are not offered it (admins)")
def stop(rollout_id: RolloutIdPath, request: Request, session: Annotated[Session, Depends(require_admin)]):
    try:
        return _book(request).stop(rollout_id, session.user.name)
    except UpdateError as err:
        return JSONResponse({"detail": str(err)}, status_code=404)


@api_router.get("/devices/{device_id}/updates", response_model=models.DeviceUpdates,
                summary="What a device runs, and its update offers, newest first")
def device_updates(device_id: DeviceIdPath, request: Request):
    if request.app.state.operator_ops.registry.get(device_id) is None:
        return JSONResponse({"detail": f"no device {device_id!r}"}, status_code=404)
    book = _book(request)
    return models.DeviceUpdates(software=book.software(device_id), updates=book.for_device(device_id))


# ---------------------------------------------------------------- pages


def _updates_page(request: Request, status: int = 200, **context):
    book = _book(request)
    return render(request, "updates.html", status, bundles=request.app.state.bundles.bundles(),
                  rollouts=book.rollouts(town=within(request)), form=context.pop("form", {}), **context)


@page_router.get("/updates")
def updates_page(request: Request):
    return _updates_page(request, done=request.query_params.get("done"))


@page_router.post("/updates/bundles", dependencies=[Depends(require_admin)])
async def upload_page(request: Request, session: Session = Depends(require_operator)):
    t = i18n.translator(i18n.pick_language(request))
    store = request.app.state.bundles
    try:
        check_declared_size(request)
        async with request.form() as form:
            upload = form.get("bundle")
            if upload is None or isinstance(upload, str) or not upload.filename:
                return _updates_page(request, 400, upload_error=t("op.updates.choose_file"))
            scratch = await receive_upload(store, upload)
    except TooLarge as err:
        return _updates_page(request, 413, upload_error=str(err))
    try:
        published, new = await run_in_threadpool(store.publish, scratch, session.user.name)
    except BundleRefused as refused:
        return _updates_page(request, 400, upload_error=t("op.updates.refused", reason=refused.reason,
                                                          detail=str(refused)))
    except (VersionTaken, NoTownKey) as err:
        return _updates_page(request, 409, upload_error=str(err))
    finally:
        scratch.unlink(missing_ok=True)
    return see("/operator/updates?done=" + ("bundle_published" if new else "bundle_known"))


@page_router.post("/updates", dependencies=[Depends(require_admin)])
async def start_page(request: Request, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    kind, _, version = str(form.get("bundle", "")).partition("/")
    named = [part for part in str(form.get("devices", "")).replace(",", " ").split() if part]
    try:
        first = int(str(form.get("first") or 0))
        wait_min = float(str(form.get("wait_min") or 30).replace(",", "."))
        asked = str(form.get("town", "")).strip()
        town = _town(request, session, None if asked in ("", "*") else asked)  # "*": every town's devices
        rollout = await run_in_threadpool(_book(request).start, kind, version,
                                          named if form.get("target") == "devices" else None, first, wait_min,
                                          actor=session.user.name, within=town)
    except ValueError as err:  # UpdateError, or a number that is not one
        message = str(err) if isinstance(err, UpdateError) else t("op.updates.numbers")
        return _updates_page(request, 400, start_error=message, form=dict(form))
    return see(f"/operator/updates/{rollout.id}")


@page_router.get("/updates/{rollout_id}")
def rollout_page(rollout_id: RolloutIdPath, request: Request):
    found = _book(request).rollout(rollout_id)
    if found is None:
        return render(request, "not_found.html", 404, what=f"rollout {rollout_id}")
    return render(request, "rollout.html", rollout=found, done=request.query_params.get("done"))


@page_router.post("/updates/{rollout_id}/stop", dependencies=[Depends(require_admin)])
def stop_page(rollout_id: RolloutIdPath, request: Request, session: Session = Depends(require_operator)):
    try:
        _book(request).stop(rollout_id, session.user.name)
    except UpdateError:
        return render(request, "not_found.html", 404, what=f"rollout {rollout_id}")
    return see(f"/operator/updates/{quote(str(rollout_id))}?done=rollout_stopped")
