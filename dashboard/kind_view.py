"""The kind registry as people see it: names, icons, colours and readings in their language.

The residents' pages and the browser's JavaScript get every kind from here (from the
kind folders, :mod:`jisaku.contract.kinds`), so a new kind folder shows on the map with
no change to the dashboard. A device of a kind no folder describes is drawn as "other".

Example::

    kind_name("bus", "ja")                                  # 'バス'
    reading_lines("snow_gauge", {"depth_cm": 31}, "en")     # ['31 cm of snow']
    browser_kinds("ja")["bus"]["colour"]                    # '#1565c0'
"""

from __future__ import annotations

from typing import Any

from jisaku.contract import kinds

from . import i18n

OTHER = kinds.OTHER
OTHER_LOOK = {"colour": "#455a64", "icon": '<circle cx="12" cy="12" r="6" fill="#fff"/>'}
COMPASS = ("n", "ne", "e", "se", "s", "sw", "w", "nw")


def kind_name(kind_id: str, lang: str, plural: bool = False) -> str:
    kind = kinds.get(kind_id)
    if kind is None:
        return i18n.translator(lang)("kinds.other" if plural else "kind.other")
    return (kind.plural if plural else kind.name)[lang]


def metric_label(metric: str, lang: str) -> str:
    """A chart's title for ``metric``: the kind folders' words, else the shared ones, else its name."""
    for folder in kinds.registry().folders.values():
        if metric in folder.metrics:
            return folder.metrics[metric].label[lang]
    text = i18n.translator(lang)(f"metric.{metric}")
    return metric if text == f"metric.{metric}" else text


def compass(heading: float) -> str:
    """8-point compass key for a heading in degrees: 0 → "n", 100 → "e"."""
    return COMPASS[round((heading % 360) / 45) % 8]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def reading_lines(kind_id: str, values: dict[str, Any], lang: str) -> list[str]:
    """What a device's latest values say, one line each: "31 cm of snow", "20 km/h", "heading east".

    live.js writes the same lines in the map's popups (``describe`` there).
    """
    t = i18n.translator(lang)
    kind = kinds.get(kind_id)
    lines = []
    for metric, spec in (kind.folder.metrics.items() if kind else ()):
        value = values.get(metric)
        if spec.states and _number(value) and 0 <= value < len(spec.states):
            lines.append(spec.states[int(value)][lang])
        elif spec.reads and _number(value):
            lines.append(spec.reads[lang].format(value=i18n.format_number(value, lang)))
    if _number(values.get("speed_kmh")):
        lines.append(t("value.speed", speed=i18n.format_number(values["speed_kmh"], lang, 0)))
    if _number(values.get("heading")):
        lines.append(t("value.heading", direction=t("direction." + compass(values["heading"]))))
    return lines


def levels_of(kind_id: str, applied: dict[str, Any] | None) -> tuple[float, float] | None:
    """``(warn, alert)`` a device colours its value by: the settings it applied, else its kind's defaults.

    None for a kind without levels.
    """
    kind = kinds.get(kind_id)
    levels = kind.folder.marker.levels if kind else None
    if levels is None:
        return None
    warn, alert = (applied or {}).get(levels.warn), (applied or {}).get(levels.alert)
    if not _number(warn) or not _number(alert) or warn >= alert:
        return levels.defaults
    return float(warn), float(alert)


def browser_kinds(lang: str) -> dict[str, dict[str, Any]]:
    """Every kind as the map's JavaScript draws it, in ``lang``, plus "other"; the order is the buttons'."""
    shown = {}
    for kind in kinds.all_kinds():
        marker, metrics = kind.folder.marker, kind.folder.metrics
        shown[kind.id] = {
            "name": kind.name[lang], "plural": kind.plural[lang], "colour": kind.colour, "icon": kind.icon,
            "moves": kind.moves,
            # the kind's own residents' page, if it has one (kind.toml [pages]): the popup links there
            "page": kind.folder.pages.get("residents"),
            "marker": {"style": marker.style, "metric": marker.metric, "unit": marker.unit,
                       "levels": None if marker.levels is None else {
                           "defaults": list(marker.levels.defaults), "legend": marker.levels.legend[lang]}},
            "metrics": {name: {"label": m.label[lang], "reads": m.reads[lang] if m.reads else None,
                               "states": [s[lang] for s in m.states]} for name, m in metrics.items()},
        }
    t = i18n.translator(lang)
    shown[OTHER] = {"name": t("kind.other"), "plural": t("kinds.other"), **OTHER_LOOK, "moves": False, "page": None,
                    "marker": {"style": "badge", "metric": None, "unit": "", "levels": None}, "metrics": {}}
    return shown
