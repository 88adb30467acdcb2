"""The resident counter's pages in Chromium: the tablet that issues and calls numbers through
a lost link, the hall display on a TV and the residents' page on a phone, all checked for
text that does not fit at 360 px and 1920 × 1080."""

from __future__ import annotations

import pytest

from jisaku.gateway.registry import DeviceRecord

from .layout import cut_off_text
from .test_browser import ARTIFACTS, PHONE, browser  # noqa: F401  (the browser fixture)
from .town import wait_until

TV = {"width": 1920, "height": 1080}


def latest_values(town, device_id: str) -> dict:
    row = next((d for d in town.store.latest(public_only=False) if d["id"] == device_id), None)
    return row["values"] if row else {}


def events(town, device_id: str, name: str) -> list[dict]:
    return sorted((e["v"] for e in town.store.events(device_id, limit=1000) if e["event"] == name),
                  key=lambda v: v["number"])


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_morning_on_the_counter_tablet_through_a_lost_link(browser, make_town):  # noqa: F811
    town = make_town()
    secret = town.registry.add_device(DeviceRecord("counter-1", "counter", name="Citizens' desk",
                                                   name_ja="市民課窓口", lat=36.146, lon=137.252))
    base = town.start_dashboard(phones=True)
    desk = browser.new_context(viewport={"width": 800, "height": 1000}, locale="ja-JP", has_touch=True).new_page()
    desk.goto(f"{base}/counter/counter-1/staff#key={secret}")
    desk.wait_for_selector("#staff-desk:not([hidden])")

    for _ in range(4):
        desk.click("#desk-take")
    assert desk.inner_text("#desk-taken") == "4 番の番号札を発行しました"
    desk.click('[data-next="1"]')
    desk.click('[data-next="2"]')
    wait_until(lambda: latest_values(town, "counter-1").get("window_2") == 2, 10, "the calls reach the server")

    # The hall display and a resident's phone follow.
    hall = browser.new_context(viewport=TV, locale="ja-JP").new_page()
    hall.goto(f"{base}/counter/counter-1/display")
    phone = browser.new_context(viewport=PHONE, locale="ja-JP").new_page()
    phone.goto(f"{base}/counter/counter-1")
    hall.wait_for_selector('[data-window="2"]:text-is("2")')
    assert hall.inner_text('[data-window="1"]') == "1"
    assert phone.inner_text("#counter-waiting") == "2 人"

    # The link goes: numbers are still issued and called, and kept on the tablet.
    desk.context.set_offline(True)
    for _ in range(3):
        desk.click("#desk-take")
    desk.click('[data-next="1"]')
    desk.click('[data-again="1"]')
    desk.wait_for_selector('#staff-status[data-state="waiting"]')
    assert desk.inner_text('[data-window="1"]') == "3"
    assert latest_values(town, "counter-1")["issued"] == 4, "nothing reached the server meanwhile"

    # Back: everything arrives in order, and the pages show it within a moment.
    desk.context.set_offline(False)
    desk.evaluate("window.dispatchEvent(new Event('online'))")
    desk.wait_for_selector('#staff-status[data-state="sent"]', timeout=60_000)
    hall.wait_for_selector('[data-window="1"]:text-is("3")')
    phone.wait_for_selector('#counter-waiting:text-is("4 人")')
    assert latest_values(town, "counter-1")["issued"] == 7

    # Every ticket accounted for: issued once each, the first three called once each.
    assert [t["number"] for t in events(town, "counter-1", "ticket")] == [1, 2, 3, 4, 5, 6, 7]
    assert [(c["number"], c["window"]) for c in events(town, "counter-1", "call")] == [(1, 1), (2, 2), (3, 1)]
    assert [c["number"] for c in events(town, "counter-1", "call_again")] == [3]

    for page, name in ((hall, "counter-display-1920x1080"), (phone, "counter-residents-360px"),
                       (desk, "counter-tablet")):
        assert cut_off_text(page) == [], name
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    assert hall.evaluate("document.documentElement.scrollHeight") <= TV["height"], "the display fits the screen"


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_private_counter_has_no_public_pages(make_town):
    town = make_town()
    town.registry.add_device(DeviceRecord("counter-9", "counter", name="Back office", public=False))
    base = town.start_dashboard()
    import urllib.error
    import urllib.request

    for path in ("/counter/counter-9", "/counter/counter-9/display", "/counter/no-such/display"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code == 404


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_numbers_the_counter_has_not_confirmed_lately_are_marked_not_recent(browser, make_town):  # noqa: F811
    import time

    from jisaku.contract.protocol import Reading
    from jisaku.gateway.store import Batch

    town = make_town()
    town.registry.add_device(DeviceRecord("counter-1", "counter", name="Desk", interval_s=60))
    town.store.write(Batch(readings=[("counter-1", Reading(time.time() - 3600, 1, {
        "waiting": 3, "estimate_min": 2.5, "issued": 9, "windows": 1, "window_1": 6}))]))
    base = town.start_dashboard()
    page = browser.new_context(viewport=PHONE, locale="ja-JP").new_page()
    page.goto(f"{base}/counter/counter-1")
    page.wait_for_timeout(1500)  # the live stream has connected and shown its snapshot
    assert page.is_visible("#counter-stale"), "an hour-old reading stays marked as not recent"
    assert page.inner_text("#counter-estimate") == "約 3 分", "halves round up, as on the printed ticket"
    town.store.write(Batch(readings=[("counter-1", Reading(time.time(), 2, {
        "waiting": 2, "estimate_min": 1.5, "issued": 9, "windows": 1, "window_1": 7}))]))
    page.wait_for_selector('[data-window="1"]:text-is("7")')
    page.wait_for_selector("#counter-stale", state="hidden")
