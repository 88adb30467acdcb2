"""The resident counter for residents: a hall display for a TV, and a page for phones.

Both show what the counter device (kinds/counter) last reported — the number each window
is serving, how many wait, the estimated wait — and follow ``/api/v1/stream``, so a call
at a window shows within about a second. They read the device's reading and nothing else:
``window_1``, ``window_2``, …, ``waiting``, ``estimate_min``, ``issued``.

    GET /counter/{id}           for phones: now serving, people waiting, the estimated wait
    GET /counter/{id}/display   full screen for a TV in the hall (kiosk mode: kinds/counter/README.md)

A private counter is answered like one that does not exist, as every residents' page does.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from . import i18n
from .pages import device_town, display_name, freshness, limits, render

router = APIRouter(tags=["pages"])

WINDOW_METRIC = re.compile(r"window_(\d+)\Z")


def windows(values: dict[str, Any]) -> list[dict[str, int]]:
    """``[{"n": 1, "number": 12}, ...]`` in window order; 0 means the window calls nobody now.

    >>> windows({"window_2": 7, "window_1": 0, "waiting": 3})
    [{'n': 1, 'number': 0}, {'n': 2, 'number': 7}]
    """
    found = {int(m.group(1)): int(v) for k, v in values.items() if (m := WINDOW_METRIC.match(k))}
    for n in range(1, int(values.get("windows") or 0) + 1):
        found.setdefault(n, 0)
    return [{"n": n, "number": found[n]} for n in sorted(found)]


def whole_minutes(estimate_min: float) -> int:
    """The wait as residents read it: whole minutes, halves up, at least 1 (as on the printed
    ticket and in counter_live.js, so a page never says 2 where the ticket says 3)."""
    return max(1, math.floor(estimate_min + 0.5))


def counter_view(device: dict[str, Any], lang: str, now: float) -> dict[str, Any]:
    values = device["values"]
    shown = windows(values)
    return {
        "id": device["id"], "name": display_name(device, lang), "windows": shown,
        # the longest number's digits: the hall display sizes its numbers to fit them
        "digits": max([2] + [len(str(w["number"])) for w in shown]),
        "waiting": values.get("waiting"), "estimate_min": values.get("estimate_min"),
        "minutes": whole_minutes(values["estimate_min"]) if values.get("estimate_min") is not None else None,
        "issued": values.get("issued"), "state": freshness(device, now),
        "updated": i18n.format_datetime(device["ts"], lang) if device["ts"] else "",
    }


def _counter(request: Request, device_id: str) -> dict[str, Any] | None:
    device = next((d for d in request.app.state.store.latest(public_only=True) if d["id"] == device_id), None)
    return device if device is not None and device["kind"] == "counter" else None


def _page(request: Request, device_id: str, template: str, hall: bool = False) -> HTMLResponse:
    device = _counter(request, device_id)
    town = device_town(request, device)  # None: another town's counter under this town's path
    if town is None:
        return render(request, "not_found.html", status_code=404, device_id=device_id)
    # The hall display speaks Japanese first to everyone; a phone, its reader's language.
    lang = "ja" if hall else i18n.pick_language(request)
    words = {key: text for key, text in i18n.js_catalog(lang).items() if key.startswith("counter.")}
    config = {"id": device_id, "lang": lang, "words": words, "stream": f"{town.base_path}/api/v1/stream",
              # older than this, the numbers are "not recent" (the counter lost its link)
              "staleAfterS": limits(device["kind"], device["interval_s"]).stale_s}
    return render(request, template, town=town, counter=counter_view(device, lang, time.time()),
                  tr=lambda language, key, **values: i18n.translator(language)(key, **values),
                  config=json.dumps(config, ensure_ascii=False).replace("</", "<\\/"))


@router.get("/counter/{device_id}", response_class=HTMLResponse,
            summary="The resident counter on a phone: now serving, people waiting, the estimated wait")
def counter_page(request: Request, device_id: str) -> HTMLResponse:
    return _page(request, device_id, "counter.html")


@router.get("/counter/{device_id}/display", response_class=HTMLResponse,
            summary="The resident counter's hall display: full screen, for a TV")
def counter_display(request: Request, device_id: str) -> HTMLResponse:
    return _page(request, device_id, "counter_display.html", hall=True)
