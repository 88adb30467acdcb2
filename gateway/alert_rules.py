"""Alert rules: what to watch, on which devices, and when an alert is raised and cleared.

Five kinds of condition: ``above`` / ``below`` a threshold (with separate raise and
clear levels, and optionally a minimum duration), ``no_data``, ``not_moved``, ``area``
and ``event`` (an event the device sends, such as an equipment watch's ``down``). A rule is for one device (``device_id``) or every device of a kind
(``kind``). What each kind means for operators: docs/alerts.md.

A rule may also have an ``action``: switch an output of a switch box when its alert is
raised, and again when it clears, at most once every ``min_interval_min`` (rule_actions.py)::

    "action": {"switch": {"device_id": "heater-1", "output": "sprinkler", "on_raise": true, "on_clear": false},
               "min_interval_min": 10}

Example::

    rule = Rule.model_validate({"name": "Deep snow", "kind": "snow_gauge", "condition": {
        "type": "above", "metric": "depth_cm", "raise_at": 30, "clear_at": 25}})
    rule.applies_to("snow-1", "snow_gauge")     # True
    Rule.model_validate({"name": "x", "condition": {"type": "no_data", "minutes": 30}})  # ValidationError: no scope
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jisaku.contract import protocol

from .areas import AreaError, parse_area


class RuleError(ValueError):
    """A rule that cannot be saved: an unknown device, an unknown rule id."""


class Threshold(BaseModel):
    """Above or below a level, with hysteresis and an optional minimum duration."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["above", "below"]
    metric: str = Field(description="the value to watch, e.g. depth_cm")
    raise_at: float
    clear_at: float | None = Field(None, description="defaults to raise_at (no hysteresis)")
    for_min: float = Field(0, ge=0, description="raise only once the value has stayed there this long")

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        if not protocol.METRIC_NAME.match(metric):
            raise ValueError(f"metric {metric!r} should be a name like depth_cm (a-z, 0-9, _)")
        return metric

    @model_validator(mode="after")
    def _clear_on_the_safe_side(self) -> "Threshold":
        if self.clear_at is None:
            self.clear_at = self.raise_at
        if self.type == "above" and self.clear_at > self.raise_at:
            raise ValueError(f"clear_at ({self.clear_at:g}) must be at or below raise_at ({self.raise_at:g}) for an"
                             " 'above' rule: the alert clears once the value falls back below clear_at")
        if self.type == "below" and self.clear_at < self.raise_at:
            raise ValueError(f"clear_at ({self.clear_at:g}) must be at or above raise_at ({self.raise_at:g}) for a"
                             " 'below' rule: the alert clears once the value rises back above clear_at")
        return self


class NoData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["no_data"]
    minutes: float = Field(gt=0)


class NotMoved(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["not_moved"]
    minutes: float = Field(gt=0)
    radius_m: float = Field(50, gt=0, description="moving less than this counts as standing still (GPS wanders)")


class InArea(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["area"]
    area: dict[str, Any] = Field(description="a circle or a GeoJSON Polygon / MultiPolygon / Feature")
    alert_when: Literal["inside", "outside"] = "inside"
    for_min: float = Field(0, ge=0)

    @field_validator("area")
    @classmethod
    def _area(cls, area: dict[str, Any]) -> dict[str, Any]:
        try:
            parse_area(area)
        except AreaError as err:
            raise ValueError(str(err)) from None
        return area


class OnEvent(BaseModel):
    """Raised by an event the device sends (``down``, ``printer_failed``), so the alert carries
    the device's own words (the reason a router is down); cleared by another event (``up``)
    or once that many minutes pass without the event again."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["event"]
    event: str = Field(description="the event that raises the alert, e.g. down")
    match: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description='only events whose values include these, e.g. {"check": "router"}')
    clear_event: str | None = Field(None, description="the event that clears it (with the same match), e.g. up")
    clear_after_min: float | None = Field(None, gt=0, description="or: clear once no such event came for this long")

    @field_validator("event", "clear_event")
    @classmethod
    def _event_name(cls, name: str | None) -> str | None:
        if name is not None and not protocol.METRIC_NAME.match(name):
            raise ValueError(f"event {name!r} should be an event's name as the device sends it, like down"
                             " (a-z, 0-9, _)")
        return name

    @model_validator(mode="after")
    def _clears_somehow(self) -> "OnEvent":
        if self.clear_event is None and self.clear_after_min is None:
            raise ValueError("say how the alert clears: clear_event (e.g. up) or clear_after_min (e.g. 60)")
        if self.clear_event == self.event:
            raise ValueError(f"clear_event is the same event as the one that raises it ({self.event})")
        return self

    def matches(self, values: dict[str, Any]) -> bool:
        return all(values.get(key) == wanted for key, wanted in self.match.items())


class SwitchAction(BaseModel):
    """Which output to switch, and to what, when the alert is raised and when it clears."""

    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(max_length=64, description="the switch box", examples=["heater-1"])
    output: str = Field(max_length=64, description="one of its outputs, as its status names it", examples=["sprinkler"])
    on_raise: bool = Field(True, description="switched to this when the alert is raised")
    on_clear: bool = Field(False, description="switched to this when the alert clears")

    @field_validator("device_id")
    @classmethod
    def _device(cls, device_id: str) -> str:
        if not protocol.DEVICE_ID.match(device_id):
            raise ValueError(f"device_id {device_id!r} should be a device id like heater-1")
        return device_id

    @field_validator("output")
    @classmethod
    def _output(cls, output: str) -> str:
        if not protocol.METRIC_NAME.match(output):
            raise ValueError(f"output {output!r} should be an output's name like sprinkler (a-z, 0-9, _)")
        return output

    @model_validator(mode="after")
    def _does_something(self) -> "SwitchAction":
        if self.on_raise == self.on_clear:
            raise ValueError("on_raise and on_clear are the same: the rule would never switch anything;"
                             " usually on_raise is true and on_clear false")
        return self


class Action(BaseModel):
    """What a rule does besides raising its alert: switch an output (rule_actions.py)."""

    model_config = ConfigDict(extra="forbid")
    switch: SwitchAction
    min_interval_min: float = Field(10, ge=0, le=24 * 60, description="switch at most this often per rule and"
                                    " device; a change held back is sent once the time has passed, if still wanted")


Condition = Annotated[Threshold | NoData | NotMoved | InArea | OnEvent, Field(discriminator="type")]


class Rule(BaseModel):
    """An alert rule, as stored and as the operator pages send it (JSON)."""

    model_config = ConfigDict(extra="forbid")
    id: int | None = None
    name: str = Field(min_length=1, max_length=200)
    device_id: str | None = None
    kind: str | None = None
    enabled: bool = True
    town: str | None = Field(None, description="the town whose devices it watches: a device's rule is its"
                                              " device's; left out, the operator's own (or the first town)")
    condition: Condition
    action: Action | None = Field(None, description="switch an output when the alert is raised and clears;"
                                                    " only switchers and admins may save a rule with one")
    practice: bool = Field(False, description="a learner's rule: its alerts go only to its owner's own target"
                                              " (\"my notifications\"), never to the town's")
    owner: str | None = Field(None, max_length=64, description="who made it (set by the server; ignored when sent)")

    @model_validator(mode="after")
    def _one_scope(self) -> "Rule":
        if (self.device_id is None) == (self.kind is None):
            raise ValueError("a rule is for one device (device_id) or for every device of a kind (kind): give one")
        return self

    def applies_to(self, device_id: str, kind: str | None, town: str | None = None) -> bool:
        """Whether it watches this device: the one it names, or one of its kind in the rule's town
        (``town``: the device's; a kind rule never reaches another town's devices)."""
        if not self.enabled:
            return False
        if self.device_id:
            return self.device_id == device_id
        return self.kind == kind and (self.town is None or town is None or self.town == town)
