"""Alerts and alert rules for operators: the pages (``/operator/alerts``, ``/operator/rules``)
and the API (``/api/v1/operator/alerts``, ``/api/v1/operator/rules``).

The rules and alerts themselves live in :class:`jisaku.gateway.alerts.AlertBook`; the
gateway's alert engine judges readings against them. Every rule change and every
acknowledgement goes through :class:`jisaku.gateway.changes.Changes`, which writes it
to the audit log.

A rule form has every field of every kind of condition; only those of the chosen
type are used, so the form works without JavaScript.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from jisaku.dashboard import i18n
from jisaku.dashboard.pages import DEFAULT_CENTER, tiles_config
from jisaku.dashboard.stream import position
from jisaku.gateway.alert_rules import Rule, RuleError
from jisaku.gateway.alerts import Alert, AlertBook, AlertChange, AlertError, AlertNotFound
from jisaku.gateway.changes import Changes

from .api import ERRORS
from .auth import Forbidden, Session, check_csrf, require_operator
from .pages import render, see
from .scope import within

api_router = APIRouter(prefix="/api/v1/operator", tags=["operator alerts"], responses=ERRORS,
                       dependencies=[Depends(require_operator), Depends(check_csrf)])
page_router = APIRouter(prefix="/operator", include_in_schema=False,
                        dependencies=[Depends(require_operator), Depends(check_csrf)])

RuleId = Annotated[int, PathParam(ge=1, le=2**53)]
AlertId = Annotated[int, PathParam(ge=1, le=2**53)]
CONDITION_TYPES = ("above", "below", "no_data", "not_moved", "area", "event")


def _book(request: Request) -> AlertBook:
    return request.app.state.operator_alerts


def _reader(request: Request) -> AlertBook:
    """Where rules and alerts are read: SQLite itself (the engine, when it is the book, lists no town's)."""
    return AlertBook(request.app.state.operator_ops.db)


def _changes(request: Request) -> Changes:
    """Where rule changes and acknowledgements are made, each with its audit entry."""
    return request.app.state.operator_ops.changes


def _check_may_switch(session: Session, request: Request, rule: Rule | None, rule_id: int | None = None) -> None:
    """A rule that switches equipment (one with an action, now or before this change) may be
    saved or deleted only by a switcher or an admin; anyone else gets 403. A rule that is not
    there is AlertNotFound first, as another town's is (scope.py), so 403 never tells them apart."""
    before = _reader(request).rule(rule_id) if rule_id is not None else None
    if rule_id is not None and before is None:
        raise AlertNotFound(f"there is no rule {rule_id}")
    switches = (rule is not None and rule.action is not None) or (before is not None and before.action is not None)
    if switches and not session.user.may_switch:
        raise Forbidden("switcher_only")


def _refused(err: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_code=404 if isinstance(err, AlertNotFound) else 400)


# ---------------------------------------------------------------- API


@api_router.get("/alerts", response_model=list[Alert], summary="Alerts, newest first")
def alerts(request: Request, active_only: bool = False,
           device_id: Annotated[str | None, Query(max_length=64)] = None,
           limit: Annotated[int, Query(ge=1, le=10000)] = 200):
    return _reader(request).alerts(active_only=active_only, device_id=device_id, limit=limit, town=within(request))


@api_router.get("/alerts/history", response_model=list[AlertChange],
                summary="Every raise, acknowledgement and clear, newest first")
def alert_history(request: Request, device_id: Annotated[str | None, Query(max_length=64)] = None,
                  limit: Annotated[int, Query(ge=1, le=10000)] = 200):
    return _reader(request).history(device_id=device_id, limit=limit, town=within(request))


@api_router.post("/alerts/{alert_id}/acknowledge", response_model=Alert,
                 summary="Mark an alert as seen (it stays open until its condition clears)")
def acknowledge_alert(alert_id: AlertId, request: Request, session: Annotated[Session, Depends(require_operator)]):
    try:
        return _changes(request).acknowledge(session.user.name, alert_id)
    except (AlertNotFound, AlertError) as err:
        return _refused(err)


@api_router.get("/rules", response_model=list[Rule], summary="The alert rules")
def rules(request: Request):
    return _reader(request).rules(town=within(request))


@api_router.post("/rules", response_model=Rule, status_code=201, summary="Add an alert rule")
def new_rule(body: Rule, request: Request, session: Annotated[Session, Depends(require_operator)]):
    _check_may_switch(session, request, body)
    try:
        return _changes(request).add_rule(session.user.name, body.model_copy(update={"id": None}),
                                          within=session.user.town)
    except (RuleError, ValueError) as err:
        return _refused(err)


@api_router.put("/rules/{rule_id}", response_model=Rule, summary="Replace an alert rule")
def replace_rule(rule_id: RuleId, body: Rule, request: Request,
                 session: Annotated[Session, Depends(require_operator)]):
    try:
        _check_may_switch(session, request, body, rule_id)
        return _changes(request).update_rule(session.user.name, rule_id, body, within=session.user.town)
    except (AlertNotFound, RuleError, ValueError) as err:
        return _refused(err)


@api_router.delete("/rules/{rule_id}", status_code=204, summary="Delete an alert rule (its open alerts clear)")
def remove_rule(rule_id: RuleId, request: Request, session: Annotated[Session, Depends(require_operator)]):
    try:
        _check_may_switch(session, request, None, rule_id)
        _changes(request).delete_rule(session.user.name, rule_id, within=session.user.town)
    except (AlertNotFound, RuleError) as err:
        return _refused(err)
    return Response(status_code=204)


# ---------------------------------------------------------------- pages


@page_router.get("/alerts")
def alerts_page(request: Request):
    book, town = _reader(request), within(request)
    return render(request, "alerts.html", active=book.alerts(active_only=True, town=town),
                   history=book.history(limit=50, town=town))


@page_router.post("/alerts/{alert_id}/acknowledge")
def acknowledge_page(request: Request, alert_id: AlertId, session: Session = Depends(require_operator)):
    try:
        _changes(request).acknowledge(session.user.name, alert_id)
    except (AlertNotFound, AlertError):
        pass  # cleared or seen by someone else meanwhile: the list shows how it stands now
    return see("/operator/alerts?done=acknowledged")


def _rules_page(request: Request, status: int = 200, form: dict | None = None, error: str | None = None,
                editing: int | None = None):
    return render(request, "rules.html", status, rules=_reader(request).rules(town=within(request)),
                  form=form or {"type": "above"},
                  error=error, editing=editing, types=CONDITION_TYPES, area_map=_area_map(request))


def _area_map(request: Request) -> dict[str, Any]:
    """What the area drawing map (static/area.js) needs: the base map, and every device that has a place."""
    lang = i18n.pick_language(request)
    devices = []
    # Operators see private ones too; of their own town.
    for device in request.app.state.store.latest(public_only=False, town=within(request)):
        where = position(device)
        if where:
            devices.append({"lat": where[0], "lon": where[1],
                            "name": (lang == "ja" and device["name_ja"]) or device["name"] or device["id"]})
    return {"tiles": tiles_config(request.app.state.tiles), "pmtilesScript": "/static/vendor/pmtiles/pmtiles.js",
            "lang": lang, "devices": devices, "center": DEFAULT_CENTER, "zoom": 5}


@page_router.get("/rules")
def rules_page(request: Request, edit: Annotated[int | None, Query(ge=1, le=2**53)] = None):
    form = None
    if edit is not None:
        rule = _reader(request).rule(edit)
        if rule is not None and within(request) in (None, rule.town):  # another town's: as if there were none
            form = _form_of(rule)
    return _rules_page(request, form=form, editing=edit if form else None)


def _form_of(rule: Rule) -> dict[str, Any]:
    condition = rule.condition.model_dump(mode="json")
    form = {"name": rule.name, "scope": rule.device_id or rule.kind or "",
            "scope_is": "device" if rule.device_id else "kind", "enabled": "1" if rule.enabled else "",
            "practice": "1" if rule.practice else "", "town": rule.town or "", **condition}
    if rule.action is not None:
        switch = rule.action.switch
        form.update(action_device=switch.device_id, action_output=switch.output,
                    action_on_raise="1" if switch.on_raise else "0", action_on_clear="1" if switch.on_clear else "0",
                    action_interval=rule.action.min_interval_min)
    if "area" in form:
        form["area"] = json.dumps(form["area"], ensure_ascii=False)
    if "match" in form:
        form["match"] = ", ".join(f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
                                  for key, value in form["match"].items())
    return form


def _match_from_text(text: str) -> dict[str, Any]:
    """``check=router, window=2`` → {"check": "router", "window": 2}: numbers and true/false as the
    device sends them, so they compare equal to its event's values."""
    match: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = (s.strip() for s in part.partition("="))
        if not equals or not key:
            raise ValueError(f"match: write key=value pairs separated by commas, like check=router, not {part!r}")
        try:
            match[key] = json.loads(value) if value in ("true", "false") or value[:1].isdigit() or value[:1] == "-" \
                else value
        except ValueError:
            match[key] = value
    return match


def _rule_from_form(form) -> Rule:
    """The rule the form describes; ValueError (pydantic's, with each field) if it is not one."""
    values = {key: str(value).strip() for key, value in form.items()}
    kind = values.get("type", "")
    condition: dict[str, Any] = {"type": kind}
    fields = {"above": ("metric", "raise_at", "clear_at", "for_min"), "below": ("metric", "raise_at", "clear_at", "for_min"),
              "no_data": ("minutes",), "not_moved": ("minutes", "radius_m"),
              "area": ("area", "alert_when", "for_min"),
              "event": ("event", "clear_event", "clear_after_min", "match")}.get(kind, ())
    for field in fields:
        if values.get(field):
            condition[field] = values[field].replace(",", ".") if field not in (
                "area", "metric", "alert_when", "event", "clear_event", "match") else values[field]
    if "match" in condition:
        condition["match"] = _match_from_text(condition["match"])
    if "area" in condition:
        try:
            condition["area"] = json.loads(condition["area"])
        except ValueError:
            raise ValueError("area: paste a circle {\"type\": \"circle\", \"lat\": …, \"lon\": …, \"radius_m\": …}"
                             " or a GeoJSON polygon") from None
    scope = values.get("scope", "")
    action = None
    if values.get("action_device") or values.get("action_output"):  # both empty: the rule switches nothing
        action = {"switch": {"device_id": values.get("action_device", ""), "output": values.get("action_output", ""),
                             "on_raise": values.get("action_on_raise", "1") == "1",
                             "on_clear": values.get("action_on_clear", "0") == "1"}}
        if values.get("action_interval"):
            action["min_interval_min"] = values["action_interval"].replace(",", ".")
    return Rule.model_validate({
        "name": values.get("name", ""), "enabled": values.get("enabled") == "1", "practice": values.get("practice") == "1",
        "town": values.get("town") or None,
        "device_id" if values.get("scope_is") == "device" else "kind": scope or None,
        "condition": condition, "action": action,
    })


def _problem(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p not in ('condition',)) or 'rule'}: {e['msg']}"
                         for e in err.errors())
    return str(err)


@page_router.post("/rules")
async def add_rule_page(request: Request, session: Session = Depends(require_operator)):
    form = await request.form()
    try:
        rule = _rule_from_form(form)
        _check_may_switch(session, request, rule)
        _changes(request).add_rule(session.user.name, rule, within=session.user.town)
    except (RuleError, ValueError) as err:
        return _rules_page(request, 400, form=dict(form), error=_problem(err))
    return see("/operator/rules?done=rule_saved")


@page_router.post("/rules/{rule_id}")
async def save_rule_page(request: Request, rule_id: RuleId, session: Session = Depends(require_operator)):
    form = await request.form()
    try:
        rule = _rule_from_form(form)
        _check_may_switch(session, request, rule, rule_id)
        _changes(request).update_rule(session.user.name, rule_id, rule, within=session.user.town)
    except AlertNotFound:
        return render(request, "not_found.html", 404, what=str(rule_id))
    except (RuleError, ValueError) as err:
        return _rules_page(request, 400, form=dict(form), error=_problem(err), editing=rule_id)
    return see("/operator/rules?done=rule_saved")


@page_router.post("/rules/{rule_id}/delete")
async def delete_rule_page(request: Request, rule_id: RuleId, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    if form.get("confirm") != "yes":
        return _rules_page(request, 400, error=t("op.secret.confirm_first"))
    try:
        _check_may_switch(session, request, None, rule_id)
        _changes(request).delete_rule(session.user.name, rule_id, within=session.user.town)
    except (AlertNotFound, RuleError):
        return render(request, "not_found.html", 404, what=str(rule_id))
    return see("/operator/rules?done=rule_deleted")
