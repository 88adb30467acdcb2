"""The operators' JSON API, ``/api/v1/operator/…``: everything the operator pages do, for scripts.

Log in with ``POST /api/v1/operator/login``: the answer sets the session cookie and
gives the CSRF token to send as ``X-CSRF-Token`` with every POST, PATCH and DELETE.

Example (Python, httpx)::

    client = httpx.Client(base_url="http://127.0.0.1:8000")
    token = client.post("/api/v1/operator/login", json={"name": "tanaka", "password": "…"}).json()["csrf_token"]
    client.get("/api/v1/operator/devices").json()
    client.post("/api/v1/operator/devices/tray-1/settings", json={"settings": {"left_after_s": 45}},
                headers={"X-CSRF-Token": token})
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from jisaku.gateway.accounts import AccountError
from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.towns import Towns

from . import models
from .auth import (COOKIE, Auth, LoginRefused, Session, check_csrf, clear_session_cookie, client_ip,
                   require_admin, require_operator, set_session_cookie)
from jisaku.gateway.changes import NotFound, OperationError, PublisherMissing

from .operations import Operations
from .publisher import BrokerUnavailable
from .scope import within

ERRORS = {
    400: {"description": "the change cannot be made as asked; `detail` says why"},
    401: {"description": "not logged in: POST /api/v1/operator/login first"},
    403: {"description": "an admin-only endpoint, or the X-CSRF-Token header is missing or wrong"},
    404: {"description": "no such device or user"},
}

# Logging in needs no session yet; everything else does, and every change its CSRF token.
login_router = APIRouter(prefix="/api/v1/operator", tags=["operator"])
router = APIRouter(prefix="/api/v1/operator", tags=["operator"], responses=ERRORS,
                   dependencies=[Depends(require_operator), Depends(check_csrf)])

DeviceIdPath = Annotated[str, PathParam(max_length=64, examples=["tray-1"])]
UserPath = Annotated[str, PathParam(max_length=64, examples=["suzuki"])]


def _ops(request: Request) -> Operations:
    return request.app.state.operator_ops


def _error(err: Exception) -> JSONResponse:
    """What a refused change answers: 400 with what to do, 404, or 503 when the broker is away."""
    if isinstance(err, NotFound):
        return JSONResponse({"detail": str(err)}, status_code=404)
    if isinstance(err, (PublisherMissing, BrokerUnavailable)):
        return JSONResponse({"detail": str(err)}, status_code=503)
    return JSONResponse({"detail": str(err)}, status_code=400)


_REFUSED = (NotFound, OperationError, AccountError, PublisherMissing, BrokerUnavailable)


def _session_info(session: Session) -> models.SessionInfo:
    return models.SessionInfo(name=session.user.name, role=session.user.role, csrf_token=session.csrf,
                              expires=session.expires, town=session.user.town)


# ---------------------------------------------------------------- session


@login_router.post("/login", response_model=models.SessionInfo, summary="Log in (sets the session cookie)",
                   responses={401: {"description": "wrong name or password"},
                              429: {"description": "too many attempts: wait the minutes in `detail`"}})
def login(body: models.LoginRequest, request: Request, response: Response):
    auth: Auth = request.app.state.operator_auth
    try:
        session = auth.login(body.name, body.password, client_ip(request))
    except LoginRefused as refused:
        if refused.status == 429:
            return JSONResponse({"detail": f"too many attempts: wait {refused.wait_minutes} minutes and try again"},
                                status_code=429, headers={"Retry-After": str(refused.wait_minutes * 60)})
        return JSONResponse({"detail": "wrong name or password"}, status_code=401)
    set_session_cookie(request, response, session)
    return _session_info(session)


@router.post("/logout", status_code=204, summary="Log out")
def logout(request: Request) -> Response:
    request.app.state.operator_auth.logout(request.cookies.get(COOKIE))
    response = Response(status_code=204)
    clear_session_cookie(response)
    return response


@router.get("/me", response_model=models.SessionInfo, summary="Who is logged in, and the CSRF token")
def me(session: Annotated[Session, Depends(require_operator)]):
    return _session_info(session)


# ---------------------------------------------------------------- devices


def _device(ops: Operations, device_id: str) -> models.OperatorDevice:
    return models.OperatorDevice(**asdict(ops.device(device_id)))


@router.get("/devices", response_model=list[models.OperatorDevice],
            summary="Every device with its status, battery, firmware and settings revision")
def devices(request: Request):
    return [models.OperatorDevice(**asdict(view)) for view in _ops(request).devices(town=within(request))]


@router.get("/devices/{device_id}", response_model=models.OperatorDevice, summary="One device")
def device(device_id: DeviceIdPath, request: Request):
    try:
        return _device(_ops(request), device_id)
    except NotFound as err:
        return _error(err)


def _with_secret(ops: Operations, request: Request, device_id: str, secret: str) -> models.DeviceSecret:
    record = ops.registry.get(device_id)
    snippets = ops.snippets(record, secret, str(request.base_url))
    return models.DeviceSecret(device=_device(ops, device_id), secret=secret,
                               snippets=models.Snippets(**{**asdict(snippets), "warnings": list(snippets.warnings)}))


@router.post("/devices", response_model=models.DeviceSecret, status_code=201,
             summary="Register a device; its secret is in the answer, only this once")
def add_device(body: models.NewDevice, request: Request, session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    try:
        secret = ops.changes.add_device(session.user.name, DeviceRecord(
            id=body.id, kind=body.kind, name=body.name or body.id, name_ja=body.name_ja, public=body.public,
            interval_s=body.interval_s, lat=body.lat, lon=body.lon, practice=body.practice, town=body.town),
            within=session.user.town)
    except _REFUSED as err:
        return _error(err)
    return _with_secret(ops, request, body.id, secret)


@router.patch("/devices/{device_id}", response_model=models.OperatorDevice,
              summary="Change a device's kind, name, visibility, interval or place")
def update_device(device_id: DeviceIdPath, body: models.DeviceChange, request: Request,
                  session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    record = ops.registry.get(device_id)
    if record is None:
        return _error(NotFound(f"no device {device_id!r}"))
    changes = body.model_dump(exclude_unset=True)
    if "lat" in changes or "lon" in changes:
        changes["lat"], changes["lon"] = body.lat, body.lon
    changes = {key: value for key, value in changes.items()
               if value is not None or key in ("interval_s", "lat", "lon")}
    try:
        ops.changes.update_device(session.user.name, DeviceRecord(**{**asdict(record), **changes}))
    except _REFUSED as err:
        return _error(err)
    return _device(ops, device_id)


@router.post("/devices/{device_id}/settings", response_model=models.SettingsSent, status_code=202,
             summary="Send a device new settings (within its limits); it answers applied or refused",
             responses={503: {"description": "the broker cannot be reached; nothing was sent"}})
async def push_settings(device_id: DeviceIdPath, body: models.SettingsChange, request: Request,
                        session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    settings = {name: [entry.model_dump(exclude_none=True) for entry in value] if isinstance(value, list) else value
                for name, value in body.settings.items()}
    try:
        config = await run_in_threadpool(ops.changes.push_settings, session.user.name, device_id, settings)
    except _REFUSED as err:
        return _error(err)
    return models.SettingsSent(rev=config["rev"], settings={k: v for k, v in config.items() if k != "rev"},
                               state=ops.store.config_state(device_id))


@router.get("/devices/{device_id}/pictures/newest", response_class=FileResponse,
            summary="A camera's newest picture as it took it: the original, black-out areas not applied",
            responses={404: {"description": "no such device, or no picture yet"}})
def newest_original(device_id: DeviceIdPath, request: Request,
                    session: Annotated[Session, Depends(require_operator)]):
    pictures = request.app.state.pictures
    newest = pictures.pictures(device_id, limit=1)
    if not newest:
        return JSONResponse({"detail": f"no picture from {device_id!r} yet"}, status_code=404)
    # Not for caching anywhere: it may show what the public copy blacks out.
    return FileResponse(pictures.original_file(newest[0]), media_type=newest[0].content_type,
                        headers={"Cache-Control": "private, no-store"})


@router.put("/devices/{device_id}/picture-mask", response_model=models.PictureMaskSaved,
            summary="A camera's black-out areas: painted black before any picture is public")
async def set_picture_mask(device_id: DeviceIdPath, body: models.PictureMask, request: Request,
                           session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    try:
        rev = await run_in_threadpool(ops.changes.set_picture_mask, session.user.name, device_id, body.areas)
    except _REFUSED as err:
        return _error(err)
    return models.PictureMaskSaved(areas=request.app.state.pictures.mask(device_id)[0], rev=rev)


@router.post("/devices/{device_id}/rotate", response_model=models.DeviceSecret,
             summary="Give a device a new secret (the old one stops working now); shown only this once")
def rotate(device_id: DeviceIdPath, request: Request, session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    try:
        secret = ops.changes.rotate_secret(session.user.name, device_id)
    except _REFUSED as err:
        return _error(err)
    return _with_secret(ops, request, device_id, secret)


@router.post("/devices/{device_id}/revoke", response_model=models.OperatorDevice,
             summary="Take a device's secret away: it can no longer connect (rotate gives it a new one)")
def revoke(device_id: DeviceIdPath, request: Request, session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    try:
        ops.changes.revoke(session.user.name, device_id)
    except _REFUSED as err:
        return _error(err)
    return _device(ops, device_id)


# ---------------------------------------------------------------- quarantine and audit


def quarantine_view(ops: Operations, limit: int, town: str | None = None) -> models.Quarantine:
    """The quarantined messages; for a town's account only those whose topic names one of its
    devices. A message from an unregistered id could be any town's: joint-body accounts see it,
    and, on a deployment of one town, that town's accounts (there is nobody else's to hide)."""
    if town is None or len(Towns(ops.db).ids()) == 1:
        rows, counts = ops.store.quarantined(limit=limit), ops.store.quarantine_counts()
    else:
        towns = {row[0]: row[1] for row in ops.db.connection.execute("SELECT id, town FROM devices")}

        def ours(topic: str) -> bool:
            named = [part for part in topic.split("/") if part in towns]
            return bool(named) and all(towns[part] == town for part in named)

        rows, counts = [], {}
        for row in ops.db.connection.execute(
                "SELECT received, topic, payload, reason, detail FROM quarantine ORDER BY id DESC"):
            if ours(row["topic"]):
                counts[row["reason"]] = counts.get(row["reason"], 0) + 1
                if len(rows) < limit:
                    rows.append(dict(row))
    messages = [
        models.QuarantinedMessage(received=row["received"], topic=row["topic"],
                                  payload=bytes(row["payload"]).decode("utf-8", errors="replace"),
                                  reason=row["reason"], detail=row["detail"])
        for row in rows
    ]
    return models.Quarantine(counts=counts, messages=messages)


@router.get("/quarantine", response_model=models.Quarantine,
            summary="Messages that broke the wire contract, with the reason, newest first")
def quarantine(request: Request, limit: Annotated[int, Query(ge=1, le=10000)] = 100):
    return quarantine_view(_ops(request), limit, within(request))


AuditLimit = Annotated[int, Query(ge=1, le=100000)]
Since = Annotated[float | None, Query(description="UTC epoch seconds")]


@router.get("/audit", response_model=list[models.AuditEntry], summary="The audit log, newest first")
def audit(request: Request, limit: AuditLimit = 1000, since: Since = None, until: Since = None,
          target: Annotated[str | None, Query(max_length=200)] = None):
    return _ops(request).audit.entries(limit=limit, since=since, until=until, target=target, town=within(request))


@router.get("/audit.json", summary="The audit log as a JSON file to download",
            response_class=Response, responses={200: {"content": {"application/json": {}}}})
def audit_json(request: Request, limit: AuditLimit = 100000, since: Since = None, until: Since = None):
    entries = _ops(request).audit.entries(limit=limit, since=since, until=until, town=within(request))
    return Response(json.dumps(entries, ensure_ascii=False, indent=1), media_type="application/json",
                    headers={"Content-Disposition": 'attachment; filename="jisaku-audit.json"'})


@router.get("/audit.csv", summary="The audit log as a CSV file (UTF-8, opens in Excel)",
            response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def audit_csv(request: Request, limit: AuditLimit = 100000, since: Since = None, until: Since = None):
    out = io.StringIO()
    out.write("\ufeff")  # the byte order mark makes Excel read UTF-8 (Japanese) correctly
    writer = csv.writer(out)
    writer.writerow(["id", "time_utc_epoch", "actor", "action", "target", "town", "before", "after"])
    for entry in _ops(request).audit.entries(limit=limit, since=since, until=until, town=within(request)):
        writer.writerow([entry["id"], entry["ts"], entry["actor"], entry["action"], entry["target"], entry["town"] or "",
                         "" if entry["before"] is None else json.dumps(entry["before"], ensure_ascii=False),
                         "" if entry["after"] is None else json.dumps(entry["after"], ensure_ascii=False)])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="jisaku-audit.csv"'})


# ---------------------------------------------------------------- users (admins only)


def _user(ops: Operations, name: str) -> models.UserInfo:
    user = ops.accounts.get(name)
    return models.UserInfo(name=user.name, role=user.role, disabled=user.disabled, created=user.created,
                           changed=user.changed, town=user.town)


def visible_users(ops: Operations, town: str | None) -> list:
    """The accounts an admin of ``town`` manages: that town's (None: every account)."""
    return [user for user in ops.accounts.users() if town is None or user.town == town]


@router.get("/users", response_model=list[models.UserInfo], dependencies=[Depends(require_admin)],
            summary="The operator accounts (admins only)")
def users(request: Request):
    ops = _ops(request)
    return [_user(ops, user.name) for user in visible_users(ops, within(request))]


@router.post("/users", response_model=models.UserInfo, status_code=201, dependencies=[Depends(require_admin)],
             summary="Add an operator account (admins only)")
def add_user(body: models.NewUser, request: Request, session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    try:
        ops.changes.add_user(session.user.name, body.name, body.password, body.role,
                             town=None if body.all_towns else (body.town or ""), within=session.user.town)
    except _REFUSED as err:
        return _error(err)
    return _user(ops, body.name)


@router.patch("/users/{name}", response_model=models.UserInfo, dependencies=[Depends(require_admin)],
              summary="Change an account's role, or disable it (admins only)")
def update_user(name: UserPath, body: models.UserChange, request: Request,
                session: Annotated[Session, Depends(require_operator)]):
    ops = _ops(request)
    try:
        ops.changes.update_user(session.user.name, name, role=body.role, disabled=body.disabled)
    except _REFUSED as err:
        return _error(err)
    return _user(ops, name)
