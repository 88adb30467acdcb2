"""Shelters in a disaster, end to end: a town's shelter list imported, a volunteer's phone
counting at the door, an operator starting disaster mode in Chromium, and residents seeing
the banner, the colours and the counts on the map, the list and the open data."""

from __future__ import annotations

import csv
import io
import urllib.request

import pytest

from jisaku.gateway.accounts import Accounts
from jisaku.gateway.shelter_data import import_shelters, read_csv

from .layout import cut_off_text
from .test_browser import ARTIFACTS, PHONE, browser  # noqa: F401  (the browser fixture)
from .town import REPO, wait_until

PASSWORD = "a long browser passphrase"
SHELTERS = REPO / "tests" / "data" / "shelters_emergency_sites.csv"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def shelter_features(town) -> dict[str, dict]:
    return {f["id"]: f["properties"]["shelter"] for f in town.get_json("/api/v1/latest.geojson")["features"]
            if f["properties"]["kind"] == "shelter"}


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_disaster_mode_opens_every_shelter_and_residents_see_how_full_each_is(browser, make_town):  # noqa: F811
    town = make_town()
    ids = import_shelters(town.changes, read_csv(SHELTERS.read_bytes()), actor="cli:tester")
    base = town.start_dashboard(phones=True)
    assert {s["level"] for s in shelter_features(town).values()} == {"closed"}, "nobody opened them yet"

    # An operator starts disaster mode from the operator pages (a phone, Japanese).
    Accounts(town.registry.db).add("tanaka", PASSWORD, role="operator")
    operator = browser.new_context(viewport=PHONE, locale="ja-JP").new_page()
    operator.goto(f"{base}/operator/shelters")
    operator.fill("#name", "tanaka")
    operator.fill("#password", PASSWORD)
    operator.click("button[type=submit]")
    operator.wait_for_url("**/operator/shelters")
    operator.click("#disaster-switch")  # not confirmed: nothing happens
    assert "災害モード中" not in operator.inner_text("#disaster-state")
    operator.check("input[name=confirm] >> nth=0")
    operator.click("#disaster-switch")
    operator.wait_for_selector("#disaster-state.warning")
    assert {s["level"] for s in shelter_features(town).values()} == {"vacant"}

    # A volunteer counts people in at the first shelter on a phone.
    first = ids[0]
    secret = town.changes.rotate_secret("tanaka", first)
    volunteer = browser.new_context(viewport=PHONE, locale="ja-JP", has_touch=True).new_page()
    volunteer.goto(f"{base}/shelters/{first}/staff#key={secret}")
    volunteer.wait_for_selector("#staff-desk:not([hidden])")
    capacity = shelter_features(town)[first]["capacity"]
    for _ in range(capacity):
        volunteer.click("#tally-in")
    volunteer.wait_for_selector('#staff-status[data-state="sent"]')
    wait_until(lambda: shelter_features(town)[first]["level"] == "full", 10, "the shelter shows full")

    # Headquarters closes the second shelter: the map says so at once, its tally never reported.
    second = ids[1]
    operator.check(f'tr[data-shelter-id="{second}"] input[name=confirm]')
    operator.click(f'tr[data-shelter-id="{second}"] button[type=submit]')
    operator.wait_for_selector(f'tr[data-shelter-id="{second}"] .shelter-closed')

    # Residents: the banner, the shelters' button first, full and closed on the map.
    resident = browser.new_context(viewport=PHONE, locale="ja-JP").new_page()
    resident.goto(f"{base}/")
    resident.wait_for_selector("#jisaku-disaster")
    assert resident.get_attribute(".jisaku-chip >> nth=0", "data-kind") == "shelter"
    resident.wait_for_selector(".jisaku-shelter-full")
    resident.wait_for_selector(".jisaku-shelter-closed")
    assert "満員" in resident.inner_text(".jisaku-shelter-full")
    assert cut_off_text(resident) == []
    resident.screenshot(path=str(ARTIFACTS / "shelters-map-disaster-360px.png"))
    resident.click("#jisaku-disaster a")
    resident.wait_for_url("**/shelters")
    levels = resident.eval_on_selector_all("[data-level]", "items => items.map(i => i.dataset.level)")
    assert levels[-2:] == ["full", "closed"], "open shelters with room first, full and closed last"
    assert resident.get_attribute(f'[data-shelter-id="{first}"] .jisaku-way', "href").startswith("geo:")
    assert "岐阜県高山市西町1-2" in resident.inner_text(f'[data-shelter-id="{first}"]'), "its address"
    assert cut_off_text(resident) == []
    resident.screenshot(path=str(ARTIFACTS / "shelters-list-360px.png"), full_page=True)

    # Open data: the live columns beside the town's own.
    rows = {r["ID"]: r for r in csv.DictReader(io.StringIO(fetch(f"{base}/api/v1/shelters.csv").decode("utf-8-sig")))}
    assert rows["1"]["混雑状況"] == "満員" and rows["1"]["避難者数"] == str(capacity)
    assert rows["2"]["開設状況"] == "閉鎖"

    # Every change is in the audit log, with who made it.
    actions = [(e["actor"], e["action"], e["target"]) for e in town.changes.audit.entries(limit=100)]
    assert ("tanaka", "town.disaster_mode", "disaster_mode") in actions
    assert ("tanaka", "device.settings", second) in actions
