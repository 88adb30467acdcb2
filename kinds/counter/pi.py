"""Resident counter: a "take a ticket" button with a receipt printer, and "next" / "again" at each window.

A resident presses the big button at the entrance; the 58 mm printer gives a ticket
with the number, the time and the expected wait, in Japanese. At each window, staff
press "next" (the window's resident is done, the lowest waiting number is called, the
buzzer chimes) or "again" (call the same number once more). Numbering, calling and the
estimate all happen here on the Pi (queue.py): with no network and no server it goes
on working, and what it publishes waits in the outbox until the link is back.

Wiring (Raspberry Pi, BCM numbers; each button joins its pin to GND when pressed, the
Pi's own pull-up holds the pin high otherwise)::

    "take a ticket" button  -> GPIO17 (pin 11)    other leg -> GND (pin 9)
    window 1 "next"         -> GPIO5  (pin 29)    window 1 "again" -> GPIO6  (pin 31)
    window 1 buzzer +       -> GPIO13 (pin 33)    buzzer -         -> GND (pin 34)
    window 2 "next"         -> GPIO19 (pin 35)    window 2 "again" -> GPIO26 (pin 37)
    window 2 buzzer +       -> GPIO21 (pin 40)    buzzer -         -> GND (pin 39)
    58 mm ESC/POS receipt printer -> a USB port   (all buttons' other legs -> any GND)

Example::

    counter = Counter(load_device_config("kinds/counter"), link)
    counter.take_ticket()        # as the entrance button does: number 1, printed
    counter.call_next(2)         # window 2 calls number 1; its buzzer chimes
    counter.call_again(2)        # number 1 once more
    counter.run(stop)            # the buttons work by themselves; a reading every report_every_s
"""

from __future__ import annotations

import datetime
import logging
import math
import queue as fifo
import threading
import time
from pathlib import Path
from typing import Any

from gpiozero import Button, Buzzer

from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink
from jisaku.kinds.counter.queue import Ticket, TicketQueue

log = logging.getLogger(__name__)

STATE_FILE = "counter.json"      # in the device's state folder: the queue, kept across reboots
TICKET_GAP_S = 1.0   # presses of the ticket button closer than this are one press (a child's game, a shaky hand)
WINDOW_GAP_S = 2.0   # a double press of "next" would skip a resident: the second one does nothing
BOUNCE_S = 0.05      # a button's contacts chatter for a few milliseconds
CALL_BEEPS = 2       # "pin-pon" when a number is called ...
AGAIN_BEEPS = 3      # ... and three when it is called again
# Debian's fonts-ipafont-gothic (sudo apt install fonts-ipafont-gothic): IPA Gothic, free to use and share.
JAPANESE_FONTS = ("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
                  "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf")
WEEKDAYS = "月火水木金土日"
# python-escpos's profile of the generic 58 mm printer (384 dots across) that most cheap ones copy.
# An 80 mm printer: profile = "TM-T20II" (or your model's) and width_px = 576 in [counter.printer].
DEFAULT_PROFILE = "POS-5890"


class Counter:
    """The counter's buttons, buzzers and printer around a :class:`TicketQueue`.

    ``clock`` is ``time.time``; the simulation puts its faster clock there.
    """

    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        settings = config.section("counter")
        windows = settings.get("window", [])
        if not windows:
            raise ValueError(f"{config.folder}: [counter] needs at least one [[counter.window]]"
                             " with next_pin and again_pin")
        self.link = link
        self.clock = time.time
        self.lock = threading.RLock()  # the buttons, the report loop and commands from afar all use the queue
        self.report_every_s = float(settings.get("report_every_s", 60))
        self.path = Path(link.state_dir) / STATE_FILE
        self.queue = TicketQueue.load(self.path, windows=len(windows),
                                      minutes_per_person=float(settings.get("minutes_per_person", 5)))
        self.last_press: dict[tuple[str, int], float] = {}

        self.ticket_button = Button(settings.get("ticket_pin", 17), bounce_time=BOUNCE_S, pin_factory=pin_factory)
        self.ticket_button.when_pressed = self.take_ticket
        self.buttons = [self.ticket_button]
        self.buzzers: dict[int, Buzzer] = {}  # by pin: two windows may share one buzzer in the hall
        self.buzzer_of: list[Buzzer | None] = []
        for number, window in enumerate(windows, start=1):
            next_button = Button(window["next_pin"], bounce_time=BOUNCE_S, pin_factory=pin_factory)
            again_button = Button(window["again_pin"], bounce_time=BOUNCE_S, pin_factory=pin_factory)
            next_button.when_pressed = lambda number=number: self.call_next(number)
            again_button.when_pressed = lambda number=number: self.call_again(number)
            self.buttons += [next_button, again_button]
            pin = window.get("buzzer_pin", settings.get("buzzer_pin"))
            if pin is not None and pin not in self.buzzers:
                self.buzzers[pin] = Buzzer(pin, pin_factory=pin_factory)
            self.buzzer_of.append(self.buzzers.get(pin))

        self.printer: TicketPrinter | None = None
        if "printer" in settings:
            if not printer_library_installed():
                log.error("[counter.printer] is set, but python-escpos is not installed: pip install 'jisaku[printer]'."
                          " Tickets are numbered and called, but not printed")
            else:
                self.printer = TicketPrinter(settings["printer"], str(settings.get("town", "")))
        # Printing takes a second or two: a thread of its own, so no button waits for it.
        self.to_print: fifo.Queue[Ticket | None] = fifo.Queue()
        self.print_thread = threading.Thread(target=self._print_loop, name="counter-printer", daemon=True)
        self.print_thread.start()

    # ------------------------------------------------------------ the buttons

    def take_ticket(self) -> Ticket | None:
        """The entrance button: a new number, published, and printed. None for a repeated press."""
        with self.lock:
            now = self.clock()
            if self._repeated(("take", 0), now, TICKET_GAP_S):
                return None
            ticket = self.queue.take(now)
            self.save()
            # waiting: as in the reading, everyone waiting now, this ticket too (the staff tablet says the same)
            self.link.publish_event("ticket", {"number": ticket.number, "estimate_min": ticket.estimate_min,
                                               "waiting": ticket.waiting_before + 1})
            self.link.publish_reading(self.queue.state(now))
            if self.printer is not None:
                self.to_print.put(ticket)  # in the lock: tickets print in the order of their numbers
        log.info("ticket %d taken: %d waiting ahead, about %.0f min", ticket.number, ticket.waiting_before,
                 ticket.estimate_min)
        return ticket

    def call_next(self, window: int) -> int | None:
        """A window's "next": the number it calls now, or None (nobody waits, or a repeated press)."""
        with self.lock:
            now = self.clock()
            if self._repeated(("next", window), now, WINDOW_GAP_S):
                return None
            number = self.queue.call_next(window, now)
            self.save()
            if number is not None:
                call = self.queue.last_call
                self.link.publish_event("call", {"number": number, "window": window,
                                                 "waited_min": call["waited_min"],
                                                 "estimate_min": call["estimate_min"]})
            self.link.publish_reading(self.queue.state(now))  # the window's resident is done either way
        if number is not None:
            log.info("window %d calls number %d", window, number)
            self.chime(window, CALL_BEEPS)
        return number

    def call_again(self, window: int) -> int | None:
        """A window's "again": the number it serves, called once more (None if it serves nobody)."""
        with self.lock:
            now = self.clock()
            if self._repeated(("again", window), now, WINDOW_GAP_S):
                return None
            number = self.queue.call_again(window, now)
            if number is not None:
                self.link.publish_event("call_again", {"number": number, "window": window})
                self.link.publish_reading(self.queue.state(now))
        if number is not None:
            self.chime(window, AGAIN_BEEPS)
        return number

    def chime(self, window: int, beeps: int) -> None:
        buzzer = self.buzzer_of[window - 1]
        if buzzer is not None:
            buzzer.beep(on_time=0.25, off_time=0.15, n=beeps)  # in gpiozero's own thread: returns at once

    def _repeated(self, button: tuple[str, int], now: float, gap_s: float) -> bool:
        last = self.last_press.get(button)
        if last is not None and 0 <= now - last < gap_s:
            return True
        self.last_press[button] = now
        return False

    # ------------------------------------------------------------ keeping and telling

    def save(self) -> None:
        """The queue on the SD card after every change: a reboot loses no ticket."""
        try:
            self.queue.save(self.path)
        except OSError as err:  # a full or read-only card must not stop the counter
            log.error("could not save the queue to %s (%s): numbering goes on, but a restart now would"
                      " start again from 1; check the SD card", self.path, err)

    def report(self) -> None:
        with self.lock:
            day = self.queue.day
            reading = self.queue.state(self.clock())
            if self.queue.day != day:
                self.save()  # a new day began: number 1 again, even after a reboot tonight
            self.link.publish_reading(reading)

    def run(self, stop: threading.Event) -> None:
        self.report()
        while not stop.wait(self.report_every_s):
            self.report()

    # ------------------------------------------------------------ from afar

    def apply_settings(self, settings: dict) -> None:
        with self.lock:
            if "minutes_per_person" in settings:
                self.queue.minutes_per_person = float(settings["minutes_per_person"])
            if "report_every_s" in settings:
                self.report_every_s = float(settings["report_every_s"])

    def commands(self) -> dict:
        return {"report_now": self.report_now, "test_buzzer": self.test_buzzer, "test_printer": self.test_printer}

    def report_now(self, args: dict) -> tuple[bool, str]:
        self.report()
        return True, "reported"

    def test_buzzer(self, args: dict) -> tuple[bool, str]:
        """Chime every window's buzzer once, so staff can hear they work."""
        for window in range(1, len(self.buzzer_of) + 1):
            self.chime(window, CALL_BEEPS)
        return True, f"{len(self.buzzers)} buzzer(s) chimed"

    def test_printer(self, args: dict) -> tuple[bool, str]:
        """Print a test ticket (number 0, marked as a test) and say whether it worked."""
        if self.printer is None:
            return False, "no [counter.printer] in device.toml"
        with self.lock:
            estimate = self.queue.estimate_min(self.clock())
            sample = Ticket(0, estimate, len(self.queue.waiting), self.clock())
        try:
            self.printer.print_ticket(sample, test=True)
        except Exception as err:
            return False, f"the printer failed: {err}"
        return True, "printed a test ticket"

    # ------------------------------------------------------------ the printer's thread

    def _print_loop(self) -> None:
        while (ticket := self.to_print.get()) is not None:
            try:
                self.printer.print_ticket(ticket)
            except Exception as err:  # paper out, unplugged, a bug: the numbers must go on regardless
                log.error("ticket %d was not printed (%s). Numbering goes on: tell the resident their number"
                          " by hand, then check the paper roll and the printer's USB cable and power",
                          ticket.number, err)
                self.link.publish_event("printer_failed", {"number": ticket.number, "reason": str(err)[:200]})
                self.printer.forget_device()  # reopened for the next ticket: it may have been plugged back
            finally:
                self.to_print.task_done()
        self.to_print.task_done()

    def wait_for_printer(self, timeout_s: float = 10) -> None:
        """Until every ticket taken so far is printed (or failed): for tests and a tidy shutdown."""
        deadline = time.monotonic() + timeout_s
        while self.to_print.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.to_print.put(None)
        self.print_thread.join(timeout=5)
        if self.printer is not None:
            self.printer.forget_device()
        for device in [*self.buttons, *self.buzzers.values()]:
            device.close()


class TicketPrinter:
    """A 58 mm ESC/POS receipt printer, through python-escpos (``pip install 'jisaku[printer]'``).

    Each ticket is drawn as a picture with a Japanese font and sent with ``image()``, so
    a cheap printer without Kanji in its memory prints it too. Without a Japanese font
    it prints digits and Latin letters only, and says so in the log.

    ``[counter.printer]`` in device.toml: ``usb = "0x0416:0x5011"`` (vendor:product, as
    ``lsusb`` shows them) or ``device = "/dev/usb/lp0"``; optional ``width_px`` (384 for
    58 mm paper, 576 for 80 mm), ``font``, ``profile`` (python-escpos's name for the model,
    POS-5890 by default), ``cut`` (true for a printer with a cutter).
    """

    def __init__(self, settings: dict[str, Any], town: str):
        self.settings = settings
        self.town = town
        self.width_px = int(settings.get("width_px", 384))
        self.profile = str(settings.get("profile", DEFAULT_PROFILE))
        self.device = None            # python-escpos's printer, opened at the first ticket
        self.simulated = False
        self.last_image = None        # the last ticket drawn (a Pillow image): what was printed
        self.lock = threading.Lock()  # one ticket at a time (the printing thread, a test ticket from afar)
        self.font_path = japanese_font(settings.get("font"))
        if self.font_path is None:
            log.warning("no Japanese font at %s: tickets will show digits only. Install one with"
                        " `sudo apt install fonts-ipafont-gothic`,"
                        " or give [counter.printer] font = \"/path/to/font.ttf\"",
                        settings.get("font") or " or ".join(JAPANESE_FONTS))

    def simulate(self) -> None:
        """Print into python-escpos's own stand-in printer (Dummy): nothing leaves the computer."""
        from escpos.printer import Dummy

        self.device, self.simulated = Dummy(profile=self.profile), True

    @property
    def output(self) -> bytes:
        """What a simulated printer received (ESC/POS bytes), b"" for a real one."""
        return self.device.output if self.simulated else b""

    def open(self):
        """Open the printer named in ``[counter.printer]``."""
        from escpos.printer import File, Usb

        if "usb" in self.settings:
            vendor, _, product = str(self.settings["usb"]).partition(":")
            return Usb(int(vendor, 16), int(product, 16), timeout=5000, profile=self.profile)
        if "device" in self.settings:
            return File(self.settings["device"], profile=self.profile)
        raise ValueError('[counter.printer] needs usb = "0x0416:0x5011" (from lsusb) or device = "/dev/usb/lp0"')

    def forget_device(self) -> None:
        """Close the printer (a real one is opened again for the next ticket)."""
        with self.lock:
            self._forget()

    def _forget(self) -> None:
        if self.device is not None and not self.simulated:
            try:
                self.device.close()
            except Exception:  # it may be gone already: that is why it is being forgotten
                pass
            self.device = None

    def print_ticket(self, ticket: Ticket, test: bool = False) -> None:
        """Print one ticket; raises if the printer is not there or fails."""
        with self.lock:
            self._print(ticket, test)

    def _print(self, ticket: Ticket, test: bool) -> None:
        if self.device is None:
            self.device = self.open()
        if self.font_path is not None:
            self.last_image = render_ticket(ticket, self.town, self.font_path, self.width_px, test)
            self.device.image(self.last_image)
        else:
            self.device.set(align="center", double_width=True, double_height=True)
            self.device.text(f"No. {ticket.number}\n")
            self.device.set(align="center", normal_textsize=True)
            self.device.text(datetime.datetime.fromtimestamp(ticket.taken).strftime("%Y-%m-%d %H:%M") + "\n")
            self.device.text(f"{ticket.waiting_before} waiting, about {whole_minutes(ticket.estimate_min)} min\n")
        self.device.ln(3)  # out past the tear bar
        if self.settings.get("cut", False):
            self.device.cut()


def printer_library_installed() -> bool:
    """Whether python-escpos is there (``pip install 'jisaku[printer]'``)."""
    try:
        import escpos  # noqa: F401 (only to know it can be)
    except ImportError:
        return False
    return True


def japanese_font(configured: str | None) -> str | None:
    """The font file to draw tickets with: the one configured, else IPA Gothic if installed."""
    for path in ([configured] if configured else list(JAPANESE_FONTS)):
        if Path(path).is_file():
            return path
    return None


def whole_minutes(estimate_min: float) -> int:
    """What the ticket says: whole minutes, at least 1."""
    return max(1, math.floor(estimate_min + 0.5))


def render_ticket(ticket: Ticket, town: str, font_path: str, width_px: int = 384, test: bool = False):
    """The ticket as a black-and-white picture, ``width_px`` wide (384 dots: 58 mm paper)."""
    from PIL import Image, ImageDraw, ImageFont

    taken = datetime.datetime.fromtimestamp(ticket.taken)
    if ticket.waiting_before == 0 and ticket.estimate_min < 1:
        wait = "まもなくお呼びします"
    else:
        wait = f"お待ちの方 {ticket.waiting_before} 人・およそ {whole_minutes(ticket.estimate_min)} 分"
    lines = [  # (text, the largest size it may have), top to bottom
        (town, 24),
        ("試し印刷（番号ではありません）" if test else "受付番号", 26),
        (str(ticket.number), 160),
        (f"{taken.month}月{taken.day}日（{WEEKDAYS[taken.weekday()]}）{taken.hour}:{taken.minute:02d} 発券", 24),
        (wait, 28),
        ("番号をお呼びするまでお待ちください", 20),
    ]
    margin, gap = 8, 14
    fitted = []
    for text, largest in lines:
        if text:
            font = ImageFont.truetype(font_path, fitting_size(text, font_path, width_px - 2 * margin, largest))
            fitted.append((text, font, font.getbbox(text)))  # (left, top, right, bottom) of the ink
    height = sum(box[3] - box[1] for _, _, box in fitted) + gap * (len(fitted) + 1)
    image = Image.new("1", (width_px, height), 1)  # 1 bit a dot, 1 = white paper
    draw = ImageDraw.Draw(image)
    y = gap
    for text, font, (left, top, right, bottom) in fitted:
        draw.text(((width_px - (right - left)) / 2 - left, y - top), text, font=font, fill=0)  # centred
        y += bottom - top + gap
    return image


def fitting_size(text: str, font_path: str, width_px: int, largest: int) -> int:
    """The largest font size up to ``largest`` at which ``text`` fits in ``width_px``."""
    from PIL import ImageFont

    size = largest
    while size > 12:
        left, _, right, _ = ImageFont.truetype(font_path, size).getbbox(text)
        if right - left <= width_px:
            break
        size -= 2
    return size
