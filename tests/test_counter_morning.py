"""A morning at the resident counter, end to end: the real Pi app on gpiozero's mock pins, its
link to a real broker, the gateway, the dashboard, and the hall display and residents' page in
Chromium. Twelve tickets, eight calls at two windows, one "again", and the link lost in the
middle while the counter goes on numbering and calling; at the end every ticket is accounted
for and the pages show what the counter itself knows.

The counter is started as ``jisaku device run kinds/counter`` starts it on a Pi
(:func:`jisaku.device.runner.run_device`), step by step so that the test can reach its pins
and hold its clock: the clock moves a minute or two between presses, as a morning does, and
a press is never taken for a nervous double press (``TICKET_GAP_S``, ``WINDOW_GAP_S``).
"""

from __future__ import annotations

import datetime
import threading

import pytest

from jisaku.device import __version__
from jisaku.device.config import load_device_config
from jisaku.device.link import DeviceLink
from jisaku.device.remote_settings import RemoteSettings
from jisaku.device.runner import build, picture_server, run_command, setting_limits
from jisaku.kinds.counter.queue import round1

from .layout import cut_off_text
from .test_browser import ARTIFACTS, PHONE, browser  # noqa: F401  (the browser fixture)
from .town import KINDS, wait_until

TV = {"width": 1920, "height": 1080}
TICKET_PIN, NEXT_PIN, AGAIN_PIN = 17, {1: 5, 2: 19}, {1: 6, 2: 26}   # kinds/counter/device.toml
RASTER_IMAGE = b"\x1dv0"  # ESC/POS "GS v 0": a ticket drawn as a picture
DEVICE = "counter-1"


class Morning:
    """The counter's clock, moved by the test: today, from 08:30."""

    def __init__(self):
        self.now = datetime.datetime.combine(datetime.date.today(), datetime.time(8, 30)).timestamp()

    def __call__(self) -> float:
        return self.now

    def minutes(self, minutes: float) -> None:
        self.now += minutes * 60


class CounterOnAPi:
    """The counter app, its link and its settings, wired as ``run_device`` wires them.

    ``[device] pin_factory = "mock"`` gives it gpiozero's MockFactory, whose pins the test
    drives as the buttons would (each joins its pin to ground while pressed).
    """

    def __init__(self, config, town, clock: Morning):
        state_dir = town.directory / "devices" / config.id
        self.link = DeviceLink(config.id, town.secrets[config.id], town.broker_url, state_dir,
                               outbox_bytes=int(config.device.get("outbox_bytes", 5_000_000)),
                               info={"fw": __version__, "app": config.app or config.kind},
                               server_url=picture_server(config, None))
        self.app, _ = build(config, self.link, simulate=False)
        self.app.clock = self.clock = clock
        self.factory = self.app.ticket_button.pin_factory
        remote = RemoteSettings(self.app, setting_limits(config, self.app), state_dir)
        remote.restore()
        self.link.on_config = remote.apply
        self.link.on_command = lambda do, args: run_command(self.app, do, args)
        self.link.start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.app.run, args=(self.stop,), name=config.id, daemon=True)
        self.thread.start()
        self.taken: dict[int, float] = {}     # number -> when the resident took it (the counter's clock)
        self.calls: list[tuple[int, int, float]] = []   # (number, window, waited_min) as the test saw them

    def press(self, pin: int) -> None:
        self.factory.pin(pin).drive_low()
        self.factory.pin(pin).drive_high()

    def take_ticket(self, after_min: float) -> int:
        self.clock.minutes(after_min)
        issued = self.app.queue.issued
        self.press(TICKET_PIN)
        assert self.app.queue.issued == issued + 1, "the ticket button gave a new number"
        self.taken[self.app.queue.issued] = self.clock()
        return self.app.queue.issued

    def call_next(self, window: int, after_min: float) -> int:
        self.clock.minutes(after_min)
        self.press(NEXT_PIN[window])
        serving = self.app.queue.serving[window - 1]
        assert serving is not None and serving["since"] == self.clock(), f"window {window} called someone"
        number = serving["number"]
        self.calls.append((number, window, round1((self.clock() - self.taken[number]) / 60)))
        return number

    def call_again(self, window: int, after_min: float) -> None:
        self.clock.minutes(after_min)
        self.press(AGAIN_PIN[window])

    def state(self) -> dict:
        """The reading the counter would send now: what it knows itself."""
        with self.app.lock:
            return self.app.queue.state(self.clock())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.app.close()
        self.link.stop()
        self.factory.reset()


def latest_values(town) -> dict:
    row = next((d for d in town.store.latest(public_only=False) if d["id"] == DEVICE), None)
    return row["values"] if row else {}


def events(town, name: str) -> list[dict]:
    return sorted((e["v"] for e in town.store.events(DEVICE, limit=1000) if e["event"] == name),
                  key=lambda v: v["number"])


def shows(page, state: dict) -> None:
    """Wait until ``page`` shows the counter's ``state``: each window's number, who waits, the wait."""
    for window in range(1, state["windows"] + 1):
        number = state[f"window_{window}"]
        page.wait_for_selector(f'[data-window="{window}"]:text-is("{number or "—"}")', timeout=20_000)
    page.wait_for_selector(f'#counter-waiting:text-is("{state["waiting"]} 人")', timeout=20_000)
    minutes = max(1, int(state["estimate_min"] + 0.5))
    estimate = "すぐにご案内できます" if state["waiting"] == 0 else f"約 {minutes} 分"
    page.wait_for_selector(f'#counter-estimate:text-is("{estimate}")', timeout=20_000)


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_morning_at_the_counter_through_a_lost_link(browser, make_town, tmp_path):  # noqa: F811
    config = load_device_config(KINDS / "counter", {
        "device": {"pin_factory": "mock"},
        # The printer on the kernel's printer device (README: device = "/dev/usb/lp0"): here a file.
        "counter": {"printer": {"device": str(tmp_path / "lp0")}}})
    del config.tables["counter"]["printer"]["usb"]
    town = make_town([config])
    base = town.start_dashboard()
    clock = Morning()
    counter = CounterOnAPi(config, town, clock)
    try:
        # 08:30, the doors open: six tickets, three calls; number 3 does not come at first ("again").
        for after in (0, 1, 1):
            counter.take_ticket(after)
        assert counter.call_next(1, 3) == 1
        assert counter.call_next(2, 1) == 2
        counter.take_ticket(2)
        counter.take_ticket(2)
        assert counter.call_next(1, 2) == 3
        counter.call_again(1, 1)
        counter.take_ticket(2)
        before_outage = counter.state()
        assert before_outage | {"estimate_min": 0} == {
            "waiting": 3, "estimate_min": 0, "issued": 6, "windows": 2, "window_1": 3, "window_2": 2,
            "last_wait_min": 10.0}
        wait_until(lambda: latest_values(town) == before_outage and len(counter.link.outbox) == 0, 20,
                   "the server has everything the counter sent so far")

        # The TV in the hall and a resident's phone.
        hall = browser.new_context(viewport=TV, locale="ja-JP").new_page()
        hall.goto(f"{base}/counter/{DEVICE}/display")
        phone = browser.new_context(viewport=PHONE, locale="ja-JP").new_page()
        phone.goto(f"{base}/counter/{DEVICE}")
        for page in (hall, phone):
            shows(page, before_outage)

        # The link goes (the broker stops): the counter goes on numbering and calling by itself.
        town.broker.stop()
        wait_until(lambda: not counter.link.connected.is_set(), 10, "the counter notices the broker is gone")
        queued_before = len(counter.link.outbox)
        assert counter.take_ticket(2) == 7
        assert counter.call_next(2, 1) == 4
        assert counter.take_ticket(1) == 8
        assert counter.take_ticket(2) == 9
        assert counter.call_next(1, 1) == 5
        assert counter.take_ticket(2) == 10
        assert counter.call_next(2, 3) == 6
        offline = counter.state()
        assert [t["number"] for t in counter.app.queue.waiting] == [7, 8, 9, 10]
        assert (offline["issued"], offline["waiting"], offline["window_1"], offline["window_2"]) == (10, 4, 5, 6)
        assert len(counter.link.outbox) >= queued_before + 14, "each press's event and reading wait in the outbox"
        assert latest_values(town)["issued"] == 6, "nothing reached the server meanwhile"
        assert hall.inner_text('[data-window="2"]') == "2", "the hall shows what the server last heard"

        # Back: the broker on the same port; the counter reconnects by itself and sends the backlog.
        town.broker.start()
        assert counter.take_ticket(2) == 11
        assert counter.call_next(1, 1) == 7
        assert counter.take_ticket(2) == 12
        assert counter.call_next(2, 2) == 8
        final = counter.state()
        assert (final["issued"], final["waiting"], final["window_1"], final["window_2"]) == (12, 4, 7, 8)
        wait_until(lambda: len(counter.link.outbox) == 0 and latest_values(town) == final, 45,
                   "the counter's backlog reaches the server after the outage")

        # Every ticket accounted for: issued once, called once at the window that called it.
        tickets = events(town, "ticket")
        assert [t["number"] for t in tickets] == list(range(1, 13))
        assert [t["waiting"] for t in tickets] == [1, 2, 3, 2, 3, 3, 4, 4, 5, 5, 5, 5], \
            "everyone waiting, this ticket too, as in the reading"
        calls = events(town, "call")
        assert [(c["number"], c["window"], c["waited_min"]) for c in calls] == counter.calls
        assert [(c["number"], c["window"]) for c in calls] == [(1, 1), (2, 2), (3, 1), (4, 2), (5, 1), (6, 2),
                                                                (7, 1), (8, 2)]
        assert [(c["number"], c["window"]) for c in events(town, "call_again")] == [(3, 1)]
        assert events(town, "printer_failed") == []
        assert town.store.quarantine_counts() == {}, "nothing the counter sent was refused"
        counter.app.wait_for_printer()
        printed = (tmp_path / "lp0").read_bytes()
        assert printed.count(RASTER_IMAGE if counter.app.printer.font_path else b"No. ") == 12, \
            "every ticket went to the printer"

        # The hall display and the residents' page catch up with the counter.
        for page in (hall, phone):
            shows(page, final)
            assert page.is_hidden("#counter-stale"), "neither says its numbers are old"
        ARTIFACTS.mkdir(exist_ok=True)
        for page, name in ((hall, "counter-morning-display-1920x1080"), (phone, "counter-morning-residents-360px")):
            page.wait_for_function("document.getAnimations().length === 0", timeout=10_000)  # the calls' flash
            assert cut_off_text(page) == [], name
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        assert hall.evaluate("document.documentElement.scrollHeight") <= TV["height"], "the display fits the screen"
    finally:
        counter.close()
