"""A device described by a small TOML file, like ESPHome.

Each example folder has a ``device.toml``::

    [device]
    id = "snow-1"
    kind = "snow_gauge"       # its kind folder (kinds/snow_gauge) says how it runs
    interval_s = 10
    # optional; else JISAKU_BROKER. Several: the device moves on when its broker is gone
    broker = "mqtt://192.168.1.10:1883 mqtt://192.168.1.11:1883"

    [ultrasonic]
    trigger_pin = 23
    echo_pin = 24

Example::

    config = load_device_config("kinds/snow_gauge")
    config.section("ultrasonic")["echo_pin"]     # 24
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jisaku.contract import protocol

CONFIG_NAME = "device.toml"


class DeviceConfigError(ValueError):
    pass


@dataclass
class DeviceConfig:
    folder: Path
    tables: dict[str, Any]

    @property
    def device(self) -> dict[str, Any]:
        return self.tables["device"]

    @property
    def id(self) -> str:
        return self.device["id"]

    @property
    def kind(self) -> str:
        return self.device["kind"]

    @property
    def app(self) -> str:
        """Your own code instead of the kind's, ``"file.py:Class"``; "" runs the kind's."""
        return self.device.get("app", "")

    @property
    def name(self) -> str:
        return self.device.get("name", self.id)

    @property
    def public(self) -> bool:
        return bool(self.device.get("public", True))

    @property
    def location(self) -> tuple[float, float] | None:
        location = self.device.get("location")
        return (float(location[0]), float(location[1])) if location else None

    @property
    def interval_s(self) -> float:
        return float(self.device.get("interval_s", 60))

    def section(self, name: str) -> dict[str, Any]:
        return self.tables.get(name, {})

    def path(self, value: str) -> Path:
        """A file named in the config, relative to the device's folder."""
        path = Path(value)
        return path if path.is_absolute() else self.folder / path


def load_device_config(where: str | Path, overrides: dict[str, Any] | None = None) -> DeviceConfig:
    """Read ``device.toml`` from a folder (or a file) and lay ``overrides`` over it."""
    path = Path(where)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.exists():
        raise DeviceConfigError(f"no {CONFIG_NAME} at {path}: give an example folder such as kinds/snow_gauge")
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise DeviceConfigError(f"{path}: {err}") from None
    tables = merge(tables, overrides or {})
    device = tables.get("device")
    if not isinstance(device, dict):
        raise DeviceConfigError(f"{path}: needs a [device] table with id and kind")
    for key in ("id", "kind"):
        if not isinstance(device.get(key), str):
            raise DeviceConfigError(f"{path}: [device] needs {key} = \"...\"")
    if not isinstance(device.get("app", ""), str):
        raise DeviceConfigError(f"{path}: [device] app must be \"file.py:Class\"")
    if not protocol.DEVICE_ID.match(device["id"]):
        raise DeviceConfigError(f"{path}: device id {device['id']!r} must be 1-64 of a-z 0-9 . _ -")
    return DeviceConfig(path.parent, tables)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, table by table (neither is changed)."""
    result = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
