"""Phones as trackers: Traccar Client's requests to /osmand go through the real pipeline
(dashboard -> broker -> gateway -> SQLite -> latest.geojson), on both brokers.

Every request below is built the way Traccar Client builds it:
- Traccar Client for Android up to 8.x: POST, empty body, its parameters appended to the
  server URL's own query string with "&" (ProtocolFormatter.kt: Uri.buildUpon().appendQueryParameter);
- the OsmAnd app and other OsmAnd clients: the same parameters in a GET, or a form POST;
- Traccar Client 9 (Android and iOS): POST of the background-geolocation SDK's JSON to the server
  URL as written (preferences.dart: url, params {"device_id"}, locationTemplate).
"""

from __future__ import annotations

import base64
import threading
import time
from datetime import datetime, timezone

import httpx
import pytest
import uvicorn

from jisaku.dashboard.app import create_app
from jisaku.dashboard.osmand import PhonePublisher
from jisaku.device.config import load_device_config

from .brokers import free_port
from .town import KINDS, Town, wait_until

PHONE = "phone-bus-7"
LAT, LON = 36.146123, 137.252345  # Takayama, by the station


class Dashboard:
    """The dashboard on a free port, with a publisher for phones (as Town.start_dashboard, plus phones)."""

    def __init__(self, town: Town, phones: PhonePublisher | None):
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(town.db_path, phones=phones), host="127.0.0.1",
                                                    port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="dashboard-phones")
        self.thread.start()
        wait_until(lambda: self.server.started, 10, "the dashboard starts")
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=15)

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def phone_town(make_town):
    """A town with one registered phone (kind bus) and a dashboard that accepts /osmand."""
    phone = load_device_config(KINDS / "vehicle_tracker", {"device": {"id": PHONE}})
    town = make_town([phone])
    phones = PhonePublisher(town.broker_url, "_tester", town.tester_secret)
    phones.start()
    dashboard = Dashboard(town, phones)
    town.base_url = dashboard.url  # so town.features() asks this dashboard
    yield town, dashboard
    dashboard.close()
    phones.stop()


def android_url(secret: str, ts: int | str, lat: float = LAT, lon: float = LON, speed_kn: float = 10.0,
                device_id: str = PHONE) -> str:
    """Server URL ``/osmand?key=SECRET`` with Traccar Client for Android's parameters appended."""
    return (f"/osmand?key={secret}&id={device_id}&timestamp={ts}&lat={lat}&lon={lon}&speed={speed_kn}"
            f"&bearing=92.5&altitude=573.0&accuracy=4.5&batt=81.0")


def client9_body(ts_iso: str, lat: float = LAT, lon: float = LON, speed_ms: float = 5.0) -> dict:
    """What Traccar Client 9 POSTs: the SDK's record under "location", its params at the root."""
    return {
        "location": {
            "timestamp": ts_iso,
            "coords": {"latitude": lat, "longitude": lon, "accuracy": 6.1, "speed": speed_ms,
                       "heading": 181.3, "altitude": 571.2},
            "is_moving": True, "odometer": 1234.5, "event": "", "battery": {"level": 0.64, "is_charging": False},
            "activity": {"type": "in_vehicle"}, "extras": {},
            "_": f"&id={PHONE}&lat={lat}&lon={lon}&timestamp={ts_iso}&",
        },
        "device_id": PHONE,
    }


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recent_second() -> int:
    return int(time.time()) - 300


def map_shows(town: Town, lat: float, lon: float) -> dict:
    def arrived():
        feature = town.features().get(PHONE)
        return feature if feature and feature["geometry"] and \
            feature["geometry"]["coordinates"] == [lon, lat] else None
    return wait_until(arrived, 15, f"{PHONE} is on latest.geojson at {lat},{lon}")


def settle(town: Town, dashboard: Dashboard, secret: str) -> int:
    """Send one more good fix and wait for it: everything published before it has been handled.

    (The dashboard publishes in order on one connection, and the gateway stores in order.)
    Returns how many readings the phone has, the marker included.
    """
    marker = recent_second() + 200
    answer = dashboard.http.post(android_url(secret, marker, lat=LAT + 0.01))
    assert answer.status_code == 200, answer.text
    wait_until(lambda: any(r["ts"] == marker for r in town.store.readings(PHONE)), 15, "the marker fix is stored")
    return town.store.reading_count(PHONE)


def test_android_client_post_with_query_string(phone_town):
    town, dashboard = phone_town
    ts = recent_second()
    answer = dashboard.http.post(android_url(town.secrets[PHONE], ts))
    assert answer.status_code == 200 and answer.content == b""
    feature = map_shows(town, LAT, LON)
    assert feature["properties"]["kind"] == "bus"
    assert feature["properties"]["ts"] == ts
    assert feature["properties"]["values"] == {
        "lat": LAT, "lon": LON, "speed_kmh": 18.52, "heading": 92.5, "alt_m": 573.0, "acc_m": 4.5,
        "battery_pct": 81.0,
    }
    [reading] = town.store.readings(PHONE)
    assert (reading["ts"], reading["seq"]) == (ts, ts * 1000)


def test_osmand_get_and_form_post(phone_town):
    town, dashboard = phone_town
    secret = town.secrets[PHONE]
    ts = recent_second()
    answer = dashboard.http.get(android_url(secret, ts, speed_kn=20.0))
    assert answer.status_code == 200 and answer.content == b""
    assert map_shows(town, LAT, LON)["properties"]["values"]["speed_kmh"] == 37.04

    # A form POST; this client sends location=lat,lon and no speed.
    form = {"id": PHONE, "location": f"{LAT + 0.002},{LON}", "timestamp": str(ts + 5), "bearing": "10"}
    answer = dashboard.http.post(f"/osmand?key={secret}", data=form)
    assert answer.status_code == 200 and answer.content == b""
    feature = map_shows(town, LAT + 0.002, LON)
    assert feature["properties"]["ts"] == ts + 5
    assert feature["properties"]["values"]["heading"] == 10

    # Everything in the form, the key included.
    form = {"key": secret, "id": PHONE, "lat": str(LAT + 0.004), "lon": str(LON), "timestamp": str(ts + 10)}
    assert dashboard.http.post("/osmand", data=form).status_code == 200
    map_shows(town, LAT + 0.004, LON)


def test_traccar_client_9_json(phone_town):
    town, dashboard = phone_town
    ts = recent_second() + 0.25
    answer = dashboard.http.post(f"/osmand?key={town.secrets[PHONE]}", json=client9_body(iso(ts)))
    assert answer.status_code == 200 and answer.content == b""
    feature = map_shows(town, LAT, LON)
    assert feature["properties"]["ts"] == ts
    assert feature["properties"]["values"] == {
        "lat": LAT, "lon": LON, "speed_kmh": 18.0, "heading": 181.3, "alt_m": 571.2, "acc_m": 6.1,
        "battery_pct": 64.0,
    }


def test_basic_authentication_is_accepted(phone_town):
    town, dashboard = phone_town
    ts = recent_second()
    credentials = base64.b64encode(f"{PHONE}:{town.secrets[PHONE]}".encode()).decode()
    answer = dashboard.http.post(f"/osmand?id={PHONE}&timestamp={ts}&lat={LAT}&lon={LON}",
                                 headers={"Authorization": f"Basic {credentials}"})
    assert answer.status_code == 200, answer.text
    map_shows(town, LAT, LON)


def test_seconds_milliseconds_and_iso_land_at_the_same_ts(phone_town):
    town, dashboard = phone_town
    secret = town.secrets[PHONE]
    t = recent_second()
    sent = [android_url(secret, t), android_url(secret, (t + 1) * 1000), android_url(secret, iso(t + 2))]
    for url in sent:
        assert dashboard.http.post(url).status_code == 200
    # The same instant in the other two forms is the same (ts, seq): stored once.
    for url in (android_url(secret, t * 1000), android_url(secret, iso(t))):
        assert dashboard.http.post(url).status_code == 200
    assert dashboard.http.post(f"/osmand?key={secret}", json=client9_body(iso(t + 1))).status_code == 200
    assert settle(town, dashboard, secret) == 4
    readings = town.store.readings(PHONE)
    assert [(r["ts"], r["seq"]) for r in readings[:3]] == [(t, t * 1000), (t + 1, (t + 1) * 1000),
                                                           (t + 2, (t + 2) * 1000)]


def test_a_resent_request_is_stored_once(phone_town):
    town, dashboard = phone_town
    url = android_url(town.secrets[PHONE], recent_second())
    assert [dashboard.http.post(url).status_code for _ in range(3)] == [200, 200, 200]
    assert settle(town, dashboard, town.secrets[PHONE]) == 2


def test_an_unknown_phone_gets_404_and_nothing_is_stored(phone_town):
    town, dashboard = phone_town
    secret = town.secrets[PHONE]
    for device_id in ("bus-99", "48241179", "_gateway"):
        answer = dashboard.http.post(android_url(secret, recent_second(), device_id=device_id))
        assert answer.status_code == 404
        assert "jisaku devices add" in answer.json()["detail"]
        assert secret not in answer.text
    body = client9_body(iso(recent_second())) | {"device_id": "bus-99"}
    assert dashboard.http.post(f"/osmand?key={secret}", json=body).status_code == 404
    assert settle(town, dashboard, secret) == 1
    assert town.store.reading_count() == 1
    assert town.store.quarantine_counts() == {}


def test_a_wrong_or_missing_secret_gets_401_and_nothing_is_stored(phone_town):
    town, dashboard = phone_town
    secret = town.secrets[PHONE]
    ts = recent_second()
    wrong = secret[:-4] + "AAAA" if not secret.endswith("AAAA") else secret[:-4] + "BBBB"
    for url in (android_url(wrong, ts), android_url("", ts), android_url(secret, ts).replace(f"key={secret}&", "")):
        answer = dashboard.http.post(url)
        assert answer.status_code == 401, answer.text
        assert "key" in answer.json()["detail"] and secret not in answer.text
    answer = dashboard.http.post(f"/osmand?key={wrong}", json=client9_body(iso(ts)))
    assert answer.status_code == 401
    # Basic authentication as another user is not this phone's.
    credentials = base64.b64encode(f"bus-1:{secret}".encode()).decode()
    answer = dashboard.http.post(android_url(secret, ts).replace(f"key={secret}&", ""),
                                 headers={"Authorization": f"Basic {credentials}"})
    assert answer.status_code == 401
    assert settle(town, dashboard, secret) == 1
    assert town.store.quarantine_counts() == {}


@pytest.mark.parametrize("change, complaint", [
    ({"lat": "abc"}, "lat 'abc' is not a number"),
    ({"lat": "95.0"}, "lat must be -90..90"),
    ({"lat": "nan"}, "lat must be a finite number"),
    ({"lat": ""}, "lat is missing"),
    ({"lon": "0", "lat": "0"}, "no GPS fix"),
    ({"timestamp": ""}, "timestamp is missing"),
    ({"timestamp": "yesterday"}, "timestamp 'yesterday' is not"),
    ({"timestamp": "946684800"}, "before 2020"),
    ({"timestamp": str(int(time.time()) + 3600)}, "in the future"),
    ({"speed": "fast"}, "speed 'fast' is not a number"),
])
def test_a_bad_position_or_time_gets_400_and_nothing_is_stored(phone_town, change, complaint):
    town, dashboard = phone_town
    secret = town.secrets[PHONE]
    params = {"key": secret, "id": PHONE, "timestamp": str(recent_second()), "lat": str(LAT), "lon": str(LON),
              "speed": "3.0"} | change
    answer = dashboard.http.post("/osmand", params=params)
    assert answer.status_code == 400, answer.text
    assert complaint in answer.json()["detail"]
    assert settle(town, dashboard, secret) == 1


def test_bad_json_gets_400(phone_town):
    town, dashboard = phone_town
    secret = town.secrets[PHONE]
    no_coords = client9_body(iso(recent_second()))
    del no_coords["location"]["coords"]
    for body, complaint in ((b"{not json", "not JSON"), (no_coords, "coords")):
        kwargs = {"json": body} if isinstance(body, dict) else {
            "content": body, "headers": {"Content-Type": "application/json"}}
        answer = dashboard.http.post(f"/osmand?key={secret}", **kwargs)
        assert answer.status_code == 400 and complaint in answer.json()["detail"], answer.text
    assert settle(town, dashboard, secret) == 1


def test_without_a_publisher_osmand_answers_503(make_town):
    phone = load_device_config(KINDS / "vehicle_tracker", {"device": {"id": PHONE}})
    town = make_town([phone])
    dashboard = Dashboard(town, None)
    try:
        answer = dashboard.http.post(android_url(town.secrets[PHONE], recent_second()))
        assert answer.status_code == 503
        assert "no broker account" in answer.json()["detail"]
    finally:
        dashboard.close()


def test_an_unreachable_broker_answers_503(make_town):
    phone = load_device_config(KINDS / "vehicle_tracker", {"device": {"id": PHONE}})
    town = make_town([phone])
    phones = PhonePublisher(f"mqtt://127.0.0.1:{free_port()}", "_tester", town.tester_secret, timeout_s=0.5)
    phones.start()
    dashboard = Dashboard(town, phones)
    try:
        started = time.monotonic()
        answer = dashboard.http.post(android_url(town.secrets[PHONE], recent_second()))
        assert answer.status_code == 503
        assert answer.json() == {"detail": "the broker is not reachable, try again"}
        assert time.monotonic() - started < 5
    finally:
        dashboard.close()
        phones.stop()
    assert town.store.reading_count() == 0
