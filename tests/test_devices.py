"""Device behaviour on gpiozero's MockFactory pins, no network needed."""

from __future__ import annotations

import threading

import pytest
from gpiozero.pins.mock import MockFactory

from jisaku.contract import kinds
from jisaku.device.config import DeviceConfigError, load_device_config
from jisaku.contract.geo import Route, distance_m, load_route
from jisaku.kinds.printer_tray.pi import PrinterTray
from jisaku.kinds.snow_gauge.pi import ASSUMED_SPEED_OF_SOUND, SnowGauge, speed_of_sound
from jisaku.kinds.snow_gauge.simulate import Snowfall
from jisaku.kinds.vehicle_tracker.pi import VehicleTracker
from jisaku.kinds.vehicle_tracker.simulate import DrivingRoute, rmc_sentence

from .town import KINDS, wait_until

SNOW_LIMITS = kinds.folder("snow_gauge").limits()


class RecordingLink:
    """Stands in for the network link: keeps what the app would have published."""

    def __init__(self):
        self.readings, self.events = [], []

    def publish_reading(self, values, ts=None):
        self.readings.append(values)

    def publish_event(self, name, values=None):
        self.events.append((name, values))


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.reset()


def test_tray_beeps_after_the_threshold_and_stops_when_paper_is_taken(factory):
    config = load_device_config(KINDS / "printer_tray", {"tray": {"left_after_s": 30}})
    link = RecordingLink()
    tray = PrinterTray(config, link, pin_factory=factory)
    sensor, buzzer_pin = factory.pin(17), factory.pin(18)

    tray.step(0.0)
    sensor.drive_low()              # paper lands on the tray
    tray.step(100.0)
    tray.step(129.0)
    assert not tray.beeping and link.events == []
    tray.step(130.5)                # 30.5 s: a printout was left
    assert tray.beeping
    assert link.events == [("tray_left", {"waited_s": 30.5, "left_today": 1})]
    threading.Event().wait(0.25)    # the buzzer beeps in its own thread
    assert any(state.state for state in buzzer_pin.states), "the buzzer sounded"
    tray.step(140.0)
    assert len(link.events) == 1, "one event per printout, not one per look"

    sensor.drive_high()             # somebody takes it
    tray.step(145.0)
    assert not tray.beeping and buzzer_pin.state == 0
    assert link.events[-1] == ("tray_cleared", {"lay_s": 45.0})
    tray.close()


def test_paper_taken_in_time_makes_no_sound(factory):
    link = RecordingLink()
    tray = PrinterTray(load_device_config(KINDS / "printer_tray"), link, pin_factory=factory)
    sensor = factory.pin(17)
    sensor.drive_low()
    tray.step(0.0)
    tray.step(10.0)
    sensor.drive_high()
    tray.step(12.0)
    assert link.events == [] and tray.left_today == 0
    tray.report()
    assert link.readings == [{"paper": 0, "left_today": 0}]
    tray.close()


def test_snow_gauge_measures_depth_from_mount_height(factory):
    config = load_device_config(KINDS / "snow_gauge", {"simulate": {"curve": [[0, 42], [24, 42]]}})
    Snowfall(config, factory).tick(0.0)
    gauge = SnowGauge(config, RecordingLink(), pin_factory=factory)
    try:
        depth = gauge.measure_depth_cm()
    finally:
        gauge.close()
    assert depth == pytest.approx(42, abs=0.5)


def test_snowfall_curve_is_interpolated_and_repeats(factory):
    config = load_device_config(KINDS / "snow_gauge", {
        "simulate": {"curve": [[0, 10], [6, 40], [24, 10]], "hours_per_minute": 60}})
    snow = Snowfall(config, factory)
    assert snow.depth_cm(0) == 10
    assert snow.depth_cm(3 * 60 / 60) == pytest.approx(25)      # hour 3
    assert snow.depth_cm(6 * 60 / 60) == pytest.approx(40)      # hour 6
    assert snow.depth_cm((24 + 3) * 60 / 60) == pytest.approx(25)


def test_tracker_ignores_fixes_that_are_not_valid():
    assert VehicleTracker.parse_fix("$GPRMC,123519,V,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A") is None
    assert VehicleTracker.parse_fix("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47") is None
    assert VehicleTracker.parse_fix("garbage from a half-read line") is None
    fix = VehicleTracker.parse_fix(rmc_sentence(36.1408, 137.2522, 10.0, 92.0))
    assert fix == {"lat": pytest.approx(36.1408, abs=1e-5), "lon": pytest.approx(137.2522, abs=1e-5),
                   "speed_kmh": 18.5, "heading": 92.0}


def test_tracker_reports_by_time_or_distance_whichever_first():
    config = load_device_config(KINDS / "vehicle_tracker", {"gps": {"every_s": 10, "every_m": 50}})
    tracker = VehicleTracker(config, RecordingLink(), lines=[])
    assert tracker.should_send(0.0, 36.14, 137.25)
    tracker.last_sent = (0.0, 36.14, 137.25)
    assert not tracker.should_send(5.0, 36.1403, 137.25)      # 33 m in 5 s
    assert tracker.should_send(5.0, 36.1405, 137.25)          # 56 m
    assert tracker.should_send(10.0, 36.14, 137.25)           # parked, but 10 s have passed


def test_simulated_drive_follows_the_route_at_its_speed():
    config = load_device_config(KINDS / "vehicle_tracker", {"simulate": {"speed_kmh": 36}})
    route = DrivingRoute(config)
    lines = route.lines()
    first = VehicleTracker.parse_fix(next(lines))
    second = VehicleTracker.parse_fix(next(lines))      # one second later
    route.stop()
    moved = distance_m(first["lat"], first["lon"], second["lat"], second["lon"])
    assert 5 <= moved <= 15, moved                        # 36 km/h is 10 m/s


def test_route_wraps_round_and_knows_its_heading(tmp_path):
    route = Route([(36.0, 137.0), (36.001, 137.0), (36.001, 137.001)])
    lat, lon, heading = route.at(50)
    assert heading == pytest.approx(0, abs=0.1) and lon == 137.0 and 36.0 < lat < 36.001
    assert route.at(route.length_m + 50)[:2] == pytest.approx((lat, lon))
    gpx = tmp_path / "r.gpx"
    gpx.write_text('<gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
                   '<trkpt lat="36.1" lon="137.2"/><trkpt lat="36.2" lon="137.3"/></trkseg></trk></gpx>')
    assert load_route(gpx) == [(36.1, 137.2), (36.2, 137.3)]


@pytest.mark.parametrize("route", sorted((KINDS / "vehicle_tracker" / "routes").glob("*.geojson")),
                         ids=lambda p: p.name)
def test_every_shipped_route_loads(route):
    assert Route(load_route(route)).length_m > 500


def test_config_overrides_and_clear_errors(tmp_path):
    config = load_device_config(KINDS / "snow_gauge", {"device": {"id": "snow-9"}, "ultrasonic": {"samples": 3}})
    assert (config.id, config.section("ultrasonic")["samples"], config.section("ultrasonic")["echo_pin"]) == ("snow-9", 3, 24)
    with pytest.raises(DeviceConfigError, match="no device.toml"):
        load_device_config(tmp_path)
    (tmp_path / "device.toml").write_text('[device]\nid = "Snow 1"\nkind = "snow_gauge"\napp = "snow_gauge"\n')
    with pytest.raises(DeviceConfigError, match="must be 1-64"):
        load_device_config(tmp_path)


@pytest.mark.parametrize("temp_c", [-10.0, 0.0, 25.0])
def test_snow_gauge_corrects_for_the_speed_of_sound_in_cold_air(factory, temp_c):
    config = load_device_config(KINDS / "snow_gauge", {
        "simulate": {"curve": [[0, 40], [24, 40]], "temperature_c": [[0, temp_c], [24, temp_c]]}})
    snow = Snowfall(config, factory)
    snow.tick(0.0)
    with_thermometer = load_device_config(KINDS / "snow_gauge", {
        "ultrasonic": {"temperature_file": str(snow.temperature_file)}})
    gauge = SnowGauge(with_thermometer, RecordingLink(), pin_factory=factory)
    try:
        corrected = gauge.measure()
        gauge.thermometer = None                    # the same gauge without its DS18B20
        uncorrected = gauge.measure()
    finally:
        gauge.close()
    assert corrected == {"temp_c": temp_c, "depth_cm": pytest.approx(40, abs=0.5)}
    # Over 160 cm of air, an uncorrected gauge takes the slower echo of cold air for a longer distance.
    expected_error = 160 * (1 - ASSUMED_SPEED_OF_SOUND / speed_of_sound(temp_c))
    assert uncorrected["depth_cm"] - 40 == pytest.approx(expected_error, abs=1.0)
    if temp_c == -10.0:
        assert uncorrected["depth_cm"] - 40 < -8, "at -10 °C, snow reads 8 cm too shallow"


def test_snow_gauge_skips_a_reading_when_the_echoes_do_not_come_back(factory):
    config = load_device_config(KINDS / "snow_gauge", {"ultrasonic": {"samples": 3}})
    factory.pin(24)  # an echo pin that never answers: a wet or iced-over sensor
    gauge = SnowGauge(config, RecordingLink(), pin_factory=factory)
    try:
        assert gauge.measure() is None
    finally:
        gauge.close()


def test_ds18b20_reads_millidegrees_and_ignores_its_power_on_value(tmp_path):
    from jisaku.device.temperature import DS18B20

    file = tmp_path / "temperature"
    file.write_text("-3562\n")
    assert DS18B20(file).read_c() == -3.562
    file.write_text("85000\n")
    assert DS18B20(file).read_c() is None
    file.unlink()
    assert DS18B20(file).read_c() is None


def test_a_student_app_in_the_device_folder_runs_on_the_same_runtime(tmp_path, factory):
    """Something new needs only a small class next to device.toml, not a change to jisaku."""
    (tmp_path / "device.toml").write_text(
        '[device]\nid = "door-1"\nkind = "door"\napp = "door.py:DoorCounter"\n[door]\npin = 5\n')
    (tmp_path / "door.py").write_text(
        "from gpiozero import Button\n\n"
        "class DoorCounter:\n"
        "    SETTINGS = {}\n\n"
        "    def __init__(self, config, link, pin_factory=None):\n"
        "        self.link = link\n"
        "        self.button = Button(config.section('door')['pin'], pin_factory=pin_factory)\n"
        "        self.button.when_pressed = lambda: link.publish_reading({'opened': 1})\n\n"
        "    def run(self, stop):\n"
        "        stop.wait()\n\n"
        "    def close(self):\n"
        "        self.button.close()\n")
    from jisaku.device.runner import build

    link = RecordingLink()
    app, scenario = build(load_device_config(tmp_path), link, simulate=True)
    assert scenario is None
    pin = app.button.pin
    pin.drive_low()
    pin.drive_high()
    assert link.readings == [{"opened": 1}]
    app.close()


# ---------------------------------------------------------------- the snow gauge's own alarm

# A simulated snowy day, one point an hour: up past alert_cm (50), wobbling between warn_cm (20)
# and alert_cm, down below warn_cm, and up again. Every depth is well clear of either level.
SNOWY_DAY = [10, 45, 56, 35, 47, 58, 30, 12, 40, 62]


def test_snow_gauge_raises_its_alarm_once_and_clears_it_once(factory):
    config = load_device_config(KINDS / "snow_gauge", {
        "simulate": {"curve": [[hour, cm] for hour, cm in enumerate(SNOWY_DAY + [0])], "hours_per_minute": 60}})
    snow, link = Snowfall(config, factory), RecordingLink()
    gauge = SnowGauge(config, link, pin_factory=factory)
    events_after = []
    try:
        for hour in range(len(SNOWY_DAY)):
            snow.tick(hour * 1.0)        # 60 simulated hours a minute: one hour a second
            # The sensor pings in its own thread: on a busy machine, wait until it hears the new depth.
            expected_cm = snow.mount_height_cm - snow.depth_cm(hour * 1.0)
            wait_until(lambda: abs(gauge.sensor.distance * 100 - expected_cm) < 1, 10,
                       f"the sensor hears hour {hour}'s depth")
            gauge.step()
            events_after.append(len(link.events))
    finally:
        gauge.close()
    assert [round(r["depth_cm"]) for r in link.readings] == SNOWY_DAY
    assert events_after == [0, 0, 1, 1, 1, 1, 1, 2, 2, 3], "one event on crossing, none while it wobbles"
    (raised, values), cleared, again = link.events
    assert raised == "deep_snow" and values["alert_cm"] == 50 and values["depth_cm"] == pytest.approx(56, abs=1)
    assert cleared[0] == "snow_cleared" and cleared[1]["depth_cm"] == pytest.approx(12, abs=1)
    assert again[0] == "deep_snow"


def test_operators_move_the_alarm_levels_and_a_bad_pair_is_refused(factory, tmp_path):
    from jisaku.device.remote_settings import RemoteSettings

    config = load_device_config(KINDS / "snow_gauge", {"simulate": {"curve": [[0, 35], [24, 35]]}})
    Snowfall(config, factory).tick(0.0)
    link = RecordingLink()
    gauge = SnowGauge(config, link, pin_factory=factory)
    remote = RemoteSettings(gauge, SNOW_LIMITS, tmp_path)
    try:
        gauge.step()
        assert link.events == [], "35 cm is below the default alert_cm of 50"

        ok, reason = remote.apply({"warn_cm": 40, "alert_cm": 30})
        assert not ok and reason == "alert_cm (30) must be above warn_cm (40): raise alert_cm or lower warn_cm"
        ok, reason = remote.apply({"alert_cm": 15})     # below the warn_cm the gauge already has (20)
        assert not ok and "alert_cm (15) must be above warn_cm (20)" in reason
        assert (gauge.warn_cm, gauge.alert_cm) == (20, 50), "the old levels are kept"
        assert not (tmp_path / "settings.json").exists(), "nothing refused is saved"

        assert remote.apply({"warn_cm": 10, "alert_cm": 30}) == (True, None)
        gauge.step()
        assert [name for name, _ in link.events] == ["deep_snow"]
        assert link.events[0][1]["alert_cm"] == 30
    finally:
        gauge.close()
    restarted = SnowGauge(config, RecordingLink(), pin_factory=factory)
    try:
        RemoteSettings(restarted, SNOW_LIMITS, tmp_path).restore()
        assert (restarted.warn_cm, restarted.alert_cm) == (10, 30), "the operators' levels outlive a restart"
    finally:
        restarted.close()


def test_alarm_levels_in_device_toml_are_checked(factory):
    config = load_device_config(KINDS / "snow_gauge")
    assert config.section("alarm") == {"warn_cm": 20, "alert_cm": 50}
    with pytest.raises(DeviceConfigError, match=r"alert_cm \(30\) must be above warn_cm \(30\)"):
        SnowGauge(load_device_config(KINDS / "snow_gauge", {"alarm": {"warn_cm": 30, "alert_cm": 30}}),
                  RecordingLink(), pin_factory=factory)
    with pytest.raises(DeviceConfigError, match="warn_cm must be a number from 0 to 1000"):
        SnowGauge(load_device_config(KINDS / "snow_gauge", {"alarm": {"warn_cm": "deep"}}),
                  RecordingLink(), pin_factory=factory)


def test_alert_cm_an_operator_sends_moves_the_residents_map_colours(factory, tmp_path):
    """Operator -> gateway -> gauge -> config/ack -> the thresholds the residents' map colours by."""
    import json

    from jisaku.dashboard.pages import device_levels
    from jisaku.device.remote_settings import RemoteSettings
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import DeviceRecord, Registry
    from jisaku.gateway.service import Gateway
    from jisaku.gateway.store import Batch, SQLiteStore

    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    registry.add_device(DeviceRecord("snow-1", "snow_gauge"))
    store = SQLiteStore(db)
    gateway = Gateway(store, registry, "mqtt://127.0.0.1:1", "_gateway", "unused")
    config = load_device_config(KINDS / "snow_gauge")
    Snowfall(config, factory).tick(0.0)
    gauge = SnowGauge(config, RecordingLink(), pin_factory=factory)
    remote = RemoteSettings(gauge, SNOW_LIMITS, tmp_path / "snow-1")

    def send(changes):
        """What `jisaku devices configure` and the operator page do, and the gauge's answer."""
        message = store.next_config("snow-1", changes)
        ok, reason = remote.apply({k: v for k, v in message.items() if k != "rev"})
        ack = {"rev": message["rev"], "ok": ok, **({"reason": reason} if reason else {})}
        batch = Batch()
        gateway.sort_into(batch, "jisaku/snow-1/config/ack", json.dumps(ack).encode(), 1732300100.0)
        store.write(batch)
        return store.config_state("snow-1")

    try:
        assert device_levels(store, {"id": "snow-1", "kind": "snow_gauge"}) == (20, 50)
        assert send({"warn_cm": 10, "alert_cm": 30})["state"] == "applied"
        assert device_levels(store, {"id": "snow-1", "kind": "snow_gauge"}) == (10, 30)
        assert (gauge.warn_cm, gauge.alert_cm) == (10, 30), "the gauge alarms where the map turns red"
        refused = send({"warn_cm": 40})
        assert refused["state"] == "refused" and "must be above warn_cm (40)" in refused["reason"]
        assert (gauge.warn_cm, gauge.alert_cm) == (10, 30)
    finally:
        gauge.close()
