"""Deployment settings: ``jisaku.toml``, each key overridable by ``JISAKU_<KEY>``.

Example ``jisaku.toml``::

    broker = "mqtt://127.0.0.1:1883"
    store = "sqlite:///data/jisaku.db"
    http = "127.0.0.1:8000"
    data = "./data"

``JISAKU_BROKER=mqtt://10.0.0.5:1883 jisaku gateway`` then uses that broker
whatever the file says.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
CONFIG_FILE = "jisaku.toml"


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    broker: str = "mqtt://127.0.0.1:1883"
    store: str = ""  # empty: sqlite:///<data>/jisaku.db
    http: str = "127.0.0.1:8000"
    data: str = "./data"
    # Base map of the residents' pages: "osm", "gsi" (地理院タイル), a tile URL template
    # (https://tiles.city.lan/{z}/{x}/{y}.png) or a .pmtiles file; see dashboard/tiles.py.
    tiles: str = "osm"
    tiles_attribution: str = ""  # credit shown on the map for a URL template or a .pmtiles file
    # Open data (docs/open-data.md): the exports' licence (an SPDX id such as CC-BY-4.0,
    # CC0-1.0, ODbL-1.0, or any text) and whom to credit; the GTFS-Realtime feed's routes
    # and trips are in <data>/gtfs.toml.
    town: str = ""  # e.g. "Takayama City / 高山市"
    licence: str = "CC-BY-4.0"
    # Readings kept raw in SQLite for this many days, then folded into hourly figures
    # kept for keep_hourly_days (0: for ever); see gateway/retention.py.
    keep_raw_days: str = "90"
    keep_hourly_days: str = "0"
    # Cameras' pictures: every one for keep_pictures_days, then one an hour for
    # keep_hourly_pictures_days (0: for ever); see gateway/pictures.py.
    keep_pictures_days: str = "7"
    keep_hourly_pictures_days: str = "90"
    # The [notify] table: where alert notifications go (webhook, smtp, mqtt); see docs/alerts.md.
    notify: dict = field(default_factory=dict, hash=False)

    @property
    def data_dir(self) -> Path:
        return Path(self.data)

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file of the registry and the latest state (and of readings, by default)."""
        store = self.store or "sqlite:///"
        if store.startswith("sqlite:///") and store != "sqlite:///":
            return Path(store.removeprefix("sqlite:///"))
        return self.data_dir / "jisaku.db"

    @property
    def influx_url(self) -> str | None:
        """``influxdb://[token@]host:8086/<db>`` when readings go to InfluxDB, else None."""
        if self.store.startswith(("influxdb://", "influxdbs://", "influxdb+http://", "influxdb+https://")):
            return self.store
        if self.store and not self.store.startswith("sqlite:///"):
            raise SettingsError(
                f"store {self.store!r} should be sqlite:///path/jisaku.db or influxdb://[token@]host:8086/<database>")
        return None

    @property
    def retention_days(self) -> tuple[float, float, float, float]:
        """The four ``keep_…_days`` as numbers, in the order gateway.retention.RetentionPolicy takes them."""
        names = ("keep_raw_days", "keep_hourly_days", "keep_pictures_days", "keep_hourly_pictures_days")
        try:
            return tuple(float(getattr(self, name)) for name in names)
        except ValueError:
            given = ", ".join(f"{name} = {getattr(self, name)!r}" for name in names)
            raise SettingsError(f"{given}: each is a number of days (0: for ever)") from None

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.http.rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"http {self.http!r} should be host:port, e.g. 127.0.0.1:8000")
        return host, int(port)


def load(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``path`` (default ``./jisaku.toml`` if it exists), then the environment."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get("JISAKU_CONFIG", path or CONFIG_FILE))
    values: dict[str, str] = {}
    if path.exists():
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise SettingsError(f"{path}: {err}") from None
    known = {f.name for f in fields(Settings)}
    unknown = set(values) - known
    if unknown:
        raise SettingsError(f"{path}: unknown keys {', '.join(sorted(unknown))}; known are {', '.join(sorted(known))}")
    for name in known:
        if f"JISAKU_{name.upper()}" in environ:
            values[name] = environ[f"JISAKU_{name.upper()}"]
    if isinstance(values.get("notify"), str):  # JISAKU_NOTIFY: the [notify] table as JSON
        try:
            values["notify"] = json.loads(values["notify"])
        except ValueError as err:
            raise SettingsError(f"JISAKU_NOTIFY should be the [notify] table as a JSON object: {err}") from None
    return Settings(**{k: v if k == "notify" else str(v) for k, v in values.items()})
