"""Shelters for operators: open and close them one by one, or all at once (disaster mode).

    GET  /operator/shelters                     every shelter: state, count, capacity, open / close
    POST /operator/shelters/{id}/open           open=1 or 0 (a form; confirm=yes)
    POST /operator/shelters/disaster-mode       on=1 or 0 (a form; confirm=yes)
    GET  /api/v1/operator/shelters              the same as JSON
    PUT  /api/v1/operator/shelters/{id}/open    {"open": true}
    PUT  /api/v1/operator/disaster-mode         {"on": true}

Disaster mode is each town's own: an operator turns their town's; a joint-body account (no
town) names the town (``{"on": true, "town": "hida"}``, a ``town`` form field or ``?town=``),
else the first town. Naming another town than one's own is answered as a town that does not exist.

Opening a shelter sends it the setting ``open = 1`` (its tally shows it; the residents' map
shows it at once, from the server's copy of the setting). Disaster mode opens every shelter
and puts a banner on every residents' page; ending it closes every shelter. Each goes
through :class:`jisaku.gateway.changes.Changes`, so it is in the audit log with who did it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from jisaku.dashboard import i18n
from jisaku.gateway.changes import Changes, NotFound, OperationError, PublisherMissing
from jisaku.gateway.shelter_data import shelter_states
from jisaku.gateway.town_state import TownState
from jisaku.gateway.towns import Towns
from jisaku.kinds.shelter.occupancy import LABELS

from .api import ERRORS
from .auth import Session, check_csrf, current_session, require_operator
from .pages import render, see
from .publisher import BrokerUnavailable
from .scope import within

api_router = APIRouter(prefix="/api/v1/operator", tags=["operator shelters"], responses=ERRORS,
                       dependencies=[Depends(require_operator), Depends(check_csrf)])
page_router = APIRouter(prefix="/operator", include_in_schema=False,
                        dependencies=[Depends(require_operator), Depends(check_csrf)])

DeviceId = Annotated[str, PathParam(max_length=64)]


class OpenShelter(BaseModel):
    open: bool


class DisasterMode(BaseModel):
    on: bool
    town: str | None = Field(None, description="the town (joint-body accounts; default the first); a town"
                                                " operator's own town if left out")


def _town(request: Request, session: Session, named: str | None) -> str:
    """The town whose disaster mode this operator means; NotFound (the same words as a missing town)
    when they name a town that is not theirs."""
    towns = Towns(request.app.state.operator_ops.store.db)
    own = session.user.town
    town = named or own or towns.first()
    if towns.get(town) is None or (own is not None and town != own):
        raise NotFound(f"no town {town!r}")
    return town


def _changes(request: Request) -> Changes:
    return request.app.state.operator_ops.changes


def _shelters(request: Request) -> list[dict[str, Any]]:
    """Every shelter of the account's town (of every town for a joint body's account)."""
    ops = request.app.state.operator_ops
    town = within(request)
    ours = None if town is None else {device.id for device in ops.registry.devices(town=town)}
    return [asdict(state) for state in shelter_states(ops.store, ops.registry, public_only=False)
            if ours is None or state.id in ours]


def _must_be_shelter(request: Request, device_id: str) -> None:
    device = request.app.state.operator_ops.registry.get(device_id)
    if device is None or device.kind != "shelter":
        raise NotFound(f"no shelter {device_id!r}")


def _refused(err: Exception) -> JSONResponse:
    if isinstance(err, NotFound):
        return JSONResponse({"detail": str(err)}, status_code=404)
    if isinstance(err, (PublisherMissing, BrokerUnavailable)):
        return JSONResponse({"detail": f"the shelter could not be told: {err}"}, status_code=503)
    return JSONResponse({"detail": str(err)}, status_code=400)


# ---------------------------------------------------------------- API


@api_router.get("/shelters", summary="Every shelter: open or closed, how many are in, its capacity")
def shelters(request: Request, session: Annotated[Session, Depends(require_operator)]) -> dict[str, Any]:
    """``disaster_mode`` is the operator's town's (a joint-body account: the first town's)."""
    town = _town(request, session, None)
    mode = TownState(request.app.state.operator_ops.store.db).disaster_mode(town)
    return {"disaster_mode": mode, "shelters": _shelters(request)}


@api_router.put("/shelters/{device_id}/open", summary="Open or close one shelter")
def open_shelter(device_id: DeviceId, body: OpenShelter, request: Request,
                 session: Annotated[Session, Depends(require_operator)]):
    try:
        _must_be_shelter(request, device_id)
        _changes(request).push_settings(session.user.name, device_id, {"open": int(body.open)})
    except (NotFound, OperationError, PublisherMissing, BrokerUnavailable) as err:
        return _refused(err)
    return next(s for s in _shelters(request) if s["id"] == device_id)


@api_router.put("/disaster-mode", summary="Disaster mode on (every shelter opened, a banner for residents) or off")
def disaster_mode(body: DisasterMode, request: Request, session: Annotated[Session, Depends(require_operator)]):
    try:
        town = _town(request, session, body.town)
        problems = _changes(request).set_disaster_mode(session.user.name, body.on, town)
    except (NotFound, PublisherMissing, BrokerUnavailable) as err:
        return _refused(err)
    return {"on": body.on, "town": town, "not_reached": problems}


# ---------------------------------------------------------------- pages


def _page(request: Request, status: int = 200, **context: Any):
    lang = i18n.pick_language(request)
    # The page's town: the operator's own; a joint-body account picks one (?town=, default the first).
    session = current_session(request)
    towns = Towns(request.app.state.operator_ops.store.db)
    joint = session is not None and session.user.town is None
    picked = request.query_params.get("town") if joint else None
    town = (session.user.town if session else None) or (picked if picked and towns.get(picked) else towns.first())
    mode = TownState(request.app.state.operator_ops.store.db).disaster_mode(town)
    context.setdefault("disaster_town", town)
    context.setdefault("disaster_towns", towns.ids() if joint else [])
    rows = _shelters(request)
    for row in rows:
        row["level_label"] = LABELS[row["level"]][lang]
    return render(request, "shelters.html", status, shelters=rows, disaster=mode, **context)


@page_router.get("/shelters")
def shelters_page(request: Request):
    return _page(request)


@page_router.post("/shelters/disaster-mode")
async def disaster_mode_form(request: Request, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    if form.get("confirm") != "yes":
        return _page(request, 400, error=t("op.shelters.confirm_first"))
    try:
        town = _town(request, session, form.get("town") or request.query_params.get("town"))
        problems = await run_in_threadpool(_changes(request).set_disaster_mode, session.user.name,
                                           form.get("on") == "1", town)
    except NotFound as err:
        return _page(request, 404, error=str(err))
    except (PublisherMissing, BrokerUnavailable) as err:
        return _page(request, 503, error=t("op.shelters.not_sent", detail=str(err)))
    if problems:
        return _page(request, 200, error=t("op.shelters.some_not_reached", ids=", ".join(sorted(problems))))
    return see(f"/operator/shelters?town={town}" if session.user.town is None else "/operator/shelters")


@page_router.post("/shelters/{device_id}/open")
async def open_shelter_form(request: Request, device_id: DeviceId, session: Session = Depends(require_operator)):
    form = await request.form()
    t = i18n.translator(i18n.pick_language(request))
    if form.get("confirm") != "yes":
        return _page(request, 400, error=t("op.shelters.confirm_first"))
    try:
        _must_be_shelter(request, device_id)
        await run_in_threadpool(_changes(request).push_settings, session.user.name, device_id,
                                {"open": int(form.get("open") == "1")})
    except NotFound:
        return render(request, "not_found.html", 404, what=device_id)
    except (OperationError, PublisherMissing, BrokerUnavailable) as err:
        return _page(request, 503, error=t("op.shelters.not_sent", detail=str(err)))
    return see("/operator/shelters")
