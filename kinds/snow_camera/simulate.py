"""The snow camera's simulation: a road and car park drawn in the snow, as a real JPEG.

Named in kind.toml (``simulation = "simulate.py:SnowScene"``); ``[simulate]`` in
device.toml sets how deep the snow gets over a simulated day and how fast that day
runs. Each picture shows the snow at that moment, flakes falling in new places, and
the simulated clock in a corner, like the time stamp a real camera burns in.

Drawing needs Pillow, which the server has (``jisaku[web]``); it is imported only when a
picture is drawn, so a Pi running other kinds never needs it.

Example::

    scene = SnowScene(config, MockFactory())
    scene.attach(camera)                        # camera.capture now draws instead
    data, content_type = scene.picture(3600)    # the scene an hour of simulated time in
"""

from __future__ import annotations

import io
import random

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario, along

WIDTH, HEIGHT = 1280, 720
HORIZON = 300           # pixels from the top: where the road meets the hills
CM_TO_PX = 3.0          # how many pixels of snow a centimetre is, near the camera


class SnowScene(Scenario):
    """The road and car park a snow camera looks at, with snow following ``curve`` ([hour, cm] points)."""

    def __init__(self, config: DeviceConfig, factory=None):
        super().__init__()
        simulate = config.section("simulate")
        self.curve = [(float(h), float(cm)) for h, cm in simulate.get("curve", [[0, 10], [24, 10]])]
        self.hours_per_minute = float(simulate.get("hours_per_minute", 2))
        self.start_hour = float(simulate.get("start_hour", 6))   # the simulated clock at start
        self.flakes = int(simulate.get("flakes", 400))
        self.elapsed_s = 0.0

    def attach(self, app) -> None:
        app.capture = self.capture       # instead of the webcam

    def tick(self, elapsed_s: float) -> None:
        self.elapsed_s = elapsed_s

    def hour(self, elapsed_s: float) -> float:
        """Hours of simulated time since start."""
        return elapsed_s / 60 * self.hours_per_minute

    def depth_cm(self, elapsed_s: float) -> float:
        return along(self.curve, self.hour(elapsed_s))

    def capture(self) -> tuple[bytes, str]:
        return self.picture(self.elapsed_s)

    def picture(self, elapsed_s: float) -> tuple[bytes, str]:
        """The JPEG the camera would take ``elapsed_s`` seconds after start."""
        from PIL import Image, ImageDraw  # only where pictures are drawn (see the module's note)

        clock_h = (self.start_hour + self.hour(elapsed_s)) % 24
        depth = self.depth_cm(elapsed_s)
        image = Image.new("RGB", (WIDTH, HEIGHT))
        draw = ImageDraw.Draw(image)
        light = daylight(clock_h)
        draw_sky_and_hills(draw, light)
        draw_road_and_car_park(draw, light, depth)
        draw_snow_stake(draw, light, depth)
        draw_flakes(draw, self.flakes if depth > 0 else 0, random.Random())
        # A little sensor noise, as every real camera has: it also makes the JPEG as large as a real one.
        noise = Image.effect_noise((WIDTH, HEIGHT), 24).convert("RGB")
        image = Image.blend(image, noise, 0.12)
        draw = ImageDraw.Draw(image)
        h, m, s = int(clock_h), int(clock_h * 60) % 60, int(clock_h * 3600) % 60
        draw.rectangle((WIDTH - 220, HEIGHT - 56, WIDTH - 16, HEIGHT - 16), fill=(0, 0, 0))
        draw.text((WIDTH - 206, HEIGHT - 50), f"{h:02d}:{m:02d}:{s:02d}", fill=(255, 255, 255), font_size=30)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        return out.getvalue(), "image/jpeg"


def daylight(clock_h: float) -> float:
    """1.0 at noon, about 0.25 at night (the car park's lights), in between at dawn and dusk."""
    if 7 <= clock_h <= 16:
        return 1.0
    if clock_h < 5 or clock_h > 18.5:
        return 0.25
    return 0.25 + 0.75 * ((clock_h - 5) / 2 if clock_h < 7 else (18.5 - clock_h) / 2.5)


def shade(colour: tuple[int, int, int], light: float) -> tuple[int, int, int]:
    return tuple(int(c * light) for c in colour)


def draw_sky_and_hills(draw, light: float) -> None:
    for y in range(HORIZON):  # a grey winter sky, lighter towards the hills
        grey = 150 + int(60 * y / HORIZON)
        draw.line((0, y, WIDTH, y), fill=shade((grey, grey + 5, grey + 15), light))
    draw.polygon([(0, 230), (180, 150), (360, 210), (560, 120), (800, 200), (1010, 140), (1280, 220),
                  (1280, HORIZON), (0, HORIZON)], fill=shade((120, 135, 150), light))
    draw.polygon([(420, 175), (560, 120), (700, 170), (600, 160)], fill=shade((235, 240, 245), light))


def draw_road_and_car_park(draw, light: float, depth_cm: float) -> None:
    snow = min(1.0, depth_cm / 15)  # the asphalt is white over after about 15 cm
    ground = tuple(int(a + (b - a) * snow) for a, b in zip((95, 100, 90), (235, 238, 242)))
    asphalt = tuple(int(a + (b - a) * snow * 0.8) for a, b in zip((70, 70, 75), (225, 228, 232)))
    draw.rectangle((0, HORIZON, WIDTH, HEIGHT), fill=shade(ground, light))
    # The road, narrowing towards the hills; its centre line vanishes under the snow.
    draw.polygon([(560, HORIZON), (720, HORIZON), (1180, HEIGHT), (100, HEIGHT)], fill=shade(asphalt, light))
    if snow < 0.7:
        for i in range(8):
            y0 = HORIZON + 12 + i * i * 7
            draw.line((640, y0, 640, y0 + 6 + i * 4), fill=shade((230, 220, 120), light), width=2 + i)
    # The car park on the right: white bays, and two cars that get whiter roofs.
    draw.polygon([(860, 380), (1280, 380), (1280, 560), (1000, 560)], fill=shade(asphalt, light))
    for x, colour in ((1030, (160, 30, 40)), (1160, (40, 60, 140))):
        draw.rectangle((x, 430, x + 100, 500), fill=shade(colour, light))
        roof = min(30, depth_cm * 0.6)
        draw.rectangle((x + 10, 430 - roof, x + 90, 430), fill=shade((240, 242, 246), light))
    # The snow bank along the road's edge rises with the depth.
    if depth_cm > 0:
        bank = depth_cm * CM_TO_PX
        draw.polygon([(0, HEIGHT - bank), (100, HEIGHT - bank * 0.6), (560, HORIZON), (0, HORIZON + 30)],
                     fill=shade((245, 247, 250), light))


def draw_snow_stake(draw, light: float, depth_cm: float) -> None:
    """A red and white stake marked every 10 cm, as real snow cameras have, so people can read the depth."""
    x, ground, top = 300, 640, 640 - 100 * CM_TO_PX
    for i in range(10):
        y = ground - (i + 1) * 10 * CM_TO_PX
        draw.rectangle((x, y, x + 14, y + 10 * CM_TO_PX), fill=shade((200, 30, 30) if i % 2 else (250, 250, 250), light))
    draw.rectangle((x - 1, top, x + 15, ground), outline=shade((40, 40, 40), light))
    snow_top = ground - min(depth_cm, 120) * CM_TO_PX
    if depth_cm > 0:  # a drift around the stake, level where it meets it
        draw.polygon([(x - 260, ground + 70), (x - 150, snow_top + 8), (x + 7, snow_top), (x + 170, snow_top + 8),
                      (x + 290, ground + 70)], fill=shade((245, 247, 250), light))


def draw_flakes(draw, count: int, rng: random.Random) -> None:
    for _ in range(count):
        x, y, r = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(1, 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(250, 250, 252))
