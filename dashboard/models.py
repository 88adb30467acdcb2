"""The public JSON API's shapes: the contract residents' apps and open-data users rely on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

NAME_JA = "the name in Japanese; empty when the device has none (show `name` then)"


class DeviceSummary(BaseModel):
    id: str = Field(examples=["bus-1"])
    kind: str = Field(examples=["bus"], description="bus, garbage_truck, float, snow_gauge, printer_tray, ...")
    name: str = Field(examples=["Town loop bus 1"])
    name_ja: str = Field("", examples=["市街地循環バス 1号"], description=NAME_JA)
    status: str = Field(description="online, offline or unknown (never heard from)")
    last_seen: float | None = Field(None, description="UTC epoch seconds of the newest reading")
    lat: float | None = None
    lon: float | None = None
    values: dict[str, Any] = Field(default_factory=dict, description="newest value of every metric")


class Reading(BaseModel):
    ts: float = Field(description="UTC epoch seconds")
    seq: int
    v: dict[str, Any] = Field(examples=[{"depth_cm": 12.5}])


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: tuple[float, float] = Field(description="[lon, lat], WGS-84")


class LatestPicture(BaseModel):
    ts: float = Field(description="when it was taken, UTC epoch seconds")
    url: str = Field(description="the public copy (black-out areas black); its name never changes")
    thumbnail: str = Field(description="the public copy 320 px wide, for phones")


class FeatureProperties(BaseModel):
    kind: str
    name: str
    name_ja: str = Field("", description=NAME_JA)
    status: str
    ts: float | None = Field(None, description="UTC epoch seconds of the newest reading")
    values: dict[str, Any]
    picture: LatestPicture | None = Field(None, description="a camera's newest picture (absent for other devices)")


class Feature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: PointGeometry | None
    properties: FeatureProperties


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature]
