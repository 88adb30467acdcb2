"""The operator API's shapes (``/api/v1/operator/…``), as they appear in ``/openapi.json``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from jisaku.gateway.accounts import MAX_PASSWORD
from jisaku.gateway.commands import Command
from jisaku.gateway.updates import DeviceSoftware, DeviceUpdate

DeviceId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", examples=["snow-5"])]
Kind = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$", examples=["snow_gauge"],
                            description="bus, garbage_truck, float, snow_gauge, printer_tray, ...")]
UserName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", examples=["tanaka"])]
Role = Literal["operator", "switcher", "admin"]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Interval = Annotated[float, Field(gt=0, le=7 * 86400, description="expected seconds between readings")]
Number = Annotated[float, Field(allow_inf_nan=False)]


class LoginRequest(BaseModel):
    name: Annotated[str, Field(max_length=64)]
    password: Annotated[str, Field(max_length=MAX_PASSWORD)]


class SessionInfo(BaseModel):
    name: str
    role: Role
    csrf_token: str = Field(description="send it as the X-CSRF-Token header with every POST, PATCH and DELETE")
    expires: float = Field(description="UTC epoch seconds; log in again after that")
    town: str | None = Field(None, description="the town this account sees; null: every town (a joint body's)")


class ConfigState(BaseModel):
    rev: int
    settings: dict[str, Any]
    state: Literal["applied", "refused", "pending"]
    reason: str | None = Field(None, description="why the device refused, in its own words")
    acked: float | None = None


class SettingLimit(BaseModel):
    name: str
    low: float | None = Field(description="null for a schedule")
    high: float | None
    current: Any = Field(None, description="a number, or a schedule's entries")
    type: Literal["number", "schedule"] = "number"


class ScheduleEntry(BaseModel):
    """One entry of a schedule (switching spec §3); checked in full by contract/schedules.py."""

    output: Annotated[str, Field(max_length=64, examples=["heater"])]
    on: Annotated[str, Field(max_length=5, examples=["05:00"])]
    off: Annotated[str, Field(max_length=5, examples=["08:00"])]
    days: Annotated[str, Field(max_length=40, examples=["mon-fri"])] | None = None


class Output(BaseModel):
    """One output a device can switch (its status lists it), with its state from the newest reading."""

    name: str = Field(examples=["heater"])
    label: str = Field(examples=["Road heater"])
    on: int | None = Field(description="1 on, 0 off (the newest <name>_on reading); null: not reported yet")
    safe: Literal["off", "on"] = Field(description="where the device puts it at start, on a fault or link loss")
    max_on_min: float = Field(description="the longest it stays on without a break; 0: no limit")


class OperatorDevice(BaseModel):
    id: str
    kind: str
    name: str
    name_ja: str = Field(description="the name on the Japanese pages; empty: they show `name`")
    public: bool
    practice: bool = Field(False, description="a learner's device: on the practice map, never on residents' pages")
    interval_s: float | None
    lat: float | None
    lon: float | None
    state: Literal["online", "offline", "stale", "never", "revoked"] = Field(
        description="stale: silent for 3 expected intervals; never: not heard from yet; revoked: has no secret")
    last_seen: float | None
    battery_pct: float | None
    firmware: str | None
    values: dict[str, Any]
    config: ConfigState | None
    settings: list[SettingLimit] = Field(description="what can be changed from afar, with its limits")
    outputs: list[Output] = Field([], description="what can be switched on and off (a switch box's outputs)")
    schedule_note: str | None = Field(None, description='what the device says of its schedule, e.g. "no clock"'
                                                        " (it does not run it until its clock is set)")
    town: str = Field("", description="the town it belongs to")


class _Place(BaseModel):
    @model_validator(mode="after")
    def _both_or_neither(self):
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        return self


class NewDevice(_Place):
    id: DeviceId
    kind: Kind
    name: Annotated[str, Field(max_length=200)] = ""
    name_ja: Annotated[str, Field(max_length=200, description="the name in Japanese; empty: `name` everywhere")] = ""
    public: bool = True
    practice: bool = Field(False, description="a learner's device: the whole pipeline, shown on the practice map"
                                              " (/operator/practice), never to residents; promote it later")
    interval_s: Interval | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    town: Annotated[str, Field(max_length=32, examples=["main"])] | None = Field(
        None, description="the town it belongs to; only an account of every town (a joint body's) may name one:"
                          " left out, the account's own town (or the first)")


class DeviceChange(_Place):
    """What to change; fields left out stay as they are (give lat and lon together)."""

    kind: Kind | None = None
    name: Annotated[str, Field(max_length=200)] | None = None
    name_ja: Annotated[str, Field(max_length=200, description="\"\" takes the Japanese name away")] | None = None
    public: bool | None = None
    practice: bool | None = Field(None, description="true makes it a practice device; back to false only by"
                                                    " promotion (POST …/promote)")
    interval_s: Interval | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class Snippets(BaseModel):
    config_json: str = Field(description="MicroPython board: save as /config.json")
    device_toml: str = Field(description="Raspberry Pi: the [device] table of device.toml")
    pi_command: str
    traccar_url: str | None = Field(description="phone: Traccar Client's Server URL")
    traccar_identifier: str | None
    warnings: list[str]


class DeviceSecret(BaseModel):
    device: OperatorDevice
    secret: str = Field(description="shown only this once; the server keeps only its hash")
    snippets: Snippets


class SettingsChange(BaseModel):
    settings: dict[Annotated[str, Field(max_length=64)],
                   Number | Annotated[list[ScheduleEntry], Field(max_length=100)]
                   | Annotated[str, Field(max_length=4000)]] = Field(
        examples=[{"left_after_s": 45}, {"schedule": [{"output": "heater", "on": "05:00", "off": "08:00",
                                                       "days": "mon-fri"}]}],
        description="numbers within their limits; a schedule as a list of entries, or as lines like"
                    " \"heater 05:00-08:00 mon-fri\"")


class PictureMask(BaseModel):
    areas: list[Annotated[list[float], Field(min_length=4, max_length=4)]] = Field(
        max_length=50, examples=[[[0.70, 0.10, 0.20, 0.25]]],
        description="black-out areas as [x, y, width, height], fractions of the picture (0 to 1) from its"
                    " top left; painted black in every public copy")


class PictureMaskSaved(PictureMask):
    rev: int = Field(description="in the public copies' names, so browsers never keep an old one")


class SettingsSent(BaseModel):
    rev: int
    settings: dict[str, Any]
    state: ConfigState | None = Field(description="usually pending: the device answers within seconds when online")


class SwitchRequest(BaseModel):
    """Switch one output; ``confirm`` must be true: this acts on real equipment."""

    on: bool = Field(description="true: switch on; false: switch off")
    confirm: bool = Field(False, description="must be true: a switch acts on real equipment")


class CommandSent(BaseModel):
    command: Command


class QuarantinedMessage(BaseModel):
    received: float
    topic: str
    payload: str = Field(description="the message's first bytes, as text")
    reason: str
    detail: str


class Quarantine(BaseModel):
    counts: dict[str, int] = Field(description="messages kept aside, per reason")
    messages: list[QuarantinedMessage] = Field(description="newest first")


class AuditEntry(BaseModel):
    id: int
    ts: float
    actor: str
    action: str
    target: str
    town: str | None = Field(None, description="the town of what was changed; null: the deployment's")
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class UserInfo(BaseModel):
    name: str
    role: Role
    disabled: bool
    created: float
    changed: float
    town: str | None = Field(None, description="the town it sees; null: every town (a joint body's account)")


class NewUser(BaseModel):
    name: UserName
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD)]
    role: Role = "operator"
    town: Annotated[str, Field(max_length=32, examples=["main"])] | None = Field(
        None, description="the town it belongs to; only an account of every town (a joint body's) may name one:"
                          " left out, the account's own town (or the first)")
    all_towns: bool = Field(False, description="an account of every town (a joint body's); only such an admin"
                                               " may make one")


class UserChange(BaseModel):
    role: Role | None = None
    disabled: bool | None = None


class BundleInfo(BaseModel):
    """A published update bundle (docs/updates.md)."""

    kind: str = Field(examples=["snow_gauge"], description="the kind of device it is for; only those may download it")
    runs_on: Literal["board", "pi"] = Field(description="a MicroPython board's code, or a Raspberry Pi's app folder")
    version: str = Field(examples=["1.4.0"])
    made: float = Field(description="when it was built, UTC epoch seconds")
    key_id: str = Field(description="which signing key signed it (the first 16 hex digits of the key's SHA-256)")
    files: int
    bytes: int = Field(description="the whole bundle file's size")
    sha256: str = Field(description="of the whole bundle file: compare it with the one you built")
    download: str = Field(description="where a device of this kind downloads it (with its own id and secret)",
                          examples=["/api/v1/devices/{device_id}/bundles/1.4.0"])


class PublishedBundle(BundleInfo):
    new: bool = Field(description="false: the very same bundle was published before, nothing changed")


class RolloutRequest(BaseModel):
    """Offer a published bundle to devices (docs/updates.md, "Offering an update")."""

    kind: str = Field(max_length=32, examples=["snow_gauge"])
    version: str = Field(max_length=64, examples=["1.4.0"])
    devices: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=10_000, examples=[["snow-1"]],
        description="the devices to offer it to; left out: every device of the kind that runs on what the bundle"
                    " is for (board or pi)")
    first: int = Field(0, ge=0, description="how many go first; the rest only once those are back and running."
                                            " 0: all at once")
    wait_min: float = Field(30, gt=0, le=7 * 24 * 60, description="how long the first have to be running, download"
                                                                 " included, before the rollout stops")
    trial_s: int = Field(300, ge=10, le=24 * 3600, description="told to each device: back online and reporting"
                                                              " within this after switching, or it goes back")
    town: Annotated[str, Field(max_length=32)] | None = Field(
        None, description="whose devices it may reach: an account of every town (a joint body's) may name one;"
                          " left out, the account's own town (a joint body's: every town)")


class DeviceUpdates(BaseModel):
    software: DeviceSoftware | None = Field(description="what the device last said it runs (null: it never said)")
    updates: list[DeviceUpdate] = Field(description="its update offers, newest first")


class Promotion(BaseModel):
    keep_history: bool = Field(description="keep what it recorded while practising (it then shows on the residents'"
                                           " map and in open data); false deletes its readings, events, pictures,"
                                           " hourly figures and latest state")


class Promoted(BaseModel):
    device: OperatorDevice
    deleted: dict[str, int] = Field(description="rows deleted, by table (empty with keep_history)")


class LearnerTargetIn(BaseModel):
    """Where your practice alerts go: a webhook URL (with its format) or an e-mail address; neither removes it."""

    webhook_url: Annotated[str, Field(max_length=2000, examples=["https://hooks.slack.com/services/T0/B0/XX"])] | None = None
    webhook_format: Literal["generic", "slack", "teams", "lineworks"] = "generic"
    email: Annotated[str, Field(max_length=254, examples=["tanaka@town.example.jp"])] | None = None
    language: Literal["ja", "en"] = "ja"


class LearnerTargetOut(BaseModel):
    kind: Literal["webhook", "email"] | None = Field(description="null: your practice alerts are on the alerts page only")
    to: str | None = Field(description="the webhook's host (never its token), or the address")
    webhook_format: str | None = None
    language: Literal["ja", "en"] = "ja"
