"""The practice space on the operator side: the practice map, promotion, and "my notifications".

* ``/operator/practice``: the town's practice devices, live on a map like the residents'
  (static/live.js, fed by ``/api/v1/operator/practice.geojson`` every second and a half);
  each marker links to the device's operator page, which charts its readings.
* ``POST /api/v1/operator/devices/{device_id}/promote`` ``{"keep_history": true}`` (and the
  button on the device page): a practice device becomes a town device (gateway/practice.py).
* ``/operator/notify`` and ``GET/PUT /api/v1/operator/me/notify``: where the logged-in
  operator's practice alerts go (a webhook or an e-mail address); notify_routes.py sends them.

Routes that name a device take it as ``device_id``, so the operators' town guard covers them.

Example (Python, httpx, logged in as in api.py)::

    client.put("/api/v1/operator/me/notify", json={"webhook_url": "https://hooks.example.jp/abc"},
               headers={"X-CSRF-Token": token})
    client.post("/api/v1/operator/devices/snow-9/promote", json={"keep_history": True},
                headers={"X-CSRF-Token": token})
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from jisaku.contract import kinds
from jisaku.contract import settings as jisaku_settings
from jisaku.dashboard import i18n
from jisaku.dashboard.api import feature_collection
from jisaku.dashboard.history import METRIC, History, RangeName, window
from jisaku.dashboard.kind_view import browser_kinds
from jisaku.dashboard.pages import DEFAULT_CENTER, device_levels, legends, limits, tiles_config
from jisaku.dashboard.stream import position
from jisaku.gateway.changes import NotFound, OperationError
from jisaku.gateway.notify_config import NotifyConfig
from jisaku.gateway.notify_routes import LearnerTarget, check_email_possible
from jisaku.gateway.practice import Practice
from jisaku.kinds.shelter import occupancy

from . import models
from .api import ERRORS, DeviceIdPath, _device, _error
from .auth import Session, check_csrf, require_operator
from .pages import render, see

api_router = APIRouter(prefix="/api/v1/operator", tags=["operator practice"], responses=ERRORS,
                       dependencies=[Depends(require_operator), Depends(check_csrf)])
page_router = APIRouter(prefix="/operator", include_in_schema=False,
                        dependencies=[Depends(require_operator), Depends(check_csrf)])


def _practice(request: Request) -> Practice:
    practice = getattr(request.app.state, "operator_practice", None)
    if practice is None:
        practice = request.app.state.operator_practice = Practice(request.app.state.operator_ops.db,
                                                                  request.app.state.pictures)
    return practice


def _notify_settings(request: Request) -> NotifyConfig:
    """jisaku.toml's [notify] (an e-mail target goes through its mail server), when the app knows it."""
    table = getattr(request.app.state, "notify", None)
    if table is None:
        table = request.app.state.notify = jisaku_settings.load().notify
    try:
        return NotifyConfig.from_settings(table)
    except ValueError:
        return NotifyConfig()


def practice_devices(request: Request, session: Session) -> list[dict[str, Any]]:
    """The practice devices the operator's town has (a joint-body account: every town's)."""
    town = session.user.town
    return [d for d in request.app.state.store.latest(public_only=False, town=town) if d["practice"]]


# ---------------------------------------------------------------- API


@api_router.get("/practice.geojson", summary="The practice devices of your town, as the practice map draws them")
def practice_geojson(request: Request, session: Annotated[Session, Depends(require_operator)]):
    return Response(json.dumps(feature_collection(practice_devices(request, session)), ensure_ascii=False),
                    media_type="application/geo+json", headers={"Cache-Control": "private, no-store"})


@api_router.post("/devices/{device_id}/promote", response_model=models.Promoted,
                 summary="Make a practice device a town device (audited); without keep_history its readings go")
def promote(device_id: DeviceIdPath, body: models.Promotion, request: Request,
            session: Annotated[Session, Depends(require_operator)]):
    ops = request.app.state.operator_ops
    try:
        deleted = _practice(request).promote(session.user.name, device_id, body.keep_history)
    except (NotFound, OperationError) as err:
        return _error(err)
    return models.Promoted(device=_device(ops, device_id), deleted=deleted)


@api_router.get("/devices/{device_id}/history", response_model=History,
                summary="One metric of any of your devices (practice ones too), in about 300 buckets")
def operator_history(device_id: DeviceIdPath, request: Request,
                     metric: Annotated[str | None, Query(max_length=64, description="e.g. depth_cm; left out:"
                                                         " the first number it sends")] = None,
                     range_name: RangeName = Query("24h", alias="range")):
    if request.app.state.registry.get(device_id) is None:
        return _error(NotFound(f"no device {device_id!r}"))
    if metric is None:
        latest = next((d for d in request.app.state.store.latest(public_only=False) if d["id"] == device_id), None)
        numbers = sorted(k for k, v in (latest or {}).get("values", {}).items()
                         if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("lat", "lon"))
        metric = numbers[0] if numbers else "value"
    if not METRIC.match(metric):
        raise HTTPException(422, f"metric {metric!r} should be a name such as depth_cm: letters, digits, _ . -")
    start, end, bucket_s = window(range_name, time.time())
    buckets = request.app.state.readings.history(device_id, metric, start, end, bucket_s)
    return History(device_id=device_id, metric=metric, range=range_name, start=start, end=end,
                   bucket_s=bucket_s, buckets=buckets)


def _target_out(target: LearnerTarget | None) -> models.LearnerTargetOut:
    if target is None:
        return models.LearnerTargetOut(kind=None, to=None)
    return models.LearnerTargetOut(kind="webhook" if target.webhook else "email", to=target.described(),
                                   webhook_format=target.webhook.format if target.webhook else None,
                                   language=target.language)


def _target_in(request: Request, body: models.LearnerTargetIn) -> LearnerTarget | None:
    """The target the body describes (None: remove it); ValueError saying what to fix."""
    url, email = (body.webhook_url or "").strip(), (body.email or "").strip()
    if not url and not email:
        return None
    try:
        target = LearnerTarget.model_validate({
            "webhook": {"url": url, "format": body.webhook_format} if url else None,
            "email": email or None, "language": body.language})
    except ValidationError as err:
        raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None
    check_email_possible(_notify_settings(request), target)
    return target


@api_router.get("/me/notify", response_model=models.LearnerTargetOut,
                summary="Where your practice alerts go (never the town's targets)")
def my_notify(request: Request, session: Annotated[Session, Depends(require_operator)]):
    return _target_out(_practice(request).target(session.user.name))


@api_router.put("/me/notify", response_model=models.LearnerTargetOut,
                summary="Set where your practice alerts go: a webhook URL or an e-mail address (neither: remove)")
def set_my_notify(body: models.LearnerTargetIn, request: Request,
                  session: Annotated[Session, Depends(require_operator)]):
    try:
        target = _target_in(request, body)
        _practice(request).set_target(session.user.name, session.user.name, target)
    except (ValueError, NotFound) as err:
        return JSONResponse({"detail": str(err)}, status_code=400)
    return _target_out(target)


# ---------------------------------------------------------------- pages


@page_router.get("/practice")
def practice_map(request: Request, session: Session = Depends(require_operator)):
    """The practice map: like the residents' map (live.js), for the town's practice devices only."""
    store = request.app.state.store
    lang = i18n.pick_language(request)
    devices = practice_devices(request, session)
    located = [position(d) for d in devices if position(d)]
    if located:
        center, zoom = (sum(p[0] for p in located) / len(located), sum(p[1] for p in located) / len(located)), 14
    else:
        center, zoom = DEFAULT_CENTER, 5
    levels = {d["id"]: device_levels(store, d) for d in devices}
    config = {
        "geojson": "/api/v1/operator/practice.geojson", "stream": None, "devicePage": "/operator/devices/{id}",
        "lang": lang, "words": i18n.js_catalog(lang), "kinds": browser_kinds(lang), "disaster": False,
        "shelterLevels": {level: {"label": occupancy.LABELS[level][lang], "colour": occupancy.COLOURS[level],
                                  "text": occupancy.TEXT_COLOURS[level]} for level in occupancy.LEVELS},
        "tiles": tiles_config(request.app.state.tiles), "pmtilesScript": "/static/vendor/pmtiles/pmtiles.js",
        "limits": {d["id"]: vars(limits(d["kind"], d["interval_s"])) for d in devices},
        "kindLimits": {k: vars(limits(k, None)) for k in (*kinds.registry().kinds, kinds.OTHER)},
        "levels": {device_id: list(shown) for device_id, shown in levels.items() if shown},
        "legends": legends(devices, levels),
    }
    return render(request, "practice.html", devices=devices, center=list(center), zoom=zoom,
                  config=json.dumps(config, ensure_ascii=False).replace("</", "<\\/"))


@page_router.post("/devices/{device_id}/promote")
async def promote_page(request: Request, device_id: str, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    from .pages import _device_page  # the device page, shown again with what to fix

    if form.get("confirm") != "yes":
        return _device_page(request, device_id, 400, promote_error=t("op.secret.confirm_first"))
    try:
        _practice(request).promote(session.user.name, device_id, form.get("keep_history") != "0")
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    except OperationError as err:
        return _device_page(request, device_id, 400, promote_error=str(err))
    return see(f"/operator/devices/{quote(device_id)}?done=promoted")


def _notify_page(request: Request, session: Session, status: int = 200, error: str | None = None,
                 form: dict | None = None):
    target = _practice(request).target(session.user.name)
    if form is None:
        form = {"webhook_url": "", "email": target.email if target and target.email else "",
                "webhook_format": target.webhook.format if target and target.webhook else "generic",
                "language": target.language if target else i18n.pick_language(request)}
    return render(request, "notify.html", status, target=_target_out(target), form=form, error=error,
                  has_mail=_notify_settings(request).smtp is not None)


@page_router.get("/notify")
def notify_page(request: Request, session: Session = Depends(require_operator)):
    return _notify_page(request, session)


@page_router.post("/notify")
async def save_notify_page(request: Request, session: Session = Depends(require_operator)):
    form = {key: str(value) for key, value in (await request.form()).items()}
    try:
        body = models.LearnerTargetIn(
            webhook_url=form.get("webhook_url") or None, email=form.get("email") or None,
            webhook_format=form.get("webhook_format") or "generic", language=form.get("language") or "ja")
        if form.get("remove") == "yes":
            body = models.LearnerTargetIn()
        target = _target_in(request, body)
        _practice(request).set_target(session.user.name, session.user.name, target)
    except (ValueError, ValidationError) as err:
        return _notify_page(request, session, 400, error=str(err), form=form)
    return see("/operator/notify?done=notify_saved")
