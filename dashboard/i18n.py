"""Japanese and English for every page: which language, the words, dates and numbers.

Words live in JSON catalogs in ``dashboard/locales/``: every ``<lang>.json`` and
``*.<lang>.json`` there is loaded (``residents.ja.json``, ``operator.ja.json``, ...),
so each area of the app keeps its own file. A catalog is a flat object of dotted
keys to text; ``{name}`` placeholders are filled with :meth:`str.format`. A key
missing in one language falls back to English, then to the key itself, so a
forgotten word shows up as ``map.title`` rather than an error page (and
``tests/test_i18n.py`` fails until it is added).

Example::

    from jisaku.dashboard import i18n

    @router.get("/things")
    def things(request: Request):
        lang = i18n.pick_language(request)          # "ja" or "en"
        t = i18n.translator(lang)
        title = t("map.title")                      # "まちのライブマップ"
        line = t("device.updated", ago=i18n.format_ago(ts, lang))
        when = i18n.format_datetime(ts, lang)       # "2026/11/23 13:05" / "Nov 23, 2026, 1:05 PM"
        depth = i18n.format_number(12.5, lang)      # "12.5"
        response = HTMLResponse(...)
        i18n.remember_language(request, response)   # keeps ?lang=en in a cookie
        return response

The language comes from, in order: ``?lang=`` in the address, the ``lang`` cookie,
the browser's ``Accept-Language``, else Japanese (:data:`DEFAULT_LANGUAGE`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable

from babel.dates import format_datetime as _babel_datetime
from babel.dates import format_timedelta as _babel_timedelta
from babel.numbers import format_decimal as _babel_decimal
from starlette.requests import Request
from starlette.responses import Response

LOCALES = Path(__file__).parent / "locales"
LANGUAGES = ("ja", "en")
DEFAULT_LANGUAGE = "ja"
FALLBACK_LANGUAGE = "en"  # where a word missing in another language is looked up
COOKIE = "lang"
COOKIE_MAX_AGE_S = 365 * 24 * 3600

Translator = Callable[..., str]


class CatalogError(ValueError):
    """A catalog file that cannot be used: bad JSON, or a key defined twice."""


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, str]:
    """Every word of ``lang`` from every catalog file, merged; read once per process."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r} is not one of {', '.join(LANGUAGES)}")
    merged: dict[str, str] = {}
    files = sorted(LOCALES.glob(f"{lang}.json")) + sorted(LOCALES.glob(f"*.{lang}.json"))
    for path in files:
        try:
            words = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CatalogError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(words, dict) or not all(isinstance(v, str) for v in words.values()):
            raise CatalogError(f"{path}: must be one JSON object of \"key\": \"text\" pairs")
        twice = set(words) & set(merged)
        if twice:
            raise CatalogError(f"{path}: {', '.join(sorted(twice))} already defined in another {lang} catalog")
        merged.update(words)
    return merged


def translator(lang: str) -> Translator:
    """``t(key, **values)``: the text of ``key`` in ``lang`` with ``{placeholders}`` filled."""
    words, fallback = catalog(lang), catalog(FALLBACK_LANGUAGE)

    def t(key: str, **values) -> str:
        text = words.get(key) or fallback.get(key) or key
        return text.format(**values) if values else text

    return t


def _accepted(header: str) -> list[str]:
    """Languages of an Accept-Language header, most wanted first: "en-GB,en;q=0.8,ja;q=0.5"."""
    ranked = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        match = re.search(r"q=([0-9.]+)", params)
        try:
            quality = float(match.group(1)) if match else 1.0
        except ValueError:
            quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(ranked)]


def pick_language(request: Request) -> str:
    """The language to answer ``request`` in: ``?lang=``, the cookie, Accept-Language, else Japanese."""
    for chosen in (request.query_params.get("lang"), request.cookies.get(COOKIE)):
        if chosen in LANGUAGES:
            return chosen
    for tag in _accepted(request.headers.get("accept-language", "")):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE


def remember_language(request: Request, response: Response) -> None:
    """When the visitor chose a language with ``?lang=``, keep it for their next visits."""
    chosen = request.query_params.get("lang")
    if chosen in LANGUAGES:
        response.set_cookie(COOKIE, chosen, max_age=COOKIE_MAX_AGE_S, samesite="lax")


def _local(ts: float) -> datetime:
    # The server's own time zone: a town's Raspberry Pi is set to the town's.
    return datetime.fromtimestamp(ts, tz=timezone.utc).astimezone()


def format_datetime(ts: float, lang: str, length: str = "short") -> str:
    """``ts`` (UTC epoch seconds) as local date and time: "2026/11/23 13:05", "11/23/26, 1:05 PM"."""
    return _babel_datetime(_local(ts), length, locale=lang)


def format_number(value: float, lang: str, digits: int = 1) -> str:
    """``value`` with at most ``digits`` decimals and the language's separators: "1,234.5"."""
    pattern = "#,##0" + ("." + "#" * digits if digits else "")
    return _babel_decimal(value, format=pattern, locale=lang)


def format_ago(ts: float | None, lang: str, now: float) -> str:
    """How long ago ``ts`` was, the way people say it: "12 秒前", "3 minutes ago"; "" without ``ts``."""
    if ts is None:
        return ""
    seconds = max(0.0, now - ts)
    return _babel_timedelta(timedelta(seconds=-seconds), granularity="second", threshold=1.5,
                            add_direction=True, locale=lang)


# Keys of the operator pages' words (locales/operator.*.json) all start with this.
OPERATOR_PREFIX = "op."


def js_catalog(lang: str) -> dict[str, str]:
    """The words the residents' pages' JavaScript needs, English filling gaps.

    The operator pages' words stay out: every phone would download them with each map."""
    words = {**catalog(FALLBACK_LANGUAGE), **catalog(lang)}
    return {key: text for key, text in words.items() if not key.startswith(OPERATOR_PREFIX)}
