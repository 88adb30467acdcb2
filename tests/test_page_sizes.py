"""The counter's and the shelters' pages at a phone's 360 px and a TV's 1920 × 1080, in
Japanese: no text cut off or running off the screen. Screenshots go to test-artifacts/."""

from __future__ import annotations

import time

import pytest

from jisaku.contract.protocol import Reading
from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.store import Batch

from .layout import cut_off_text
from .test_browser import ARTIFACTS, browser  # noqa: F401  (the browser fixture)

SIZES = {"360px": {"width": 360, "height": 740}, "1920x1080": {"width": 1920, "height": 1080}}
PAGES = {
    "counter-display": "/counter/counter-1/display",
    "counter-residents": "/counter/counter-1",
    "shelters-list": "/shelters",
    "map": "/",
}


@pytest.fixture(scope="module")
def busy_town(tmp_path_factory):
    """A counter with three windows and long numbers, and shelters with long names, in disaster mode."""
    from .town import Town

    town = Town(tmp_path_factory.mktemp("town"), "embedded")
    now = time.time()
    town.registry.add_device(DeviceRecord("counter-1", "counter", name="Citizens' desk",
                                          name_ja="高山市役所 市民課 住民票・戸籍・印鑑登録の窓口", lat=36.146, lon=137.252))
    town.store.write(Batch(readings=[("counter-1", Reading(now, 1, {
        "waiting": 128, "estimate_min": 187.4, "issued": 1234, "windows": 3,
        "window_1": 1102, "window_2": 1105, "window_3": 1106}))]))
    for n, (name, capacity, count) in enumerate([("高山市立西小学校 体育館・武道場（本館南側）", 400, 380),
                                                 ("中央公民館", 120, 20), ("東山スポーツセンター", 900, 0)], 1):
        town.registry.add_device(DeviceRecord(f"shelter-{n}", "shelter", name=f"Shelter {n}", name_ja=name,
                                              lat=36.14 + n / 500, lon=137.25 + n / 400))
        town.store.write(Batch(readings=[(f"shelter-{n}", Reading(now, 1, {"count": count, "capacity": capacity,
                                                                             "open": 1}))]))
    town.changes.set_disaster_mode("tester", True)
    town.start_dashboard(tiles="osm")
    yield town
    town.close()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PAGES)
def test_no_text_is_cut_off(browser, busy_town, name, size):  # noqa: F811
    context = browser.new_context(viewport=SIZES[size], locale="ja-JP")
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url else route.abort())
    page.goto(busy_town.base_url + PAGES[name])
    page.wait_for_load_state("networkidle")
    if name == "map":
        page.wait_for_selector(".jisaku-shelter-crowded")
    assert page.evaluate("document.documentElement.lang") == "ja"
    problems = cut_off_text(page)
    assert problems == [], "\n".join(problems)
    if name == "counter-display":
        assert page.inner_text('[data-window="3"]') == "1106"
        assert page.evaluate("document.documentElement.scrollHeight") <= SIZES[size]["height"], "fits the screen"
    page.screenshot(path=str(ARTIFACTS / f"{name}-{size}.png"))
    context.close()
