"""The kind registry: every kind is one folder, and a new folder is all a new kind takes.

``tests/kinds/rain_gauge`` is a kind that exists only here. The last test points
JISAKU_KINDS at it and follows a simulated rain gauge through the real pipeline to the
residents' map in Chromium, the list page and the operator pages, none of which were
told about rain gauges.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import uvicorn

from jisaku.contract import kinds
from jisaku.dashboard.app import create_app
from jisaku.device.config import load_device_config
from jisaku.device.runner import build
from jisaku.gateway.accounts import Accounts

from .brokers import free_port
from .test_browser import ARTIFACTS, browser, offline_phone  # noqa: F401 (the fixture)
from .town import REPO, wait_until

TEST_KINDS = Path(__file__).parent / "kinds"
PASSWORD = "a long passphrase for the rain"


@pytest.fixture
def with_test_kinds(monkeypatch):
    """The registry with tests/kinds added, as a town's JISAKU_KINDS would add its own."""
    monkeypatch.setenv("JISAKU_KINDS", str(TEST_KINDS))
    kinds.registry.cache_clear()
    yield kinds.registry()
    monkeypatch.delenv("JISAKU_KINDS")
    kinds.registry.cache_clear()


def board_settings(board: Path) -> dict[str, tuple[float, float] | object]:
    """The ``SETTINGS = {...}`` a board's code declares, read without running MicroPython.

    A number's limits come as ``(low, high)``; a non-numeric setting (a schedule) as the
    board wrote it (e.g. ``"schedule"``)."""
    for source in sorted(board.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SETTINGS" for t in node.targets):
                return {name: tuple(float(v) for v in limits) if isinstance(limits, list | tuple) else limits
                        for name, limits in ast.literal_eval(node.value).items()}
    return {}


# ---------------------------------------------------------------- the kinds that come with jisaku


@pytest.mark.parametrize("name", sorted(kinds.registry().folders))
def test_each_kind_folder_has_everything_a_staffer_needs(name):
    folder = kinds.folder(name)
    app = folder.pi_class()
    assert callable(getattr(app, "run", None)) and callable(getattr(app, "close", None))
    assert folder.simulation_class() is not None, "every kind runs with --simulate"
    example = load_device_config(folder.example)
    assert example.kind in {k.id for k in folder.kinds}, "the example device.toml is of the folder's kind"
    for readme in ("README.md", "README.ja.md"):
        text = (folder.path / readme).read_text(encoding="utf-8")
        assert ("¥" in text or "円" in text) and "--simulate" in text, f"{readme}: parts in yen and how to simulate"
    for setting in folder.settings.values():
        assert setting.label["en"] and setting.label["ja"]


@pytest.mark.parametrize("name", sorted(n for n, f in kinds.registry().folders.items() if f.board))
def test_the_board_takes_the_same_settings_as_the_pi(name):
    folder = kinds.folder(name)
    board = board_settings(folder.board_path)
    numbers = {setting: limits for setting, limits in board.items() if isinstance(limits, tuple)}
    assert numbers == folder.limits(), (
        f"kinds/{name}/kind.toml [settings] and the SETTINGS in kinds/{name}/board disagree")
    # A schedule has no limits: the board must take it all the same.
    assert set(board) == set(folder.settings), (
        f"kinds/{name}/board's SETTINGS and kind.toml [settings] name different settings")


def test_a_kind_the_registry_does_not_know_is_other_and_runs_nothing(tmp_path):
    assert kinds.get("door") is None and kinds.limits_for("door") == {}
    (tmp_path / "device.toml").write_text('[device]\nid = "door-1"\nkind = "door"\n')
    with pytest.raises(ValueError, match="kind 'door' is not one of bus, garbage_truck, float"):
        build(load_device_config(tmp_path), link=None, simulate=True)


@pytest.mark.parametrize(("change", "message"), [
    ((', ja = "雨量計" }', ' }'), r"\[kinds.rain_gauge\] name must be \{ en = \"...\", ja = \"...\" \}"),
    (('colour = "#00838f"', 'colour = "teal"'), "colour must be like"),
    (('limits = [1, 3600]', 'limits = [3600, 1]'), r"interval_s: the lowest \(3600\) is above the highest \(1\)"),
    (('warn = "warn_mm_h"', 'warn = "warn"'), r"\[marker.levels\] warn must name one of the \[settings\]"),
    (('[kinds.rain_gauge]', '[kinds.Rain]'), "a kind is 1-32 of a-z 0-9 _"),
])
def test_a_mistake_in_kind_toml_names_the_file_and_what_to_write(tmp_path, change, message):
    folder = tmp_path / "rain_gauge"
    folder.mkdir()
    for path in (TEST_KINDS / "rain_gauge").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    text = (folder / "kind.toml").read_text(encoding="utf-8")
    assert change[0] in text
    (folder / "kind.toml").write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(kinds.KindError, match=message) as caught:
        kinds.load([tmp_path])
    assert str(folder / "kind.toml") in str(caught.value)


def test_two_folders_cannot_describe_the_same_kind(tmp_path):
    for copy in ("rain_a", "rain_b"):
        (tmp_path / copy).mkdir()
        for path in (TEST_KINDS / "rain_gauge").iterdir():
            (tmp_path / copy / path.name).write_bytes(path.read_bytes())
    with pytest.raises(kinds.KindError, match="kind rain_gauge is described twice"):
        kinds.load([tmp_path])


# ---------------------------------------------------------------- a new kind is one folder


def test_the_test_kind_is_named_nowhere_but_in_its_folder_and_this_test():
    """What makes the next test a proof: no other file of jisaku's code knows about rain gauges
    (docs/kinds.md tells the story of this test, which is no code)."""
    skipped = {".git", ".venv", "node_modules", "data", "test-artifacts", "__pycache__", "jisaku.egg-info", ".pytest_cache"}
    mentions = []
    for path in REPO.rglob("*"):
        parts = set(path.relative_to(REPO).parts)
        if (parts & skipped or not path.is_file() or TEST_KINDS in path.parents or path == Path(__file__)
                or path.suffix == ".md"):
            continue
        try:
            if "rain_gauge" in path.read_text(encoding="utf-8"):
                mentions.append(str(path.relative_to(REPO)))
        except UnicodeDecodeError:
            continue
    assert mentions == []


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_kind_added_as_one_folder_shows_on_the_map_the_list_and_the_operator_pages(
        with_test_kinds, make_town, browser):  # noqa: F811
    gauge = load_device_config(TEST_KINDS / "rain_gauge")
    town = make_town([gauge])
    Accounts(town.registry.db).add("tanaka", PASSWORD, role="operator")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(town.db_path, tiles="osm"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="dashboard").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, 10, "the dashboard starts")
        town.run_devices()
        # The simulation: the kind's own scenario tips the bucket on mock pins, through the real broker.
        rain = wait_until(lambda: [r for r in town.store.readings("rain-1") if r["v"]["tips"] > 0], 20,
                          "the simulated shower tips the bucket and the gauge reports it")
        assert rain[0]["v"]["rain_mm_h"] > 30, "a cloudburst of 7200 mm/h is very heavy rain"

        page = offline_phone(browser, locale="ja-JP")
        page.goto(base + "/")
        marker = page.locator('.jisaku-marker[data-device-id="rain-1"]')
        marker.wait_for(timeout=15000)
        label = marker.get_attribute("aria-label")
        assert "雨量計（消防署）" in label and "1時間に" in label and "mm の雨" in label
        assert "mm/h" in marker.inner_text()
        assert marker.locator(".jisaku-level-alert").count() == 1, "over 30 mm/h: the alert colour"
        assert "#00838f" in marker.inner_html(), "drawn in the kind's colour"
        chip = page.locator('.jisaku-chip[data-kind="rain_gauge"]')
        assert "雨量計" in chip.inner_text()
        legend = page.locator('.jisaku-legend[data-kind="rain_gauge"]')
        assert "雨の強さ" in legend.inner_text() and "30 mm/h 以上" in legend.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "test-kind-rain-gauge-360px.png"))
        assert page.outside == []

        page.goto(base + "/list")
        section = page.locator('.jisaku-section[data-kind="rain_gauge"]')
        assert "雨量計" in section.locator("h2").inner_text() and "1時間に" in section.inner_text()

        page.goto(base + "/operator/devices/rain-1")
        page.fill("#name", "tanaka")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/operator/devices/rain-1")
        settings = page.locator("#settings-form").inner_text()
        assert "非常に激しい雨とする雨量（mm/h）" in settings and "0 から 200 まで" in settings
        page.goto(base + "/operator/devices/new")
        assert page.locator('#kinds option[value="rain_gauge"]').get_attribute("label") or \
            "雨量計" in page.locator('#kinds option[value="rain_gauge"]').inner_text()
    finally:
        server.should_exit = True


def test_the_kinds_are_in_the_public_api_in_both_languages(tmp_path):
    from fastapi.testclient import TestClient

    client = TestClient(create_app(tmp_path / "jisaku.db", tiles="osm"))
    japanese, english = client.get("/api/v1/kinds").json(), client.get("/api/v1/kinds?lang=en").json()
    assert list(japanese) == ["bus", "garbage_truck", "float", "shelter", "snow_gauge", "snow_camera", "printer_tray",
                              "counter", "equipment_watch", "switch_box", "other"]
    assert (japanese["shelter"]["name"], english["shelter"]["name"]) == ("避難所", "Shelter")
    assert japanese["shelter"]["metrics"]["open"]["states"] == ["閉鎖", "開設"]
    assert (japanese["snow_camera"]["name"], english["snow_camera"]["name"]) == ("積雪カメラ", "Snow camera")
    assert (japanese["bus"]["name"], english["bus"]["name"]) == ("バス", "Bus")
    assert japanese["snow_gauge"]["marker"]["levels"] == {"defaults": [20.0, 50.0], "legend": "積雪の深さ"}
    assert english["printer_tray"]["metrics"]["paper"]["states"] == ["Tray empty", "Paper left on the tray"]
    assert "/api/v1/kinds" in client.get("/openapi.json").json()["paths"]
