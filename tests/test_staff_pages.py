"""Staff pages that act as a device, in Chromium: a shelter's tally through a dropped link."""

from __future__ import annotations

import pytest

from jisaku.gateway.registry import DeviceRecord

from .test_browser import ARTIFACTS, PHONE, browser  # noqa: F401  (the browser fixture)
from .town import wait_until


def add_device(town, device_id: str, kind: str, **fields) -> str:
    town.secrets[device_id] = town.registry.add_device(DeviceRecord(device_id, kind, **fields))
    return town.secrets[device_id]


def stored_counts(town, device_id: str) -> list[int]:
    return [r["v"]["count"] for r in town.store.readings(device_id)]


def latest_count(town, device_id: str):
    row = next((d for d in town.store.latest(public_only=False) if d["id"] == device_id), None)
    return row["values"].get("count") if row else None


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_shelter_phone_counts_every_tap_once_through_a_dropped_link(browser, make_town):  # noqa: F811
    town = make_town()
    secret = add_device(town, "shelter-1", "shelter", name="North school", name_ja="北小学校",
                        lat=36.15, lon=137.25)
    base = town.start_dashboard(phones=True)
    context = browser.new_context(viewport=PHONE, locale="ja-JP", has_touch=True)
    page = context.new_page()
    page.goto(f"{base}/shelters/shelter-1/staff#key={secret}")
    page.wait_for_selector("#staff-desk:not([hidden])")
    assert "key=" not in page.url, "the secret must leave the address bar at once"
    assert page.inner_text("#staff-name") == "北小学校"

    for _ in range(3):
        page.click("#tally-in")
    wait_until(lambda: latest_count(town, "shelter-1") == 3, 10, "three taps reach the server")

    # The phone loses its signal: taps are kept on it and the page says so.
    context.set_offline(True)
    for _ in range(5):
        page.click("#tally-in")
    page.click("#tally-out")
    page.wait_for_selector('#staff-status[data-state="waiting"]')
    assert page.get_attribute("#staff-status", "data-pending") == "6"
    assert page.inner_text("#tally-count") == "7"
    assert latest_count(town, "shelter-1") == 3

    # The signal comes back, but the first answers are lost on the way back: the server has the
    # reading, the phone does not know and sends it again. Each must still be stored once.
    lost = []

    def lose_the_answer(route):
        if len(lost) < 2:
            lost.append(route.fetch().status)   # it reaches the server ...
            return route.abort()                # ... and the phone hears nothing
        return route.continue_()

    page.route("**/api/v1/devices/shelter-1/data", lose_the_answer)
    context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    page.wait_for_selector('#staff-status[data-state="sent"]', timeout=60_000)
    assert lost == [200, 200]
    wait_until(lambda: latest_count(town, "shelter-1") == 7, 10, "the kept taps arrive")
    assert stored_counts(town, "shelter-1") == [1, 2, 3, 4, 5, 6, 7, 8, 7], "every tap once, in order"

    # A reload keeps the count (it lives on the phone), and a wrong secret is refused clearly.
    page.reload()
    page.wait_for_selector("#staff-desk:not([hidden])")
    assert page.inner_text("#tally-count") == "7"
    assert not page.is_visible("#staff-login"), "logged in: no login form"
    page.screenshot(path=str(ARTIFACTS / "shelter-staff-phone.png"))
    other = browser.new_context(viewport=PHONE, locale="ja-JP").new_page()
    other.goto(f"{base}/shelters/shelter-1/staff#key=wrong-secret")
    other.wait_for_selector("#staff-login-wrong:not([hidden])")
    context.close()
