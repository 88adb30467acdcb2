"""Shelters for residents: every public shelter as a plain list, the light page for a disaster.

The map shows shelters as a layer (live.js); this page says the same in text, fastest on
a crowded mobile network: open ones first, the emptiest first, each with how many are in,
its capacity, its address and a link that opens the way there in the phone's map app.

    GET /shelters        the list (the disaster-mode banner links here)
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from jisaku.gateway.shelter_data import ShelterState, shelter_states
from jisaku.kinds.shelter import occupancy

from . import i18n
from .pages import render
from .towns import town_of

router = APIRouter(tags=["pages"])

# Open shelters with room first; full, then closed ones last.
ORDER = {"vacant": 0, "crowded": 1, "full": 2, "closed": 3}


# Where the national formats keep a shelter's address (デジタル庁, then 国土地理院's).
ADDRESS_COLUMNS = ("所在地_連結表記", "住所")


def shelter_rows(states: list[ShelterState], lang: str, now: float) -> list[dict[str, Any]]:
    rows = []
    for state in states:
        imported = (state.attributes or {}).get("row", {})
        rows.append({
            "id": state.id, "name": (lang == "ja" and state.name_ja) or state.name or state.id,
            "level": state.level, "count": state.count, "capacity": state.capacity,
            "share": state.count / state.capacity if state.capacity and state.count is not None else 0,
            "label": occupancy.LABELS[state.level][lang], "colour": occupancy.COLOURS[state.level],
            "text": occupancy.TEXT_COLOURS[state.level],
            "address": next((imported[c] for c in ADDRESS_COLUMNS if imported.get(c)), ""),
            "position": (state.lat, state.lon) if state.lat is not None else None,
            "updated": i18n.format_ago(state.updated, lang, now) if state.updated else "",
        })
    return sorted(rows, key=lambda r: (ORDER[r["level"]], r["share"], r["name"]))


def town_shelters(request: Request) -> list[ShelterState]:
    """The public shelters of the request's town (dashboard/towns.py)."""
    registry = request.app.state.registry
    mine = {device.id for device in registry.devices(public_only=True, town=town_of(request).id)}
    return [state for state in shelter_states(request.app.state.store, registry, public_only=True)
            if state.id in mine]


@router.get("/shelters", response_class=HTMLResponse, summary="Every public shelter: open, how full, the way there")
def shelters_page(request: Request) -> HTMLResponse:
    lang = i18n.pick_language(request)
    states = town_shelters(request)
    rows = shelter_rows(states, lang, time.time())
    return render(request, "shelters.html", shelters=rows)
