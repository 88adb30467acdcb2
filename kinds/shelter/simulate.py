"""The shelter's simulation: people arriving and leaving in waves, and staff pressing the buttons.

Named in kind.toml (``simulation = "simulate.py:Waves"``). ``[simulate] people`` in
device.toml is how many people are inside over a repeating cycle, as ``[seconds, people]``
points joined by straight lines; for each person more the simulated staff press "+1" on
the mock pin, for each person fewer "−1", at most one press a tick (five a second).
See jisaku.device.simulate for how a scenario runs.

With the example device.toml a cycle lasts five minutes: a first wave fills the shelter to
"crowded", a second makes it full, then people go home until it is empty again.
"""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario, along

# When no [simulate] people are given: a wave of 30 in the first minute, all gone after four.
DEFAULT_PEOPLE = [[0, 0], [60, 30], [120, 30], [240, 0]]
# People the tally counted before a restart (its count is kept) go home over this long.
LEFTOVER_LEAVE_S = 60.0


class Waves(Scenario):
    """People coming and going in waves; one button press for each."""

    def __init__(self, config: DeviceConfig, factory: MockFactory):
        super().__init__()
        shelter, simulate = config.section("shelter"), config.section("simulate")
        # The buttons pull their pins up; a press pulls the pin low.
        self.plus = factory.pin(shelter.get("plus_pin", 17))
        self.minus = factory.pin(shelter.get("minus_pin", 27))
        self.curve = [(float(s), float(n)) for s, n in simulate.get("people", DEFAULT_PEOPLE)]
        self.leftover = 0
        self.counted = 0  # how many people the presses so far stand for

    def attach(self, app) -> None:
        # The tally keeps its count over a restart: those people are still inside, and leave first.
        self.leftover = self.counted = app.count

    def people(self, elapsed_s: float) -> int:
        """How many people are inside ``elapsed_s`` seconds after the start."""
        leaving = self.leftover * max(0.0, 1 - elapsed_s / LEFTOVER_LEAVE_S)
        return round(along(self.curve, elapsed_s) + leaving)

    def tick(self, elapsed_s: float) -> None:
        wanted = self.people(elapsed_s)
        if wanted > self.counted:
            self.press(self.plus)
            self.counted += 1
        elif wanted < self.counted:
            self.press(self.minus)
            self.counted -= 1

    @staticmethod
    def press(pin) -> None:
        pin.drive_low()
        pin.drive_high()
