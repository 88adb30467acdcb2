"""The kind registry: every kind of device jisaku knows, each described by one folder.

A kind folder (``kinds/snow_gauge/``, say) holds everything about one kind of device:
``kind.toml`` (what it is), its Raspberry Pi behaviour, its simulation, its MicroPython
board code, its example ``device.toml`` and its READMEs. The gateway, the residents'
and operators' pages, the simulation and ``jisaku flash`` read what they need from
here, so adding a kind means adding a folder and nothing else. How to write one:
docs/kinds.md.

One folder may give several kinds on the map that share a device: the vehicle tracker
is shown as a bus, a garbage truck or a festival float.

Besides the folders that come with jisaku, a town can keep its own kinds in folders of
its own: ``JISAKU_KINDS=/srv/town-kinds`` (several separated by ``:``).

Example::

    from jisaku.contract import kinds

    bus = kinds.get("bus")
    bus.name["ja"], bus.moves, bus.interval_s     # 'バス', True, 10.0
    bus.folder.limits()                            # {'every_s': (1.0, 3600.0), ...}
    kinds.get("no_such_kind")                      # None: shown as "other"
    kinds.folder("snow_gauge").pi_class()          # the gpiozero behaviour, SnowGauge
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

# kinds/ beside contract/: in the repository, and as jisaku/kinds in an installed jisaku.
BUILT_IN = Path(__file__).resolve().parent.parent / "kinds"
DESCRIPTION = "kind.toml"
LANGUAGES = ("en", "ja")
KIND_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
MARKER_STYLES = ("badge", "value")
PAGES = ("residents", "display", "staff")
OTHER = "other"  # what a device of a kind no folder describes is shown as


class KindError(ValueError):
    """A kind folder that cannot be used, with what is wrong in which file."""


Words = dict[str, str]  # {"en": "...", "ja": "..."}


@dataclass(frozen=True)
class Metric:
    """How one value a device sends reads to a person."""

    name: str                          # depth_cm
    label: Words                       # "Snow depth (cm)": chart titles
    reads: Words | None = None         # "{value} cm of snow": a line in the popup and the list
    states: tuple[Words, ...] = ()     # words for 0, 1, ...: "Tray empty", "Paper left on the tray"


SETTING_TYPES = ("number", "schedule")


@dataclass(frozen=True)
class Setting:
    """Something operators may change on a device from afar: a number within its limits, or a
    schedule (contract/schedules.py), which has no limits."""

    name: str                          # interval_s
    low: int | float | None            # None for a schedule
    high: int | float | None
    label: Words                       # "Measure every (seconds)"
    type: str = "number"               # number | schedule


@dataclass(frozen=True)
class Levels:
    """A value coloured low / warn / alert on the map, at levels the device's own settings set."""

    warn: str                          # the setting that holds the lower level, e.g. warn_cm
    alert: str                         # the setting that holds the upper level, e.g. alert_cm
    defaults: tuple[float, float]      # levels for a device that has not said its settings
    legend: Words                      # the legend's title, "Snow depth"


@dataclass(frozen=True)
class Marker:
    """How a device of the kind is drawn on the map."""

    style: str = "badge"               # badge: the icon in a circle; value: a pill with the reading
    metric: str | None = None          # the value the pill shows
    unit: str = ""                     # written after a number in the pill
    levels: Levels | None = None


@dataclass(frozen=True)
class Kind:
    """One kind of device as the wire and the map know it (``properties.kind``)."""

    id: str                            # bus, snow_gauge, ...
    name: Words                        # one of them: "Bus"
    plural: Words                      # the map's button: "Buses"
    colour: str                        # "#1565c0"
    icon: str                          # an SVG drawing on a 24 × 24 grid; "C" stands for the colour
    interval_s: float                  # how often it usually reports
    moves: bool                        # a vehicle: drawn with its heading, leaves the map when gone home
    order: int                         # place of its button on the map, smaller first
    folder: "KindFolder" = field(repr=False, compare=False)


@dataclass(frozen=True)
class KindFolder:
    """A folder under kinds/: one device, its behaviour, and the kinds it can be shown as."""

    name: str                          # the folder's name, e.g. vehicle_tracker
    path: Path
    kinds: tuple[Kind, ...]
    settings: dict[str, Setting]       # what operators may change from afar
    metrics: dict[str, Metric]
    marker: Marker
    pi: str | None                     # "pi.py:SnowGauge": the Raspberry Pi behaviour
    simulation: str | None             # "simulate.py:Snowfall": the outside world in --simulate
    board: str | None                  # "board": the MicroPython files jisaku flash copies
    # The kind's own pages on the dashboard ({id} is the device's id): "residents" (linked from
    # the map and the list), "display" (a screen for a hall) and "staff" (a page that acts as the
    # device, linked with its secret when an operator issues one).
    pages: dict[str, str] = field(default_factory=dict)

    def limits(self) -> dict[str, tuple[float, float]]:
        """``{setting: (lowest, highest)}`` of the number settings, as a device checks settings sent to it."""
        return {s.name: (s.low, s.high) for s in self.settings.values() if s.type == "number"}

    def device_settings(self) -> dict[str, tuple[float, float] | str]:
        """Every setting as a device checks it: ``(lowest, highest)`` for a number, else its
        type, ``{"schedule": "schedule"}``, which the device's app checks itself."""
        return {s.name: (s.low, s.high) if s.type == "number" else s.type for s in self.settings.values()}

    def pi_class(self) -> type:
        """The class that runs this device on a Raspberry Pi."""
        return self._load(self.pi, "pi")

    def simulation_class(self) -> type | None:
        """The class that plays the outside world for a simulated device, if the folder has one."""
        return self._load(self.simulation, "simulation") if self.simulation else None

    @property
    def board_path(self) -> Path | None:
        return self.path / self.board if self.board else None

    @property
    def example(self) -> Path | None:
        """The example ``device.toml``'s folder (the kind folder itself), if it has one."""
        return self.path if (self.path / "device.toml").exists() else None

    def _load(self, where: str | None, what: str) -> type:
        if not where:
            raise KindError(f"{self.path / DESCRIPTION}: no {what} = \"file.py:Class\"")
        file_name, _, class_name = where.partition(":")
        module = load_module(self, file_name.removesuffix(".py"))
        if not hasattr(module, class_name):
            raise KindError(f"{self.path / file_name} has no class {class_name} ({what} in {DESCRIPTION})")
        return getattr(module, class_name)


def load_module(folder: KindFolder, module: str):
    """A Python file of a kind folder, imported once.

    The folders that come with jisaku import as ``jisaku.kinds.<folder>.<module>`` (so
    ``from jisaku.kinds.snow_gauge.pi import SnowGauge`` works too); a town's own as
    ``jisaku_kinds.<folder>.<module>``.
    """
    if folder.path.parent == BUILT_IN:
        return importlib.import_module(f"jisaku.kinds.{folder.name}.{module}")
    name = f"jisaku_kinds.{folder.name}.{module}"
    if name not in sys.modules:
        path = folder.path / f"{module}.py"
        if not path.exists():
            raise KindError(f"{path} not found (named in {folder.path / DESCRIPTION})")
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        try:
            spec.loader.exec_module(loaded)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


# ---------------------------------------------------------------- reading kind.toml


def _words(value: Any, where: str) -> Words:
    if not isinstance(value, dict) or not all(isinstance(value.get(lang), str) and value[lang] for lang in LANGUAGES):
        raise KindError(f"{where} must be {{ en = \"...\", ja = \"...\" }}, both filled in, not {value!r}")
    return {lang: value[lang] for lang in LANGUAGES}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KindError(f"{where} must be a number, not {value!r}")
    return float(value)


def read_folder(path: Path) -> KindFolder:
    """One kind folder, checked: a KindError names the file, the key and what to write instead."""
    description = path / DESCRIPTION
    try:
        data = tomllib.loads(description.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise KindError(f"{description}: {err}") from None
    unknown = set(data) - {"pi", "simulation", "board", "kinds", "settings", "metrics", "marker", "pages"}
    if unknown:
        raise KindError(f"{description}: unknown {', '.join(sorted(unknown))} (see docs/kinds.md)")

    settings = {}
    for name, spec in data.get("settings", {}).items():
        where = f"{description}: [settings] {name}"
        kind_of = spec.get("type", "number") if isinstance(spec, dict) else "number"
        if kind_of not in SETTING_TYPES:
            raise KindError(f'{where}: type must be "schedule", or left out for a number with limits, not {kind_of!r}')
        if kind_of == "schedule":
            if "limits" in spec:
                raise KindError(f"{where}: a schedule has no limits: write {{ type = \"schedule\", label = {{ en = ...,"
                                " ja = ... }} }}")
            settings[name] = Setting(name, None, None, _words(spec.get("label"), f"{where} label"), "schedule")
            continue
        limits = spec.get("limits") if isinstance(spec, dict) else None
        if not (isinstance(limits, list) and len(limits) == 2):
            raise KindError(f"{where} must be {{ limits = [lowest, highest], label = {{ en = ..., ja = ... }} }}")
        for value in limits:
            _number(value, f"{where} limits")
        low, high = limits  # as written: 3600 stays a whole number in forms and messages
        if low > high:
            raise KindError(f"{where}: the lowest ({low:g}) is above the highest ({high:g})")
        settings[name] = Setting(name, low, high, _words(spec.get("label"), f"{where} label"))

    metrics = {}
    for name, spec in data.get("metrics", {}).items():
        where = f"{description}: [metrics.{name}]"
        metrics[name] = Metric(
            name=name, label=_words(spec.get("label"), f"{where} label"),
            reads=_words(spec["reads"], f"{where} reads") if "reads" in spec else None,
            states=tuple(_words(s, f"{where} states") for s in spec.get("states", [])))

    marker = _marker(data.get("marker", {}), description, settings)
    pages = data.get("pages", {})
    for name, address in pages.items():
        if not (isinstance(address, str) and address.startswith("/") and "{id}" in address):
            raise KindError(f"{description}: [pages] {name} must be an address on the dashboard with {{id}}"
                            f" for the device's id, like \"/counter/{{id}}\", not {address!r}")
    if set(pages) - set(PAGES):
        raise KindError(f"{description}: [pages] may name {', '.join(PAGES)}, not {', '.join(sorted(set(pages) - set(PAGES)))}")
    folder = KindFolder(name=path.name, path=path, kinds=(), settings=settings, metrics=metrics, marker=marker,
                        pages=dict(pages),
                        pi=data.get("pi"), simulation=data.get("simulation"), board=data.get("board"))
    if folder.board and not folder.board_path.is_dir():
        raise KindError(f"{description}: board = {folder.board!r}, but {folder.board_path} is not a folder")

    kinds = []
    for kind_id, spec in data.get("kinds", {}).items():
        where = f"{description}: [kinds.{kind_id}]"
        if not KIND_ID.match(kind_id) or kind_id == OTHER:
            raise KindError(f"{where}: a kind is 1-32 of a-z 0-9 _, starting with a letter (and not {OTHER!r})")
        colour = spec.get("colour", "")
        if not COLOUR.match(str(colour)):
            raise KindError(f"{where} colour must be like \"#1565c0\", not {colour!r}")
        icon_file = path / str(spec.get("icon", ""))
        if not spec.get("icon") or not icon_file.is_file():
            raise KindError(f"{where} icon must name an SVG file in the folder, e.g. icon = \"icon.svg\"")
        kinds.append(Kind(
            id=kind_id, name=_words(spec.get("name"), f"{where} name"),
            plural=_words(spec.get("plural", spec.get("name")), f"{where} plural"),
            colour=colour, icon=svg_drawing(icon_file), folder=folder,
            interval_s=_number(spec.get("interval_s", 60), f"{where} interval_s"),
            moves=bool(spec.get("moves", False)), order=int(spec.get("order", 100))))
    if not kinds:
        raise KindError(f"{description}: no [kinds.<id>] table: say what the devices are called and drawn like")
    object.__setattr__(folder, "kinds", tuple(kinds))
    return folder


def _marker(spec: dict[str, Any], description: Path, settings: dict[str, Setting]) -> Marker:
    style = spec.get("style", "badge")
    if style not in MARKER_STYLES:
        raise KindError(f"{description}: [marker] style must be one of {', '.join(MARKER_STYLES)}, not {style!r}")
    if style == "value" and not spec.get("metric"):
        raise KindError(f"{description}: [marker] style = \"value\" needs metric = \"...\": which value to show")
    levels = None
    if "levels" in spec:
        given = spec["levels"]
        for key in ("warn", "alert"):
            if given.get(key) not in settings:
                raise KindError(f"{description}: [marker.levels] {key} must name one of the [settings]")
        low, high = (_number(v, f"{description}: [marker.levels] defaults") for v in given.get("defaults", []))
        levels = Levels(warn=given["warn"], alert=given["alert"], defaults=(low, high),
                        legend=_words(given.get("legend"), f"{description}: [marker.levels] legend"))
    return Marker(style=style, metric=spec.get("metric"), unit=str(spec.get("unit", "")), levels=levels)


def svg_drawing(path: Path) -> str:
    """What is inside the file's <svg> element: the shapes, drawn on the kind's colour."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r"<svg[^>]*>(.*)</svg>", text, re.S)
    if not match:
        raise KindError(f"{path} is not an SVG drawing (<svg viewBox=\"0 0 24 24\">...</svg>)")
    return re.sub(r"\s*\n\s*", "", match.group(1))


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Registry:
    folders: dict[str, KindFolder]
    kinds: dict[str, Kind]

    def ordered(self) -> list[Kind]:
        return sorted(self.kinds.values(), key=lambda k: (k.order, k.id))


def search_path(environ: dict[str, str] | None = None) -> list[Path]:
    """Where kind folders are looked for: jisaku's own, then each folder in JISAKU_KINDS."""
    extra = (environ if environ is not None else os.environ).get("JISAKU_KINDS", "")
    return [BUILT_IN, *(Path(p) for p in extra.split(os.pathsep) if p)]


def load(places: list[Path]) -> Registry:
    """Every kind folder in ``places`` (a folder with a kind.toml in it is one)."""
    folders: dict[str, KindFolder] = {}
    kinds: dict[str, Kind] = {}
    for place in places:
        if not place.is_dir():
            raise KindError(f"JISAKU_KINDS names {place}, which is not a folder")
        for description in sorted(place.glob(f"*/{DESCRIPTION}")):
            folder = read_folder(description.parent)
            if folder.name in folders:
                raise KindError(f"two kind folders are called {folder.name}: {folders[folder.name].path} and {folder.path}")
            folders[folder.name] = folder
            for kind in folder.kinds:
                if kind.id in kinds:
                    raise KindError(f"kind {kind.id} is described twice: in {kinds[kind.id].folder.path} and {folder.path}")
                kinds[kind.id] = kind
    return Registry(folders, kinds)


@cache
def registry() -> Registry:
    """The kinds of this process, read once. Tests that add a kind call ``registry.cache_clear()``."""
    return load(search_path())


def get(kind_id: str) -> Kind | None:
    """The kind called ``kind_id``, or None for a kind no folder describes (shown as "other")."""
    return registry().kinds.get(kind_id)


def folder(name: str) -> KindFolder | None:
    """The kind folder called ``name`` (e.g. ``vehicle_tracker``), or None."""
    return registry().folders.get(name)


def all_kinds() -> list[Kind]:
    """Every kind, in the order their buttons stand on the map."""
    return registry().ordered()


def limits_for(kind_id: str) -> dict[str, tuple[float, float]]:
    """What operators may change on a device of ``kind_id`` from afar, with the limits; {} if unknown."""
    kind = get(kind_id)
    return kind.folder.limits() if kind else {}


def settings_for(kind_id: str) -> dict[str, Setting]:
    """Everything operators may change on a device of ``kind_id`` (numbers and schedules); {} if unknown."""
    kind = get(kind_id)
    return dict(kind.folder.settings) if kind else {}


def interval_s(kind_id: str, default: float = 60.0) -> float:
    """How often a device of ``kind_id`` usually reports."""
    kind = get(kind_id)
    return kind.interval_s if kind else default


def moves(kind_id: str) -> bool:
    kind = get(kind_id)
    return bool(kind and kind.moves)
