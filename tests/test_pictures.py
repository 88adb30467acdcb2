"""Cameras upload pictures over HTTP; the public copy never shows the black-out areas.

Against the real dashboard (uvicorn on a free port), with pictures drawn by Pillow: a grey
street with a white "window" where a house would be, which the camera's black-out area covers.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image, ImageDraw

from jisaku.gateway.pictures import PictureStore
from jisaku.gateway.registry import DeviceRecord

from .test_browser import ARTIFACTS, browser, offline_phone  # noqa: F401 (browser: the fixture)
from .town import wait_until

WINDOW = (0.70, 0.10, 0.20, 0.25)  # x, y, width, height: a house window the camera must not show
NOW = time.time()


def street(width: int = 640, height: int = 360, fmt: str = "JPEG") -> bytes:
    """A grey street with a white window at WINDOW."""
    image = Image.new("RGB", (width, height), (120, 120, 120))
    x, y, w, h = WINDOW
    ImageDraw.Draw(image).rectangle([x * width, y * height, (x + w) * width, (y + h) * height], fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, fmt, quality=90)
    return out.getvalue()


def window_centre(data: bytes) -> tuple[int, int, int]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    x, y, w, h = WINDOW
    return image.getpixel((int((x + w / 2) * image.width), int((y + h / 2) * image.height)))


@pytest.fixture
def camera_town(make_town):
    town = make_town()
    secret = town.registry.add_device(DeviceRecord("cam-1", "snow_camera", name="Car park camera"))
    town.registry.add_device(DeviceRecord("cam-9", "snow_camera", name="Mayor's garden", public=False))
    town.start_dashboard(tiles="osm")
    return town, secret


def call(town, path: str, data: bytes | None = None, auth: tuple[str, str] | None = None,
         content_type: str = "image/jpeg") -> tuple[int, bytes, dict]:
    request = urllib.request.Request(town.base_url + path, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", content_type)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def upload(town, secret, data, seq, ts=NOW, device="cam-1", content_type="image/jpeg"):
    return call(town, f"/api/v1/devices/{device}/pictures?ts={ts}&seq={seq}", data, (device, secret), content_type)


def quarantine_reasons(town) -> list[str]:
    return [row["reason"] for row in town.store.quarantined()]


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_picture_is_stored_once_and_its_public_copy_hides_the_black_out_area(camera_town):
    town, secret = camera_town
    # The same folder and database file the dashboard keeps pictures in.
    pictures = PictureStore(town.store.db, town.db_path.parent / "pictures")
    pictures.set_mask("cam-1", [list(WINDOW)])

    status, body, _ = upload(town, secret, street(), seq=1)
    assert status == 201, body
    answer = json.loads(body)
    assert answer["stored"] is True and answer["width"] == 640

    status, body, _ = upload(town, secret, street(), seq=1)  # the camera did not hear the answer: sent again
    assert status == 200 and json.loads(body)["duplicate"] is True
    listed = json.loads(call(town, "/api/v1/devices/cam-1/pictures")[1])
    assert len(listed) == 1

    shown = wait_until(lambda: town.features()["cam-1"]["properties"].get("picture"), 5,
                       "latest.geojson shows the camera's newest picture")
    assert shown == {"ts": NOW, "url": listed[0]["url"], "thumbnail": listed[0]["thumbnail"]}

    status, public, headers = call(town, listed[0]["url"])
    assert status == 200 and headers["content-type"] == "image/jpeg" and "immutable" in headers["cache-control"]
    assert max(window_centre(public)) < 30, "the window is black in the public copy"
    original = pictures.original_file(pictures.pictures("cam-1")[0]).read_bytes()
    assert min(window_centre(original)) > 225, "the original, for operators, is untouched"
    status, thumb, _ = call(town, listed[0]["thumbnail"])
    small = Image.open(io.BytesIO(thumb))
    assert status == 200 and small.size == (320, 180) and max(window_centre(thumb)) < 40

    # A new black-out area: the public copies are made again under new names; the old ones are gone.
    pictures.set_mask("cam-1", [[0.0, 0.0, 0.5, 0.5]])
    again = json.loads(call(town, "/api/v1/devices/cam-1/pictures")[1])[0]
    assert again["url"] != listed[0]["url"] and call(town, listed[0]["url"])[0] == 404
    wait_until(lambda: town.features()["cam-1"]["properties"]["picture"]["url"] == again["url"], 5,
               "the map links the public copy made with the new areas")
    remade = Image.open(io.BytesIO(call(town, again["url"])[1])).convert("RGB")
    assert max(remade.getpixel((10, 10))) < 30 and min(window_centre(call(town, again["url"])[1])) > 200


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_bad_pictures_are_quarantined_with_the_reason_and_the_next_one_still_arrives(camera_town):
    town, secret = camera_town
    assert upload(town, "not-the-secret", street(), seq=1)[0] == 401
    assert call(town, "/api/v1/devices/cam-1/pictures?ts=1&seq=1", street())[0] == 401, "no secret at all"

    status, body, _ = upload(town, secret, b"<html>404 Not Found</html>", seq=2)
    assert status == 415 and "not a JPEG" in json.loads(body)["detail"]
    png = street(fmt="PNG")
    status, body, _ = upload(town, secret, png[: len(png) // 2], seq=3, content_type="image/png")
    assert status == 422 and json.loads(body)["reason"] == "picture_undecodable"
    status, body, _ = upload(town, secret, b"\xff\xd8\xff" + bytes(2 * 1024 * 1024), seq=4)
    assert status == 413 and "at most 1,048,576" in json.loads(body)["detail"]
    status, body, _ = upload(town, secret, street(), seq=5, ts=1000.0)
    assert status == 422 and "clock is not set" in json.loads(body)["detail"]
    assert sorted(quarantine_reasons(town)) == ["picture_too_large", "picture_type", "picture_undecodable",
                                                "ts_too_old"]

    assert upload(town, secret, street(), seq=6)[0] == 201, "the next good picture still arrives"
    assert [p["seq"] for p in json.loads(call(town, "/api/v1/devices/cam-1/pictures")[1])] == [6]


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_private_cameras_pictures_are_nowhere_public(camera_town):
    town, _ = camera_town
    secret = town.registry.rotate_secret("cam-9")
    status, body, _ = upload(town, secret, street(), seq=1, device="cam-9")
    assert status == 201
    url = json.loads(body)["url"]
    assert call(town, "/api/v1/devices/cam-9/pictures")[0] == 404
    assert call(town, url)[0] == 404
    public_secret = town.registry.rotate_secret("cam-1")
    assert upload(town, public_secret, street(), seq=1)[0] == 201
    catalogue = json.loads(call(town, "/api/v1/open-data.json")[1])
    assert [c["device_id"] for c in catalogue["pictures"]] == ["cam-1"], "the open-data catalogue: public ones only"
    assert catalogue["pictures"][0]["count"] == 1 and catalogue["licence"]["id"]
    assert catalogue["pictures"][0]["kept"].startswith("every picture for 7 days")


def test_retention_keeps_every_picture_a_week_then_one_an_hour_then_none(tmp_path):
    from jisaku.gateway.db import Database
    from jisaku.gateway.retention import RetentionPolicy

    db = Database(tmp_path / "jisaku.db")
    store = PictureStore(db, tmp_path / "pictures")
    day, now = 86400, 1_800_000_000.0 // 3600 * 3600
    taken = {
        "today": [now - 600 * i for i in range(1, 4)],                       # all kept
        "ten days ago": [now - 10 * day + 600 * i for i in range(6)],        # one hour's six: the first kept
        "a year ago": [now - 365 * day + 600 * i for i in range(3)],          # past 90 days: none kept
    }
    seq = 0
    for times in taken.values():
        for ts in times:
            seq += 1
            assert store.store("cam-1", street(64, 36), "image/jpeg", ts, seq)[0]
    files_before = sorted((tmp_path / "pictures").rglob("*.jpg"))
    assert len(files_before) == 12 * 3, "original, public copy and thumbnail of each"

    deleted = RetentionPolicy(keep_pictures_days=7, keep_hourly_pictures_days=90).thin_pictures(db, now=now)
    kept = sorted(p.ts for p in store.pictures("cam-1", limit=None))
    assert deleted == 5 + 3
    assert kept == sorted(taken["today"] + [taken["ten days ago"][0]])
    assert len(sorted((tmp_path / "pictures").rglob("*.jpg"))) == len(kept) * 3, "their files are gone too"


def test_an_operator_sets_the_black_out_areas_through_the_api_and_it_is_audited(tmp_path):
    from fastapi.testclient import TestClient

    from jisaku.dashboard.app import create_app
    from jisaku.gateway.accounts import Accounts
    from jisaku.gateway.audit import AuditLog
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import Registry

    app = create_app(tmp_path / "jisaku.db", tiles="osm")
    db = Database(tmp_path / "jisaku.db")
    Accounts(db).add("tanaka", "a long passphrase for the camera", role="operator")
    Registry(db).add_device(DeviceRecord("cam-1", "snow_camera"))
    store = PictureStore(db, tmp_path / "pictures")
    store.store("cam-1", street(), "image/jpeg", NOW, 1)
    client = TestClient(app)
    token = client.post("/api/v1/operator/login", json={"name": "tanaka", "password": "a long passphrase for the camera"}
                        ).json()["csrf_token"]

    answer = client.put("/api/v1/operator/devices/cam-1/picture-mask", json={"areas": [list(WINDOW)]},
                        headers={"X-CSRF-Token": token})
    assert answer.status_code == 200 and answer.json()["rev"] == 1
    picture = store.pictures("cam-1")[0]
    assert max(window_centre(store.public_file(picture).read_bytes())) < 30
    entry = AuditLog(db).entries(target="cam-1")[0]
    assert (entry["actor"], entry["action"]) == ("tanaka", "device.picture_mask")

    outside = client.put("/api/v1/operator/devices/cam-1/picture-mask", json={"areas": [[0.9, 0.9, 0.5, 0.5]]},
                         headers={"X-CSRF-Token": token})
    assert outside.status_code == 400 and "inside the picture" in outside.json()["detail"]
    assert client.put("/api/v1/operator/devices/cam-1/picture-mask", json={"areas": []}).status_code == 403
    assert client.put("/api/v1/operator/devices/cam-404/picture-mask", json={"areas": []},
                      headers={"X-CSRF-Token": token}).status_code == 404


# The pixel at the window's centre, as the browser decoded the picture (a same-origin canvas).
PIXEL_JS = """(img) => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
  c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const [x, y, w, h] = %s; const d = g.getImageData(Math.floor((x + w / 2) * c.width),
  Math.floor((y + h / 2) * c.height), 1, 1).data; return [d[0], d[1], d[2], img.naturalWidth]; }""" % list(WINDOW)


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_residents_see_the_newest_picture_with_its_area_black_in_the_map_popup_and_the_camera_page(
        camera_town, browser):  # noqa: F811
    town, secret = camera_town
    town.registry.update_device(DeviceRecord("cam-1", "snow_camera", name="Car park camera", lat=36.14, lon=137.25))
    PictureStore(town.store.db, town.db_path.parent / "pictures").set_mask("cam-1", [list(WINDOW)])
    for seq in (1, 2, 3):
        assert upload(town, secret, street(), seq=seq, ts=time.time() - 600 * (3 - seq))[0] == 201

    page = offline_phone(browser, locale="ja-JP")
    page.goto(town.base_url + "/")
    # The map may first draw the camera from a snapshot taken before its newest picture: wait for that one,
    # since a new picture arriving mid-click swaps the marker's icon under the finger and the tap is lost.
    newest = PictureStore(town.store.db, town.db_path.parent / "pictures").pictures("cam-1")[0].thumb_name
    page.wait_for_function("name => (window.jisakuMarkers?.['cam-1']?._jisakuKey || '').includes(name)",
                           arg=newest, timeout=15000)
    page.locator('.jisaku-marker[data-device-id="cam-1"]').click()
    thumb = page.locator(".jisaku-popup-picture")
    thumb.wait_for(timeout=10000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    r, g, b, width = thumb.evaluate(PIXEL_JS)
    assert width == 320 and max(r, g, b) < 40, "the thumbnail is decoded, the window black"
    assert "撮影" in page.locator(".jisaku-popup .jisaku-picture-when").inner_text()

    page.goto(town.base_url + "/devices/cam-1")
    big = page.locator("#jisaku-picture")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=big.element_handle())
    r, g, b, width = big.evaluate(PIXEL_JS)
    assert width == 640 and max(r, g, b) < 30
    strip = page.locator("#jisaku-strip button")
    assert strip.count() == 3
    strip.first.click()
    assert "3 枚中 1 枚目" in page.locator("#jisaku-picture-when").inner_text()
    assert page.outside == []


# ---------------------------------------------------------------- a simulated camera, end to end

GROUND = (0.02, 0.78, 0.10, 0.15)  # bottom left: snow-covered ground in the simulated scene, never dark by day
PASSWORD = "a long passphrase for the operator"
MEAN_JS = """(img) => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
  c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const [x, y, w, h] = %s; const d = g.getImageData(Math.floor(x * c.width), Math.floor(y * c.height),
  Math.floor(w * c.width), Math.floor(h * c.height)).data; let sum = 0;
  for (let i = 0; i < d.length; i += 4) sum += (d[i] + d[i + 1] + d[i + 2]) / 3; return sum / (d.length / 4); }""" % list(GROUND)


def mean_brightness(data: bytes, rect=GROUND) -> float:
    image = Image.open(io.BytesIO(data)).convert("L")
    x, y, w, h = rect
    box = image.crop((int(x * image.width), int(y * image.height), int((x + w) * image.width),
                      int((y + h) * image.height)))
    return sum(box.getdata()) / (box.width * box.height)


def simulated_camera(interval_s: float = 1.0):
    from jisaku.device.config import load_device_config

    from .town import KINDS

    return load_device_config(KINDS / "snow_camera", {"device": {"interval_s": interval_s},
                                                        "simulate": {"start_hour": 12, "hours_per_minute": 0.1}})


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_simulated_cameras_pictures_reach_the_camera_page_blacked_out_and_operators_see_the_original(
        make_town, browser):  # noqa: F811
    from jisaku.gateway.accounts import Accounts

    town = make_town([simulated_camera()])
    Accounts(town.registry.db).add("tanaka", PASSWORD, role="operator")
    PictureStore(town.store.db, town.db_path.parent / "pictures").set_mask("cam-1", [list(GROUND)])
    town.start_dashboard(tiles="osm")
    town.run_devices()
    wait_until(lambda: town.features()["cam-1"]["properties"].get("picture"), 30,
               "the simulated camera's picture goes device -> outbox -> upload -> server -> map")

    page = offline_phone(browser, locale="ja-JP")
    page.goto(town.base_url + "/devices/cam-1")
    big = page.locator("#jisaku-picture")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=big.element_handle())
    assert big.evaluate("img => img.naturalWidth") == 1280
    assert big.evaluate(MEAN_JS) < 20, "the browser shows the black-out area black"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "snow-camera-360px.png"), full_page=True)

    page.goto(town.base_url + "/operator/login")
    page.fill("#name", "tanaka")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/operator/**")
    original = page.request.get(town.base_url + "/api/v1/operator/devices/cam-1/pictures/newest")
    assert original.status == 200 and original.headers["cache-control"] == "private, no-store"
    assert mean_brightness(original.body()) > 60, "the operator's original shows the ground"
    assert page.outside == []


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_minute_without_the_server_loses_no_picture_and_stores_none_twice(make_town, tmp_path):
    """The camera goes on taking pictures while the server is down for 60 s; they all arrive, once."""
    import threading

    import uvicorn

    from jisaku.dashboard.app import create_app
    from jisaku.device.runner import run_device

    from .brokers import free_port

    town = make_town([simulated_camera(interval_s=2.0)])
    port = free_port()

    def serve() -> uvicorn.Server:
        server = uvicorn.Server(uvicorn.Config(create_app(town.db_path, tiles="osm"), host="127.0.0.1", port=port,
                                               log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        wait_until(lambda: server.started, 10, "the dashboard starts")
        return server

    server = serve()
    stop = threading.Event()
    state = tmp_path / "cam-1"
    device = threading.Thread(target=run_device, daemon=True, args=(
        town.devices[0], town.broker_url, town.secrets["cam-1"], True, stop, state),
        kwargs={"server_url": f"http://127.0.0.1:{port}"})
    device.start()
    store = PictureStore(town.store.db, town.db_path.parent / "pictures")
    try:
        wait_until(lambda: store.pictures("cam-1"), 20, "the first picture arrives")
        server.should_exit = True
        wait_until(lambda: not server.started or server.should_exit, 5, "the server stops")
        time.sleep(60)
        waiting = len(list((state / "pictures").glob("*.jpg")))
        assert waiting >= 20, f"only {waiting} pictures waited on the camera's disk during the minute"
        server = serve()
        wait_until(lambda: not list((state / "pictures").glob("*.jpg")), 60,
                   "every waiting picture is uploaded once the server is back")
    finally:
        stop.set()
        device.join(10)
        server.should_exit = True
    seqs = sorted(p.seq for p in store.pictures("cam-1", limit=None))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no picture is missing"
    assert len(seqs) == len(set(seqs)), "none is stored twice"
    files = list((town.db_path.parent / "pictures" / "cam-1").rglob("*.jpg"))
    assert len(files) == 3 * len(seqs)


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_the_operator_page_shows_the_cameras_health_and_saves_its_black_out_areas(camera_town, browser):  # noqa: F811
    from jisaku.gateway.accounts import Accounts

    town, secret = camera_town
    Accounts(town.registry.db).add("tanaka", PASSWORD, role="operator")
    assert upload(town, secret, street(), seq=1)[0] == 201
    assert upload(town, secret, b"GIF89a not ours", seq=2)[0] == 415

    page = browser.new_page(viewport={"width": 1024, "height": 900}, locale="ja-JP")
    page.goto(town.base_url + "/operator/devices/cam-1")
    page.fill("#name", "tanaka")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/operator/devices/cam-1")
    assert "1 " in page.locator("#pictures-refused").inner_text() and "picture_type" in page.content()
    original = page.locator("#picture-original")
    page.wait_for_function("img => img.complete && img.naturalWidth === 640", arg=original.element_handle())
    assert min(original.evaluate(PIXEL_JS)[:3]) > 225, "the operator sees the window"

    # Drag across the window on the picture as the camera took it.
    original.scroll_into_view_if_needed()
    box = original.bounding_box()
    x, y, w, h = WINDOW
    page.mouse.move(box["x"] + (x - 0.02) * box["width"], box["y"] + (y - 0.02) * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + (x + w + 0.02) * box["width"], box["y"] + (y + h + 0.02) * box["height"], steps=5)
    page.mouse.up()
    drawn = json.loads(page.input_value("#areas"))
    assert len(drawn) == 1 and drawn[0][0] == pytest.approx(x - 0.02, abs=0.01)
    page.click("#mask-form button[type=submit]")
    page.wait_for_selector("text=黒塗りの範囲を保存しました")
    public = page.locator("#picture-public")
    page.wait_for_function("img => img.complete && img.naturalWidth === 640", arg=public.element_handle())
    assert max(public.evaluate(PIXEL_JS)[:3]) < 30, "what residents see has it black"
    assert min(page.locator("#picture-original").evaluate(PIXEL_JS)[:3]) > 225

    page.fill("#areas", "[[2, 2, 1, 1]]")
    page.click("#mask-form button[type=submit]")
    assert "inside the picture" in page.locator("[role=alert]").inner_text()
