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

from jisaku.kinds.shelter import occupancy

from . import i18n
from .pages import display_name, render

router = APIRouter(tags=["pages"])

# Open shelters with room first; full, then closed ones last.
ORDER = {"vacant": 0, "crowded": 1, "full": 2, "closed": 3}


def shelter_rows(devices: list[dict[str, Any]], lang: str, now: float) -> list[dict[str, Any]]:
    rows = []
    for device in devices:
        if device["kind"] != "shelter":
            continue
        state = occupancy.now(device["values"], device.get("settings"))
        share = state["count"] / state["capacity"] if state["capacity"] and state["count"] is not None else 0
        rows.append({
            "id": device["id"], "name": display_name(device, lang), **state, "share": share,
            "label": occupancy.LABELS[state["level"]][lang], "colour": occupancy.COLOURS[state["level"]],
            "text": occupancy.TEXT_COLOURS[state["level"]],
            "address": (device.get("attributes") or {}).get("住所", ""),
            "position": (device["lat"], device["lon"]) if device["lat"] is not None else None,
            "updated": i18n.format_ago(device["ts"], lang, now) if device["ts"] else "",
        })
    return sorted(rows, key=lambda r: (ORDER[r["level"]], r["share"], r["name"]))


@router.get("/shelters", response_class=HTMLResponse, summary="Every public shelter: open, how full, the way there")
def shelters_page(request: Request) -> HTMLResponse:
    lang = i18n.pick_language(request)
    rows = shelter_rows(request.app.state.store.latest(public_only=True), lang, time.time())
    return render(request, "shelters.html", shelters=rows)
