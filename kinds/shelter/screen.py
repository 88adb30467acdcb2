"""The tally's small display: the count, the capacity and the shelter's state.

A 128 × 64 monochrome OLED (SSD1306, I²C) driven by luma.oled, a well-kept library for
these displays (``pip install 'jisaku[display]'``). In simulation and in the tests the
same drawing goes to luma's own ``dummy`` device, which keeps the last picture shown
(``device.image``), so one can check what staff would see. Imported by pi.py only when
``[shelter.display]`` is in device.toml.

What it shows::

    +--------------------------------+
    | 37                             |   the count, large
    |                                |
    | 定員 120             空きあり   |   the capacity, and 空きあり / 混雑 / 満員 / 閉鎖
    +--------------------------------+

Japanese needs a Japanese font: ``sudo apt install fonts-ipafont-gothic`` on the Pi (or
name any .ttf/.otf as ``font`` in ``[shelter.display]``). Without one the words are
shown in English (Closed, Full, ...) and a warning says what to install.

Example::

    screen = TallyScreen(open_display({"driver": "ssd1306"}, simulated=False))
    screen.show(37, 120, 1)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from jisaku.device.config import DeviceConfigError

from .occupancy import LABELS, level

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 128, 64
# Where each thing goes, as (left, top, right, bottom) in pixels.
COUNT_BOX = (0, 0, 128, 42)
CAPACITY_BOX = (0, 46, 72, 64)
STATE_BOX = (72, 46, 128, 64)
BIG_PX, SMALL_PX = 40, 14

# Japanese fonts where Debian and Raspberry Pi OS packages put them, in order of preference.
FONT_PLACES = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",        # fonts-ipafont-gothic
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",      # whichever Japanese gothic is the default
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",   # fonts-noto-cjk
    "/usr/share/fonts/truetype/takao-gothic/TakaoPGothic.ttf",  # fonts-takao-gothic
)


def open_display(spec: dict[str, Any], simulated: bool):
    """The luma device that ``[shelter.display]`` describes; luma's ``dummy`` device when simulated.

    ``driver`` is a luma.oled class (ssd1306, sh1106, ssd1309, ...; "dummy" for none),
    ``i2c_port`` (1 on every Pi since the Pi 2) and ``i2c_address`` (0x3C; some boards 0x3D).
    """
    try:
        from luma.core.device import dummy
        from luma.core.interface.serial import i2c
        from luma.oled import device as oled_devices
    except ModuleNotFoundError:
        raise DeviceConfigError("[shelter.display] needs luma.oled: pip install 'jisaku[display]'"
                                " (or remove [shelter.display] for a tally without a display)") from None
    width, height = int(spec.get("width", WIDTH)), int(spec.get("height", HEIGHT))
    driver = spec.get("driver", "ssd1306")
    if simulated or driver == "dummy":
        return dummy(width=width, height=height, mode="1")
    if not isinstance(getattr(oled_devices, str(driver), None), type):
        raise DeviceConfigError(f"[shelter.display] driver {driver!r} is not a luma.oled display:"
                                " write e.g. driver = \"ssd1306\" or \"sh1106\"")
    serial = i2c(port=int(spec.get("i2c_port", 1)), address=int(spec.get("i2c_address", 0x3C)))
    return getattr(oled_devices, driver)(serial, width=width, height=height, rotate=int(spec.get("rotate", 0)))


def japanese_font(named: str | None = None) -> str | None:
    """The font file to draw with: the one named, else the first Japanese font installed."""
    if named:
        if not Path(named).is_file():
            raise DeviceConfigError(f"[shelter.display] font {named!r} is not a file")
        return named
    return next((place for place in FONT_PLACES if Path(place).is_file()), None)


class TallyScreen:
    def __init__(self, device, font: str | None = None):
        self.device = device
        path = japanese_font(font)
        if path:
            self.language = "ja"
            self.big, self.small = ImageFont.truetype(path, BIG_PX), ImageFont.truetype(path, SMALL_PX)
        else:
            log.warning("no Japanese font found: the display shows English words."
                        " Install one: sudo apt install fonts-ipafont-gothic")
            self.language = "en"
            self.big, self.small = ImageFont.load_default(BIG_PX), ImageFont.load_default(SMALL_PX)

    def words(self, count: int, capacity: int, is_open: int) -> tuple[str, str]:
        """The capacity line and the state word, in the screen's language."""
        state = LABELS[level(count, capacity, is_open)][self.language]
        if self.language == "ja":
            return (f"定員 {capacity}" if capacity else "定員 ―"), state
        return (f"of {capacity}" if capacity else "of ?"), state

    def picture(self, count: int, capacity: int, is_open: int) -> Image.Image:
        """What the display shows for this count, capacity and state."""
        image = Image.new(self.device.mode, self.device.size)
        draw = ImageDraw.Draw(image)
        capacity_line, state = self.words(count, capacity, is_open)
        self.write(draw, str(count), COUNT_BOX, self.big)
        self.write(draw, capacity_line, CAPACITY_BOX, self.small)
        self.write(draw, state, STATE_BOX, self.small, right=True)
        return image

    def write(self, draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int], font,
              right: bool = False) -> None:
        """``text`` in ``box``, at its left (or right) edge; what does not fit is cut off at the box."""
        left, top, end, bottom = box
        layer = Image.new("1", (end - left, bottom - top))
        x = layer.width - draw.textlength(text, font=font) if right else 0
        ImageDraw.Draw(layer).text((max(x, 0), 0), text, font=font, fill=1)
        draw.bitmap((left, top), layer, fill="white")

    def text_picture(self, text: str, box: tuple[int, int, int, int], big: bool = False,
                     right: bool = False) -> Image.Image:
        """Only ``text`` in ``box``, drawn as :meth:`picture` draws it: what tests compare with."""
        image = Image.new(self.device.mode, self.device.size)
        self.write(ImageDraw.Draw(image), text, box, self.big if big else self.small, right=right)
        return image

    def show(self, count: int, capacity: int, is_open: int) -> None:
        self.device.display(self.picture(count, capacity, is_open))

    def close(self) -> None:
        self.device.cleanup()
