"""The operator pages under ``/operator``: plain HTML forms, in Japanese and English.

Server-rendered with Jinja2 (templates in ``templates/operator/``); every form
works without JavaScript and carries the session's CSRF token in a hidden field.
A refused change shows the same form again with what to fix.
"""

from __future__ import annotations

import json

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import segno
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from jisaku.dashboard import i18n
from jisaku.dashboard import pictures as pictures_api
from jisaku.dashboard.kind_view import kind_name
from jisaku.gateway.accounts import ROLES, AccountError
from jisaku.contract import kinds
from jisaku.contract.schedules import as_lines
from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.towns import Towns
from jisaku.gateway.updates import UpdateBook

from . import api, models
from .auth import (COOKIE, CSRF_FIELD, LOGIN_CSRF_COOKIE, LoginRefused, Session, check_csrf,
                   clear_login_csrf_cookie, clear_session_cookie, client_ip, current_session, login_csrf,
                   require_admin, require_operator, same_token, set_login_csrf_cookie, set_session_cookie)
from jisaku.gateway.changes import NotFound, OperationError, PublisherMissing

from .operations import Operations
from .publisher import BrokerUnavailable, wait_for_answer
from .scope import within

# Pages wait this long for a device's answer after sending it settings, so that the page
# usually shows "applied" at once; a device that is away shows "pending" instead.
ANSWER_WAIT_S = 3.0
# Messages shown once after a change (?done=…): only these keys, so a link cannot inject text.
DONE = {"settings_sent", "device_saved", "revoked", "user_added", "user_saved", "logged_out", "mask_saved",
        "promoted", "notify_saved"}

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES)

# Login needs no session; every other page does, and every POST its CSRF token.
login_router = APIRouter(prefix="/operator", include_in_schema=False)
router = APIRouter(prefix="/operator", include_in_schema=False,
                   dependencies=[Depends(require_operator), Depends(check_csrf)])


def _ops(request: Request) -> Operations:
    return request.app.state.operator_ops


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = i18n.pick_language(request)
    t = i18n.translator(lang)
    session = current_session(request)
    now = time.time()

    def label(prefix: str, key: str) -> str:
        """The catalog's word for ``prefix.key``, else the key itself (a new action, a new reason)."""
        if prefix == "op.kind":
            return kind_name(key, lang) if kinds.get(key) else key
        text = t(f"{prefix}.{key}")
        return key if text == f"{prefix}.{key}" else text

    def setting_label(kind_id: str, name: str) -> str:
        """What a setting is called on the operator pages, from the kind's folder (else its name)."""
        kind = kinds.get(kind_id)
        setting = kind.folder.settings.get(name) if kind else None
        return setting.label[lang] if setting else name

    response = templates.TemplateResponse(request, f"operator/{template}", {
        "t": t, "lang": lang, "label": label, "setting_label": setting_label, "session": session,
        "csrf_field": CSRF_FIELD, "csrf": session.csrf if session else "",
        # The Japanese name on Japanese pages when the device has one, as residents see it.
        "device_name": lambda d: (lang == "ja" and getattr(d, "name_ja", "")) or d.name or d.id,
        "when": lambda ts: i18n.format_datetime(ts, lang) if ts else "–",
        "ago": lambda ts: i18n.format_ago(ts, lang, now) if ts else t("op.never"),
        "number": lambda value: i18n.format_number(value, lang) if isinstance(value, int | float) else "–",
        "schedule_lines": as_lines,
        "other_lang": "en" if lang == "ja" else "ja",
        "alerts_enabled": getattr(request.app.state, "operator_alerts", None) is not None,
        # A joint body's account chooses the town of what it adds; a town's account adds to its own.
        "towns": Towns(_ops(request).db).list() if session is not None and session.user.town is None else [],
        "several_towns": session is not None and len(Towns(_ops(request).db).ids()) > 1,
        "done": request.query_params.get("done") if request.query_params.get("done") in DONE else None,
        **context,
    }, status_code=status)
    response.headers["Cache-Control"] = "no-store"  # secrets and operator data stay out of caches
    i18n.remember_language(request, response)
    return response


def see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _safe_next(target: str | None) -> str:
    # Only back to our own pages: a login link must not send anyone elsewhere.
    if target and target.startswith("/operator") and not target.startswith("//") and "\\" not in target:
        return target
    return "/operator/devices"


# ---------------------------------------------------------------- login


@login_router.get("/login")
def login_page(request: Request, next: str | None = None):
    if current_session(request) is not None:
        return see(_safe_next(next))
    token = login_csrf(request)
    response = render(request, "login.html", login_token=token, next=_safe_next(next), error=None)
    set_login_csrf_cookie(request, response, token)
    return response


@login_router.post("/login")
async def login(request: Request):
    form = await request.form()
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    next_page = _safe_next(str(form.get("next", "")))
    t = i18n.translator(i18n.pick_language(request))
    token = login_csrf(request)
    # The login form's token must match its cookie, so no other site can log someone in as itself.
    if not same_token(str(form.get(CSRF_FIELD, "")), request.cookies.get(LOGIN_CSRF_COOKIE)):
        response = render(request, "login.html", 403, login_token=token, next=next_page,
                          error=t("op.login.expired"))
        set_login_csrf_cookie(request, response, token)
        return response
    auth = request.app.state.operator_auth
    try:
        session = await run_in_threadpool(auth.login, name, password, client_ip(request))
    except LoginRefused as refused:
        error = (t("op.login.too_many", minutes=refused.wait_minutes) if refused.status == 429
                 else t("op.login.wrong"))
        response = render(request, "login.html", refused.status, login_token=token, next=next_page, error=error,
                          user_name=name)
        set_login_csrf_cookie(request, response, token)
        return response
    response = see(next_page)
    set_session_cookie(request, response, session)
    clear_login_csrf_cookie(response)
    return response


@router.post("/logout")
def logout(request: Request):
    request.app.state.operator_auth.logout(request.cookies.get(COOKIE))
    response = see("/operator/login?done=logged_out")
    clear_session_cookie(response)
    return response


@router.get("")
@router.get("/")
def home() -> Response:
    return see("/operator/devices")


# ---------------------------------------------------------------- devices


@router.get("/devices")
def devices(request: Request):
    views = _ops(request).devices(town=within(request))
    counts = {state: sum(1 for v in views if v.state == state) for state in ("online", "stale", "offline", "never")}
    return render(request, "devices.html", devices=views, counts=counts)


# The device's own newest events on its page: why a relay went off (max_on, link_loss), why
# a watched router is down ("connection refused"), a printer that failed.
EVENTS_SHOWN = 20
UPDATES_SHOWN = 5


def _device_page(request: Request, device_id: str, status: int = 200, **context: Any) -> HTMLResponse:
    ops = _ops(request)
    try:
        view = ops.device(device_id)
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    pictures = request.app.state.pictures
    health = pictures.health(device_id)
    camera = None
    if health["newest"] is not None or health["refused"]:  # a device that sends pictures
        areas, _ = pictures.mask(device_id)
        row = ops.store.db.connection.execute("SELECT info FROM device_status WHERE device_id=?",
                                              (device_id,)).fetchone()
        info = json.loads(row["info"] or "{}") if row else {}  # what the camera last said of its outbox
        camera = {**health, "areas": json.dumps(areas), "queued": info.get("pictures_queued"),
                  "dropped": info.get("pictures_dropped"),
                  "public": pictures_api.described(health["newest"])["url"] if health["newest"] else None}
    # A switch box: its latest commands, and the one just sent (?command=…), whose progress
    # static/switch.js follows until the device answers.
    commands = ops.changes.commands.for_device(device_id, limit=5) if view.outputs else []
    updates = UpdateBook(ops.db)
    shown = request.query_params.get("command")
    sent = next((c for c in commands if c.id == shown), None) or (
        ops.changes.commands.get(shown) if shown and len(shown) <= 100 else None)
    if sent is not None and sent.device_id != device_id:
        sent = None
    if sent is not None and sent.status == "done" and isinstance(sent.result, dict) and \
            (sent.answered_at or 0) >= (view.last_seen or 0):
        # Answered before its state reading came in: show what the device said it did.
        for output in view.outputs:
            if isinstance(sent.result.get(output.name), int | float):
                output.on = int(bool(sent.result[output.name]))
    return render(request, "device.html", status, device=view, kinds=[k.id for k in kinds.all_kinds()],
                  history=ops.audit.entries(limit=20, target=device_id, town=within(request)), camera=camera,
                  can_send=ops.publisher is not None, commands=commands, sent=sent,
                  events=ops.store.events(device_id, limit=EVENTS_SHOWN), software=updates.software(device_id),
                  updates=updates.for_device(device_id, limit=UPDATES_SHOWN), **context)


@router.get("/devices/new")
def new_device_page(request: Request):
    return render(request, "device_new.html", kinds=[k.id for k in kinds.all_kinds()], form={"public": "1"}, error=None)


def _float_field(form, key: str, t) -> float | None:
    text = str(form.get(key, "")).strip().replace(",", ".")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise OperationError(t("op.error.number", field=t(f"op.field.{key}"), value=text)) from None


def _record_from_form(form, device_id: str, t) -> DeviceRecord:
    """The device as the form describes it; OperationError with what to fix otherwise."""
    values = {
        "id": device_id, "kind": str(form.get("kind", "")).strip(), "name": str(form.get("name", "")).strip(),
        "name_ja": str(form.get("name_ja", "")).strip(),
        "public": form.get("public") == "1", "practice": form.get("practice") == "1",
        "interval_s": _float_field(form, "interval_s", t),
        "lat": _float_field(form, "lat", t), "lon": _float_field(form, "lon", t),
    }
    try:
        device = models.NewDevice.model_validate(values)  # the same limits as the API
    except ValueError as err:  # pydantic's ValidationError: name the fields to fix
        fields = sorted({str(e["loc"][0]) if e["loc"] else "lat" for e in err.errors()})
        raise OperationError(t("op.error.fields", fields=", ".join(t(f"op.field.{f}") for f in fields))) from None
    return DeviceRecord(id=device.id, kind=device.kind, name=device.name or device.id, name_ja=device.name_ja,
                        public=device.public, interval_s=device.interval_s, lat=device.lat, lon=device.lon,
                        practice=device.practice, town=str(form.get("town", "")).strip() or None)


@router.post("/devices/new")
async def add_device(request: Request, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    ops = _ops(request)
    try:
        device = _record_from_form(form, str(form.get("id", "")).strip(), t)
        secret = ops.changes.add_device(session.user.name, device, within=session.user.town)
    except OperationError as err:
        return render(request, "device_new.html", 400, kinds=[k.id for k in kinds.all_kinds()], form=dict(form), error=str(err))
    return _secret_page(request, ops, device, secret, new=True)


def _secret_page(request: Request, ops: Operations, device: DeviceRecord, secret: str, new: bool) -> HTMLResponse:
    snippets = ops.snippets(device, secret, str(request.base_url))
    staff = staff_link(device, secret, str(request.base_url))
    return render(request, "secret.html", device=device, secret=secret, snippets=snippets, new=new,
                  staff_link=staff, staff_qr=segno.make(staff, error="m").svg_inline(scale=4) if staff else None)


def staff_link(device: DeviceRecord, secret: str, base_url: str) -> str | None:
    """The kind's staff page (kind.toml [pages] staff) with the secret after "#key=", which the
    browser keeps to itself: the page stores it and takes it out of the address bar."""
    kind = kinds.get(device.kind)
    page = kind.folder.pages.get("staff") if kind else None
    if not page:
        return None
    return base_url.rstrip("/") + page.replace("{id}", quote(device.id)) + "#key=" + quote(secret, safe="")


@router.get("/devices/{device_id}")
def device_page(request: Request, device_id: str):
    return _device_page(request, device_id)


@router.post("/devices/{device_id}")
async def save_device(request: Request, device_id: str, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    ops = _ops(request)
    try:
        ops.changes.update_device(session.user.name, _record_from_form(form, device_id, t))
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    except OperationError as err:
        return _device_page(request, device_id, 400, details_error=str(err))
    return see(f"/operator/devices/{quote(device_id)}?done=device_saved")


@router.post("/devices/{device_id}/picture-mask")
async def save_picture_mask(request: Request, device_id: str, session: Session = Depends(require_operator)):
    form = await request.form()
    ops = _ops(request)
    try:
        areas = json.loads(str(form.get("areas", "")).strip() or "[]")
        await run_in_threadpool(ops.changes.set_picture_mask, session.user.name, device_id, areas)
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    except json.JSONDecodeError as err:
        return _device_page(request, device_id, 400, mask_error=f"black-out areas: not JSON ({err})")
    except OperationError as err:
        return _device_page(request, device_id, 400, mask_error=str(err))
    return see(f"/operator/devices/{quote(device_id)}?done=mask_saved#pictures")


@router.post("/devices/{device_id}/settings")
async def send_settings(request: Request, device_id: str, session: Session = Depends(require_operator)):
    form = await request.form()
    ops = _ops(request)
    t = i18n.translator(i18n.pick_language(request))
    # Only the settings the operator changed: blank fields and unchanged values are left out.
    try:
        view = ops.device(device_id)
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    current = {s.name: s.current for s in view.settings}
    changes = {}
    for setting in view.settings:
        text = str(form.get(f"setting.{setting.name}", "")).strip()
        if setting.type == "schedule":
            # Emptied on purpose is a change too: the device then has no schedule.
            if f"setting.{setting.name}" in form and _lines(text) != _lines(_shown(current.get(setting.name))):
                changes[setting.name] = text
        elif text and text != _shown(current.get(setting.name)):
            changes[setting.name] = text
    if not changes:
        return _device_page(request, device_id, 400, settings_error=t("op.settings.nothing"))
    try:
        config = await run_in_threadpool(ops.changes.push_settings, session.user.name, device_id, changes)
    except OperationError as err:
        return _device_page(request, device_id, 400, settings_error=str(err))
    except PublisherMissing:
        return _device_page(request, device_id, 503, settings_error=t("op.settings.no_publisher"))
    except BrokerUnavailable as err:
        return _device_page(request, device_id, 503, settings_error=t("op.settings.no_broker", detail=str(err)))
    await run_in_threadpool(wait_for_answer, ops.store, device_id, config["rev"], ANSWER_WAIT_S)
    return see(f"/operator/devices/{quote(device_id)}?done=settings_sent")


def _shown(value: Any) -> str:
    """A setting's value as the form shows it (so an untouched field counts as unchanged)."""
    if value is None:
        return ""
    if isinstance(value, list):  # a schedule: one entry a line
        return as_lines(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.replace("\r", "").split("\n") if line.strip()]


def _confirmed(form) -> bool:
    return form.get("confirm") == "yes"


@router.post("/devices/{device_id}/rotate")
async def rotate(request: Request, device_id: str, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    ops = _ops(request)
    if not _confirmed(form):
        return _device_page(request, device_id, 400, secret_error=t("op.secret.confirm_first"))
    try:
        secret = ops.changes.rotate_secret(session.user.name, device_id)
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    return _secret_page(request, ops, ops.registry.get(device_id), secret, new=False)


@router.post("/devices/{device_id}/revoke")
async def revoke(request: Request, device_id: str, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    ops = _ops(request)
    if not _confirmed(form):
        return _device_page(request, device_id, 400, secret_error=t("op.secret.confirm_first"))
    try:
        ops.changes.revoke(session.user.name, device_id)
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    return see(f"/operator/devices/{quote(device_id)}?done=revoked")


# ---------------------------------------------------------------- quarantine and audit


@router.get("/quarantine")
def quarantine(request: Request):
    return render(request, "quarantine.html", quarantine=api.quarantine_view(_ops(request), 200, within(request)))


@router.get("/audit")
def audit(request: Request, target: str | None = None, limit: int = 200):
    target = (target or "").strip()[:200] or None
    entries = _ops(request).audit.entries(limit=max(1, min(limit, 5000)), target=target, town=within(request))
    return render(request, "audit.html", entries=entries, target=target or "")


# ---------------------------------------------------------------- users (admins only)


def _users_page(request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    return render(request, "users.html", status, users=api.visible_users(_ops(request), within(request)), roles=ROLES,
                  error=context.pop("error", None), form=context.pop("form", {}), **context)


@router.get("/users", dependencies=[Depends(require_admin)])
def users(request: Request):
    return _users_page(request)


@router.post("/users", dependencies=[Depends(require_admin)])
async def add_user(request: Request, session: Session = Depends(require_operator)):
    form = await request.form()
    name, role = str(form.get("name", "")).strip(), str(form.get("role", "operator"))
    town = str(form.get("town", "")).strip()
    try:
        await run_in_threadpool(_ops(request).changes.add_user, session.user.name, name, str(form.get("password", "")),
                                role, None if town == "*" else town, session.user.town)
    except AccountError as err:
        return _users_page(request, 400, error=str(err), form={"name": name, "role": role, "town": town})
    return see("/operator/users?done=user_added")


@router.post("/users/{name}", dependencies=[Depends(require_admin)])
async def save_user(request: Request, name: str, session: Session = Depends(require_operator)):
    form = await request.form()
    role = str(form.get("role", "")) or None
    try:
        _ops(request).changes.update_user(session.user.name, name, role=role, disabled=form.get("disabled") == "1")
    except NotFound:
        return render(request, "not_found.html", 404, what=name)
    except AccountError as err:
        return _users_page(request, 400, error=str(err))
    return see("/operator/users?done=user_saved")
