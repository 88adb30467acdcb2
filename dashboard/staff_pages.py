"""Pages for staff that act as a device: a shelter's tally on a phone, the counter on a tablet.

Each page logs in as its device (the device's own secret, not an operator account: a
shelter volunteer needs no operator rights) and sends what it counts through
``/api/v1/devices/{id}/data`` (dashboard/device_posts.py). The page itself is the same for
every id, so it tells a stranger nothing; only the login says whether the device exists.

    GET /shelters/{id}/staff    big "+1" / "−1" buttons for the shelter's door
    GET /counter/{id}/staff     take a ticket, call the next person, call again

An operator hands out the link with the secret after "#key=" (operator pages, device page),
or the staff type the secret in once.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from . import i18n
from .pages import render

router = APIRouter(tags=["staff pages"])


def staff_config(request: Request, device_id: str) -> str:
    lang = i18n.pick_language(request)
    words = {key: text for key, text in i18n.js_catalog(lang).items() if key.startswith("staff.")}
    return json.dumps({"id": device_id, "lang": lang, "words": words}, ensure_ascii=False).replace("</", "<\\/")


@router.get("/shelters/{device_id}/staff", response_class=HTMLResponse,
            summary="A shelter's tally for its staff: +1 / −1, kept when there is no signal")
def shelter_staff(request: Request, device_id: str) -> HTMLResponse:
    return render(request, "staff_shelter.html", device_id=device_id, title="staff.shelter.title",
                  config=staff_config(request, device_id))


@router.get("/counter/{device_id}/staff", response_class=HTMLResponse,
            summary="The resident counter on a tablet: take a ticket, next, call again; works with no server")
def counter_staff(request: Request, device_id: str) -> HTMLResponse:
    return render(request, "staff_counter.html", device_id=device_id, title="staff.counter.title",
                  config=staff_config(request, device_id))
