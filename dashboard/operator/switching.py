"""Switching equipment from afar: the operator API and the device page's switch forms.

Only a switcher or an admin may switch (``require_switcher``); a plain operator sees the
outputs and their state but no button, and the API answers 403 saying which role it takes.
Every switch is a command (jisaku.gateway.commands): the page shows it "sent", then
"done", "refused (why)" or "no answer", updated by static/switch.js without a reload.

API::

    POST /api/v1/operator/devices/heater-1/outputs/heater  {"on": true, "confirm": true}
         → 202 {"command": {"id": "c-8f3a…", "status": "sent", …}}
    GET  /api/v1/operator/commands/c-8f3a…                 → {"command": {…, "status": "done"}}
    GET  /api/v1/operator/devices/heater-1/commands        → [{…}, …] newest first

Pages: the device page's "Outputs" section posts to ``/operator/devices/<id>/outputs/<output>``;
the first post shows a confirmation, the second (``confirm=yes``) switches.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from jisaku.dashboard import i18n
from jisaku.gateway.changes import Changes, NotFound, OperationError, PublisherMissing
from jisaku.gateway.commands import COMMAND_EXPIRY_S, Command, CommandBook

from . import models
from .api import ERRORS, _error
from .auth import Session, check_csrf, require_operator, require_switcher
from .pages import _device_page, render, see
from .publisher import BrokerUnavailable

api_router = APIRouter(prefix="/api/v1/operator", tags=["operator switching"],
                       responses={**ERRORS, 403: {"description": "switching needs the role switcher or admin,"
                                                                 " or the X-CSRF-Token header is missing or wrong"}},
                       dependencies=[Depends(require_switcher), Depends(check_csrf)])
page_router = APIRouter(prefix="/operator", include_in_schema=False,
                        dependencies=[Depends(require_operator), Depends(check_csrf)])

DeviceIdPath = Annotated[str, PathParam(max_length=64, examples=["heater-1"])]
OutputPath = Annotated[str, PathParam(max_length=64, examples=["heater"])]
CommandIdPath = Annotated[str, PathParam(max_length=100, examples=["c-8f3a91c2"])]
_REFUSED = (NotFound, OperationError, PublisherMissing, BrokerUnavailable)


def _changes(request: Request) -> Changes:
    return request.app.state.operator_ops.changes


def _book(request: Request) -> CommandBook:
    return _changes(request).commands


def expiry_s(request: Request) -> float:
    """How long an operator's command is good for (``app.state.command_expiry_s``; 2 minutes)."""
    return getattr(request.app.state, "command_expiry_s", COMMAND_EXPIRY_S)


# ---------------------------------------------------------------- API


@api_router.post("/devices/{device_id}/outputs/{output}", response_model=models.CommandSent, status_code=202,
                 summary="Switch one of a device's outputs on or off (switchers and admins)",
                 responses={503: {"description": "the broker cannot be reached; nothing was sent"}})
async def switch(device_id: DeviceIdPath, output: OutputPath, body: models.SwitchRequest, request: Request,
                 session: Annotated[Session, Depends(require_switcher)]):
    if _changes(request).registry.get(device_id) is None:  # first, as for another town's device (scope.py)
        return _error(NotFound(f"no device {device_id!r}"))
    if not body.confirm:
        return JSONResponse({"detail": 'confirm: send "confirm": true to switch; it acts on real equipment'},
                            status_code=400)
    try:
        command = await run_in_threadpool(_changes(request).switch, session.user.name, device_id, output,
                                          body.on, expiry_s(request))
    except _REFUSED as err:
        return _error(err)
    return JSONResponse(models.CommandSent(command=command).model_dump(mode="json"), status_code=202)


@api_router.get("/commands/{command_id}", response_model=models.CommandSent,
                summary="One command and its answer: sent, done, refused (code, reason) or no_answer")
def command(command_id: CommandIdPath, request: Request):
    found = _book(request).get(command_id)
    if found is None:
        return JSONResponse({"detail": f"no command {command_id!r}"}, status_code=404)
    return models.CommandSent(command=found)


@api_router.get("/devices/{device_id}/commands", response_model=list[Command],
                summary="A device's commands and their answers, newest first")
def device_commands(device_id: DeviceIdPath, request: Request,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 50):
    if _changes(request).registry.get(device_id) is None:
        return JSONResponse({"detail": f"no device {device_id!r}"}, status_code=404)
    return _book(request).for_device(device_id, limit=limit)


# ---------------------------------------------------------------- the device page's forms


@page_router.post("/devices/{device_id}/outputs/{output}", dependencies=[Depends(require_switcher)])
async def switch_page(request: Request, device_id: str, output: str, session: Session = Depends(require_operator)):
    form = await request.form()
    on = form.get("on") == "1"
    t = i18n.translator(i18n.pick_language(request))
    if form.get("confirm") != "yes":  # the first press asks "really?" on the device page
        return _device_page(request, device_id, confirm_switch={"output": output, "on": on})
    try:
        command = await run_in_threadpool(_changes(request).switch, session.user.name, device_id, output, on,
                                          expiry_s(request))
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    except OperationError as err:
        return _device_page(request, device_id, 400, switch_error=str(err))
    except PublisherMissing:
        return _device_page(request, device_id, 503, switch_error=t("op.settings.no_publisher"))
    except BrokerUnavailable as err:
        return _device_page(request, device_id, 503, switch_error=t("op.settings.no_broker", detail=str(err)))
    return see(f"/operator/devices/{quote(device_id)}?command={quote(command.id)}#outputs")
