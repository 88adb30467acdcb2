"""The resident counter on gpiozero's MockFactory pins and python-escpos's Dummy printer, no network.

The real pipeline (broker, gateway, the hall display) is tested elsewhere; here a small
recording link stands in for DeviceLink, and the test holds the clock.
"""

from __future__ import annotations

import datetime
import logging
import sqlite3
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from jisaku.contract import kinds
from jisaku.device.config import load_device_config
from jisaku.device.remote_settings import RemoteSettings
from jisaku.kinds.counter.pi import Counter
from jisaku.kinds.counter.simulate import TownHallDay

from .brokers import free_port
from .test_roles import run_on_a_pi
from .town import KINDS, wait_until

TICKET_PIN, NEXT_PINS, AGAIN_PINS, BUZZER_PINS = 17, (5, 19), (6, 26), (13, 21)
RASTER_IMAGE = b"\x1dv0"  # ESC/POS "GS v 0": a picture follows


class RecordingLink:
    """Stands in for DeviceLink: keeps what the app publishes, and gives it a state folder."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.readings, self.events = [], []

    def publish_reading(self, values, ts=None):
        self.readings.append(values)

    def publish_event(self, name, values=None):
        self.events.append((name, values))

    def named(self, name):
        return [values for event, values in self.events if event == name]


class Clock:
    """The counter's time, moved by the test: 2025-04-07 08:30 local time to begin with."""

    def __init__(self):
        self.now = datetime.datetime(2025, 4, 7, 8, 30).timestamp()

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.reset()


def make_counter(factory, state_dir, clock, **counter_settings):
    config = load_device_config(KINDS / "counter", {"counter": counter_settings} if counter_settings else None)
    link = RecordingLink(state_dir)
    counter = Counter(config, link, pin_factory=factory)
    counter.clock = clock
    if counter.printer is not None:
        counter.printer.simulate()
    return counter, link


def press(factory, pin):
    factory.pin(pin).drive_low()   # each button joins its pin to ground
    factory.pin(pin).drive_high()


def test_the_ticket_button_issues_1_2_3_and_prints_each_in_japanese(factory, tmp_path):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    try:
        for _ in range(3):
            press(factory, TICKET_PIN)
            clock.advance(20)
        counter.wait_for_printer()
        assert [e["number"] for e in link.named("ticket")] == [1, 2, 3]
        assert [e["waiting"] for e in link.named("ticket")] == [1, 2, 3], "as in the reading: this ticket too"
        assert link.readings[-1]["issued"] == 3 and link.readings[-1]["waiting"] == 3
        output = counter.printer.output
        assert output.count(RASTER_IMAGE) >= 3, "each ticket went to the printer as a picture"
        ticket = counter.printer.last_image
        assert ticket.size[0] == 384 and ticket.mode == "1", "one bit a dot, 58 mm paper"
        black = ticket.histogram()[0] / (ticket.size[0] * ticket.size[1])
        assert 0.03 < black < 0.5, "ink on paper: neither blank nor black"
    finally:
        counter.close()


def test_next_at_window_2_calls_the_lowest_number_chimes_and_publishes_it(factory, tmp_path):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    try:
        press(factory, TICKET_PIN)
        clock.advance(90)
        press(factory, TICKET_PIN)
        clock.advance(90)
        press(factory, NEXT_PINS[1])
        # Number 2 goes to the free window 1; a new ticket waits for window 2 (5 min a person so far).
        assert link.readings[-1] == {"waiting": 1, "estimate_min": 5.0, "issued": 2, "windows": 2,
                                     "window_1": 0, "window_2": 1, "last_wait_min": 3.0}
        assert link.named("call") == [{"number": 1, "window": 2, "waited_min": 3.0, "estimate_min": 0.0}]
        threading.Event().wait(0.3)   # the chime plays in gpiozero's own thread
        assert any(state.state for state in factory.pin(BUZZER_PINS[1]).states), "window 2's buzzer chimed"
        assert not any(state.state for state in factory.pin(BUZZER_PINS[0]).states[1:]), "window 1's did not"

        clock.advance(30)
        press(factory, AGAIN_PINS[1])
        assert link.named("call_again") == [{"number": 1, "window": 2}]
        press(factory, AGAIN_PINS[0])   # window 1 serves nobody: nothing to call again
        assert len(link.named("call_again")) == 1
    finally:
        counter.close()


def test_every_reading_has_the_contract_names_and_nothing_else(factory, tmp_path):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    try:
        counter.report()
        assert set(link.readings[-1]) == {"waiting", "estimate_min", "issued", "windows", "window_1", "window_2"}
        counter.take_ticket()
        clock.advance(60)
        counter.call_next(1)
        contract = {"waiting", "estimate_min", "issued", "windows", "window_1", "window_2", "last_wait_min"}
        assert set(link.readings[-1]) == contract
        assert set(link.readings[-1]) <= set(kinds.folder("counter").metrics), "every value has words in kind.toml"
        assert isinstance(link.readings[-1]["estimate_min"], float) and isinstance(link.readings[-1]["waiting"], int)
    finally:
        counter.close()


def test_a_double_press_is_one_press(factory, tmp_path):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    try:
        press(factory, TICKET_PIN)
        press(factory, TICKET_PIN)                 # the same instant: a shaky hand
        clock.advance(30)
        press(factory, TICKET_PIN)
        clock.advance(30)
        press(factory, NEXT_PINS[0])
        clock.advance(0.5)
        press(factory, NEXT_PINS[0])               # would have skipped resident 2
        assert [e["number"] for e in link.named("ticket")] == [1, 2]
        assert [e["number"] for e in link.named("call")] == [1]
    finally:
        counter.close()


def test_the_queue_survives_a_restart(factory, tmp_path):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    for _ in range(3):
        counter.take_ticket()
        clock.advance(10)
    counter.call_next(1)
    counter.close()
    factory.reset()

    clock.advance(120)   # the power went, the Pi came back
    again, link = make_counter(factory, tmp_path, clock)
    try:
        assert again.take_ticket().number == 4
        assert again.call_next(2) == 2
        assert link.readings[-1]["window_1"] == 1, "window 1 still serves number 1"
    finally:
        again.close()


def test_numbering_restarts_the_next_day(factory, tmp_path):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    try:
        for _ in range(3):
            counter.take_ticket()
            clock.advance(10)
        counter.call_next(1)
        clock.now = datetime.datetime(2025, 4, 8, 8, 30).timestamp()
        counter.report()
        assert link.readings[-1] == {"waiting": 0, "estimate_min": 0.0, "issued": 0, "windows": 2,
                                     "window_1": 0, "window_2": 0}
        assert counter.take_ticket().number == 1
    finally:
        counter.close()


class BrokenPrinter:
    """A printer that is out of paper, or unplugged: every command fails."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise OSError(19, "No such device (it may have been unplugged)")
        return fail


def test_a_failing_printer_never_stops_the_numbers(factory, tmp_path, caplog):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    counter.printer.simulated, counter.printer.device = False, BrokenPrinter()
    counter.printer.open = BrokenPrinter  # plugging it back in does not help either
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(3):
                press(factory, TICKET_PIN)
                clock.advance(5)
            counter.wait_for_printer()
        assert [e["number"] for e in link.named("ticket")] == [1, 2, 3]
        assert [e["number"] for e in link.named("printer_failed")] == [1, 2, 3]
        assert "ticket 1 was not printed" in caplog.text and "paper roll" in caplog.text
        assert counter.call_next(1) == 1, "and the windows still call"
        assert counter.test_printer({})[0] is False
    finally:
        counter.close()


def test_without_a_japanese_font_it_says_so_and_prints_digits(factory, tmp_path, caplog):
    clock = Clock()
    with caplog.at_level(logging.WARNING):
        counter, link = make_counter(factory, tmp_path, clock, printer={"usb": "0x0416:0x5011",
                                                                         "font": str(tmp_path / "no-font.ttf")})
    try:
        assert "no Japanese font" in caplog.text and "fonts-ipafont-gothic" in caplog.text
        counter.take_ticket()
        counter.wait_for_printer()
        assert b"No. 1" in counter.printer.output and RASTER_IMAGE not in counter.printer.output
    finally:
        counter.close()


def test_a_counter_without_a_printer_needs_no_printer_library(factory, tmp_path):
    config = load_device_config(KINDS / "counter")
    del config.tables["counter"]["printer"]
    counter = Counter(config, RecordingLink(tmp_path), pin_factory=factory)
    try:
        assert counter.printer is None and counter.take_ticket().number == 1
    finally:
        counter.close()


def test_operators_settings_apply_within_the_kinds_limits(factory, tmp_path):
    clock = Clock()
    counter, link = make_counter(factory, tmp_path, clock)
    remote = RemoteSettings(counter, kinds.folder("counter").limits(), tmp_path)
    try:
        counter.take_ticket()
        assert remote.apply({"minutes_per_person": 8, "report_every_s": 30}) == (True, None)
        assert counter.queue.estimate_min(clock()) == 0.0 and counter.report_every_s == 30
        clock.advance(10)
        counter.take_ticket()
        assert counter.queue.estimate_min(clock()) == 8.0, "two ahead, two windows: 8 min for the next"
        ok, reason = remote.apply({"minutes_per_person": 0})
        assert not ok and "minutes_per_person must be a number from 0.5 to 120" in reason
        assert set(counter.commands()) == {"report_now", "test_buzzer", "test_printer"}
        assert counter.test_printer({}) == (True, "printed a test ticket")
    finally:
        counter.close()


def test_the_simulation_presses_the_counters_buttons(factory, tmp_path):
    config = load_device_config(KINDS / "counter")
    scenario = TownHallDay(config, factory)          # first: it sets up the pins the app will use
    link = RecordingLink(tmp_path)
    counter = Counter(config, link, pin_factory=factory)
    scenario.attach(counter)
    try:
        assert counter.clock == scenario.clock and counter.printer.simulated
        scenario._started = time.monotonic() - 2 * 3600 / scenario.time_scale   # two simulated hours in
        for _ in range(300):
            scenario._started -= scenario.tick_s     # as if a tick's time had passed
            scenario.tick(0)
        counter.wait_for_printer()
        assert len(link.named("ticket")) >= 5 and len(link.named("call")) >= 3
        assert counter.printer.output.count(RASTER_IMAGE) == len(link.named("ticket"))
        opened = datetime.datetime.fromtimestamp(scenario.clock())
        assert (opened.hour, opened.minute) >= (10, 29), "the simulated clock starts at opening, 08:30"
    finally:
        counter.close()


def test_on_a_pi_without_the_printer_part_or_a_network_it_still_numbers(tmp_path):
    """``pip install jisaku`` only (no python-escpos, no Pillow), and no broker to reach."""
    env = {"JISAKU_BROKER": f"mqtt://127.0.0.1:{free_port()}", "JISAKU_DEVICE_SECRET": "a" * 32,
           "JISAKU_DATA": str(tmp_path / "data")}
    device = run_on_a_pi("device", "run", "kinds/counter", "--simulate", env=env)
    outbox = tmp_path / "data" / "devices" / "counter-1" / "outbox.db"

    def kept() -> int:
        if device.poll() is not None or not outbox.exists():
            return 0
        with sqlite3.connect(outbox) as db:
            return db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    try:
        wait_until(lambda: kept() >= 3 or device.poll() is not None, 40,
                   "the simulated residents take tickets; readings and events wait in the outbox")
    finally:
        device.terminate()
        out = device.communicate(timeout=10)[0]
    assert "python-escpos is not installed: pip install 'jisaku[printer]'" in out, out
    assert "ticket 1 taken" in out and "Traceback" not in out, out
