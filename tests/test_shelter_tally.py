"""The shelter tally (kinds/shelter) on gpiozero's mock pins: what staff at the door see and do.

Presses on the two buttons change the count (never below 0), each press is reported at
once, the count outlives a restart, and the small display (luma's own dummy device, the
library's test display) shows 閉鎖 when operators close the shelter.
"""

from __future__ import annotations

import copy
import json
import threading

import pytest
from gpiozero.pins.mock import MockFactory

from jisaku.contract import kinds
from jisaku.device.config import DeviceConfig, load_device_config
from jisaku.device.remote_settings import RemoteSettings
from jisaku.kinds.shelter.occupancy import COLOURS, CROWDED_FROM, LABELS, TEXT_COLOURS, level
from jisaku.kinds.shelter.pi import COUNT_FILE, ShelterTally
from jisaku.kinds.shelter.screen import CAPACITY_BOX, COUNT_BOX, STATE_BOX
from jisaku.kinds.shelter.simulate import Waves

from .conftest import require

FOLDER = kinds.folder("shelter")


class Link:
    """What the tally needs of a DeviceLink: a folder of its own, and somewhere to put readings."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.readings: list[dict] = []

    def publish_reading(self, values, ts=None):
        self.readings.append(dict(values))


def example_config(**shelter) -> DeviceConfig:
    config = load_device_config(FOLDER.example)
    tables = copy.deepcopy(config.tables)
    tables["shelter"].update(shelter)
    return DeviceConfig(config.folder, tables)


def press(factory: MockFactory, pin: int) -> None:
    """A press as the arcade button makes it: the pin pulled to GND, then let go."""
    factory.pin(pin).drive_low()
    factory.pin(pin).drive_high()


@pytest.fixture
def tally(tmp_path):
    factory = MockFactory()
    app = ShelterTally(example_config(), Link(tmp_path), pin_factory=factory)
    app.factory = factory
    yield app
    app.close()


def state_region(image, box=STATE_BOX):
    return image.crop(box)


def test_three_in_one_out_reads_two_and_every_press_is_reported_at_once(tally):
    for _ in range(3):
        press(tally.factory, 17)
    press(tally.factory, 27)
    assert tally.count == 2
    assert [r["count"] for r in tally.link.readings] == [1, 2, 3, 2]
    assert tally.link.readings[-1] == {"count": 2, "capacity": 40, "open": 1}


def test_minus_at_zero_stays_zero(tally):
    press(tally.factory, 27)
    press(tally.factory, 27)
    assert tally.count == 0
    assert [r["count"] for r in tally.link.readings] == [0, 0], "heard, and reported, but not below 0"
    press(tally.factory, 17)
    assert tally.count == 1


def test_the_count_survives_a_restart(tmp_path):
    factory = MockFactory()
    first = ShelterTally(example_config(), Link(tmp_path), pin_factory=factory)
    for _ in range(5):
        press(factory, 17)
    first.close()
    assert json.loads((tmp_path / COUNT_FILE).read_text())["count"] == 5
    factory = MockFactory()
    again = ShelterTally(example_config(), Link(tmp_path), pin_factory=factory)
    try:
        assert again.count == 5
        press(factory, 27)
        assert again.count == 4 and again.link.readings[-1]["count"] == 4
    finally:
        again.close()


def test_an_unreadable_count_file_starts_from_zero(tmp_path, caplog):
    (tmp_path / COUNT_FILE).write_text("{half a fi")
    app = ShelterTally(example_config(), Link(tmp_path), pin_factory=MockFactory())
    try:
        assert app.count == 0
        assert "could not read the saved count" in caplog.text
    finally:
        app.close()


def test_the_display_shows_the_count_the_capacity_and_closed_when_operators_close_it(tally):
    screen = tally.screen
    require(screen.language == "ja", "A Japanese font", "sudo apt-get install fonts-ipafont-gothic")
    for _ in range(12):
        press(tally.factory, 17)
    shown = screen.device.image  # luma's dummy device keeps what was last sent to the display
    assert shown.size == (128, 64)
    assert state_region(shown) == state_region(screen.text_picture("空きあり", STATE_BOX, right=True))
    assert shown.crop(COUNT_BOX) == screen.text_picture("12", COUNT_BOX, big=True).crop(COUNT_BOX)
    assert shown.crop(CAPACITY_BOX) == screen.text_picture("定員 40", CAPACITY_BOX).crop(CAPACITY_BOX)

    # Operators close the shelter from the office: the setting comes as the device's config.
    remote = RemoteSettings(tally, FOLDER.limits(), tally.link.state_dir)
    assert remote.apply({"open": 0}) == (True, None)
    shown = screen.device.image
    closed = state_region(screen.text_picture("閉鎖", STATE_BOX, right=True))
    assert state_region(shown) == closed
    assert closed.getbbox() is not None, "閉鎖 lights pixels where the state goes"
    assert shown.crop(COUNT_BOX) == screen.text_picture("12", COUNT_BOX, big=True).crop(COUNT_BOX), \
        "the count stays on the display"
    assert tally.link.readings[-1] == {"count": 12, "capacity": 40, "open": 0}

    assert remote.apply({"open": 1, "capacity": 12}) == (True, None)
    assert state_region(screen.device.image) == state_region(screen.text_picture("満員", STATE_BOX, right=True))


def test_settings_out_of_their_limits_are_refused_by_the_device(tally):
    remote = RemoteSettings(tally, FOLDER.limits(), tally.link.state_dir)
    ok, reason = remote.apply({"open": 2})
    assert not ok and "open must be a number from 0 to 1" in reason
    assert tally.open == 1


def test_set_count_corrects_the_count_and_refuses_nonsense(tally):
    commands = tally.commands()
    assert commands["set_count"]({"count": 42}) == (True, "count is now 42")
    assert tally.count == 42 and tally.link.readings[-1]["count"] == 42
    ok, reason = commands["set_count"]({"count": -3})
    assert not ok and "0 or more" in reason and tally.count == 42


def test_it_reports_every_report_every_s_as_well(tmp_path):
    app = ShelterTally(example_config(report_every_s=0.1), Link(tmp_path), pin_factory=MockFactory())
    stop = threading.Event()
    runner = threading.Thread(target=app.run, args=(stop,))
    runner.start()
    try:
        threading.Event().wait(0.45)
    finally:
        stop.set()
        runner.join(timeout=5)
        app.close()
    assert len(app.link.readings) >= 4  # one at the start, then one every 0.1 s


def test_the_simulation_presses_the_buttons_as_people_come_and_go(tmp_path):
    config = example_config()
    factory = MockFactory()
    waves = Waves(config, factory)  # first: it takes the pins the app will use
    app = ShelterTally(config, Link(tmp_path), pin_factory=factory)
    waves.attach(app)
    try:
        seen = []
        for tick in range(0, 300 * 5):  # five minutes at five ticks a second
            waves.tick(tick / 5)
            seen.append(app.count)
        assert max(seen) == 41 and seen[-1] <= 1, "full at the top of the wave, empty at the end"
        assert level(max(seen), app.capacity, app.open) == "full"
    finally:
        app.close()


def test_occupancy_levels_labels_and_colours():
    assert level(0, 100, True) == "vacant"
    assert level(79, 100, True) == "vacant"
    assert level(80, 100, True) == "crowded" and CROWDED_FROM == 0.8
    assert level(100, 100, True) == "full" and level(130, 100, 1) == "full"
    assert level(100, 100, False) == "closed" and level(0, 0, 0) == "closed"
    assert level(500, 0, True) == "vacant" and level(5, None, True) == "vacant", "capacity unknown: never full"
    assert {word["ja"] for word in LABELS.values()} == {"空きあり", "混雑", "満員", "閉鎖"}
    assert len(set(COLOURS.values())) == 4 and COLOURS["closed"] == "#616161"
    assert set(TEXT_COLOURS) == set(COLOURS)
