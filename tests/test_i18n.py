"""Japanese and English: every word in both, the right language picked, dates and numbers localised."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from pmtiles.tile import TileType
from starlette.requests import Request

from jisaku.dashboard import i18n
from jisaku.dashboard.app import create_app
from jisaku.dashboard.tiles import tile_source

from .pmtiles_files import write_raster_pmtiles


def request(query: str = "", cookie: str = "", accept: str = "") -> Request:
    headers = [(b"accept-language", accept.encode())] if accept else []
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return Request({"type": "http", "query_string": query.encode(), "headers": headers})


def test_every_word_exists_in_both_languages():
    for path in i18n.LOCALES.glob("*.en.json"):
        english = json.loads(path.read_text(encoding="utf-8"))
        japanese_path = path.with_name(path.name.replace(".en.json", ".ja.json"))
        japanese = json.loads(japanese_path.read_text(encoding="utf-8"))
        assert set(english) == set(japanese), f"{path.name} and {japanese_path.name} differ"
        for key in english:  # the same {placeholders} on both sides
            assert set(re.findall(r"{(\w+)}", english[key])) == set(re.findall(r"{(\w+)}", japanese[key])), key


def test_the_residents_map_carries_its_own_words_and_not_the_operators(tmp_path):
    operator_words = json.loads((i18n.LOCALES / "operator.ja.json").read_text(encoding="utf-8"))
    assert all(key.startswith(i18n.OPERATOR_PREFIX) for key in operator_words)
    page = TestClient(create_app(tmp_path / "jisaku.db", tiles="osm")).get("/?lang=ja").text
    assert i18n.translator("ja")("map.none") in page
    assert operator_words["op.rules.area_draw"] not in page and '"op.' not in page


@pytest.mark.parametrize(("query", "cookie", "accept", "expected"), [
    ("", "", "", "ja"),                                   # nothing said: Japanese
    ("", "", "en-GB,en;q=0.9", "en"),
    ("", "", "fr-FR,fr;q=0.9,en;q=0.5,ja;q=0.4", "en"),   # the first language we have
    ("", "", "de,en;q=0,ja;q=0.2", "ja"),                 # q=0 means "not this one"
    ("", "lang=en", "ja", "en"),                          # the visitor's earlier choice beats the browser
    ("lang=ja", "lang=en", "en", "ja"),                   # the switch beats both
    ("lang=xx", "lang=zz", "", "ja"),                     # nonsense is ignored
])
def test_the_language_comes_from_the_switch_then_the_cookie_then_the_browser(query, cookie, accept, expected):
    assert i18n.pick_language(request(query, cookie, accept)) == expected


def test_words_dates_and_numbers_in_each_language():
    assert i18n.translator("ja")("app.title") == "まちのライブマップ"
    assert i18n.translator("en")("value.speed", speed="20") == "20 km/h"
    assert i18n.translator("ja")("no.such.key") == "no.such.key"
    assert i18n.format_number(1234.56, "en") == "1,234.6"
    assert i18n.format_ago(100.0, "ja", now=112.0) == "12 秒前"
    assert i18n.format_ago(100.0, "en", now=112.0) == "12 seconds ago"
    assert i18n.format_datetime(1_800_000_000, "ja").startswith("2027/01/")
    assert "Jan" in i18n.format_datetime(1_800_000_000, "en", "medium")


def test_a_base_map_setting_that_is_not_one_says_what_to_write(tmp_path):
    assert tile_source("gsi").url.startswith("https://cyberjapandata.gsi.go.jp/")
    own = tile_source("https://tiles.city.lan/{z}/{x}/{y}.png", "© City of Takayama")
    assert own.attribution == "© City of Takayama" and not own.is_pmtiles
    with pytest.raises(ValueError, match="URL template"):
        tile_source("https://tiles.city.lan/map.png")
    with pytest.raises(ValueError, match="does not exist"):
        tile_source(str(tmp_path / "town.pmtiles"))
    (tmp_path / "town.pmtiles").write_bytes(b"<html>404 Not Found</html>")  # a failed download
    with pytest.raises(ValueError, match="is not a PMTiles file"):
        tile_source(str(tmp_path / "town.pmtiles"))
    write_raster_pmtiles(tmp_path / "town.pmtiles", 36.13, 137.24, 36.15, 137.26, range(10, 15), (200, 230, 200))
    town = tile_source(str(tmp_path / "town.pmtiles"), "© City of Takayama")
    assert town.is_pmtiles and town.native_zooms == (10, 14) and town.max_zoom == 18
    write_raster_pmtiles(tmp_path / "vector.pmtiles", 36.13, 137.24, 36.15, 137.26, range(10, 12), (0, 0, 0),
                         tile_type=TileType.MVT)
    with pytest.raises(ValueError, match="holds vector tiles"):
        tile_source(str(tmp_path / "vector.pmtiles"))
