"""Open data: the town's public shelters, in the national format, with how full each is now.

``GET /api/v1/shelters.csv`` and ``GET /api/v1/shelters.geojson`` give every public
shelter: the columns of the national shelter list the town imported (same order, same
values), then 開設状況, 避難者数, 収容可能人数, 混雑状況 and 更新日時. ``?dataset=`` picks
the format when a town imported more than one (emergency_sites, gsi_shelters,
gsi_emergency_sites); by default, the one most shelters came from. The licence is the
deployment's, as for the other exports (open-data.json, ``Link`` header, GeoJSON member).

The work is done in jisaku.gateway.shelter_data; this only answers HTTP.

Example::

    curl -o shelters.csv http://127.0.0.1:8000/api/v1/shelters.csv     # opens in Excel as it is
"""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from jisaku.gateway import shelter_data

from .opendata import _licence_headers, town_licence
from .shelter_pages import town_shelters

router = APIRouter(prefix="/api/v1", tags=["open data"])

DATASET_HELP = ("the format to write: " + ", ".join(f"{d.key} ({d.name}, {d.source})" for d in shelter_data.DATASETS)
                + "; default: the one most shelters were imported from")


def _public_states(request: Request) -> list[shelter_data.ShelterState]:
    return town_shelters(request)  # the town's own: /t/<id>/api/v1/shelters.csv for town <id>


def _dataset(key: str | None) -> shelter_data.Dataset | None:
    try:
        return shelter_data.dataset_named(key)
    except shelter_data.ShelterDataError as err:
        raise HTTPException(400, str(err)) from None


@router.get("/shelters.csv", summary="Public shelters in the national format, with how full each is now",
            responses={200: {"content": {"text/csv": {}}}, 400: {"description": "no such format"}})
def shelters_csv(request: Request, dataset: str | None = Query(None, description=DATASET_HELP)) -> Response:
    chosen = _dataset(dataset)
    body = shelter_data.to_csv(_public_states(request), chosen)
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers=_licence_headers(request, town_licence(request), "shelters.csv"))


@router.get("/shelters.geojson", summary="Public shelters as GeoJSON, one Feature each, with how full each is now",
            responses={200: {"content": {"application/geo+json": {}}}, 400: {"description": "no such format"}})
def shelters_geojson(request: Request, dataset: str | None = Query(None, description=DATASET_HELP)) -> Response:
    chosen = _dataset(dataset)
    terms = town_licence(request)
    collection = shelter_data.to_geojson(_public_states(request), chosen)
    # The licence as a foreign member (RFC 7946 section 6.1), as export.geojson has it.
    body = {"type": collection["type"], "license": terms.model_dump(), "features": collection["features"]}
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/geo+json",
                    headers=_licence_headers(request, terms, "shelters.geojson"))
