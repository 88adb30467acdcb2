"""Snow gauge: an HC-SR04 ultrasonic sensor looking down at the ground.

Snow depth is the mount height minus the distance the sensor measures. Each
reading is the median of a few pings, so one stray echo (a falling flake, a
bird) cannot move it; pings with no echo are left out. Sound is slower in the
cold, so with an optional DS18B20 thermometer the distance is corrected for the
air temperature (at -10 °C an uncorrected gauge 2 m up reads ~9 cm too shallow).

Sends what the Raspberry Pi version sends: a reading {depth_cm} (and temp_c
with the thermometer) every ``interval_s``; and its own alarm, with no gateway
rule and no network needed (events wait in the outbox): the event ``deep_snow``
{depth_cm, alert_cm} once when the depth reaches ``alert_cm``, and
``snow_cleared`` {depth_cm, warn_cm} once it is below ``warn_cm`` again. In
between nothing changes, so snow wobbling around one level sends no flood.

Example::

    gauge = SnowGauge({"interval_s": 600, "mount_height_cm": 200, "samples": 5,
                       "warn_cm": 20, "alert_cm": 50},
                      {"trigger": 5, "echo": 18}, link)
    gauge.measure()          # {"depth_cm": 37.0}, or None when too few echoes came back
"""

import time

import machine

import clock

PING_GAP_MS = 60             # the HC-SR04 needs this long for the last echo to die away
ECHO_TIMEOUT_US = 30000      # about 5 m there and back
MIN_DISTANCE_CM = 2.0        # closer than this it cannot tell
MAX_DISTANCE_CM = 396.0      # its range is 4 m
ASSUMED_SPEED_OF_SOUND = 343.26  # m/s at 20 °C


def speed_of_sound(temp_c):
    """Metres per second in dry air at ``temp_c`` degrees Celsius."""
    return 331.3 * (1 + temp_c / 273.15) ** 0.5


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


class SnowGauge:
    #: what operators may change from afar, with its limits (the same as on the Raspberry Pi)
    SETTINGS = {"interval_s": (1, 86400), "mount_height_cm": (10, 1000), "samples": (1, 15),
                "warn_cm": (0, 1000), "alert_cm": (0, 1000)}
    DEFAULTS = {"interval_s": 600, "mount_height_cm": 200, "samples": 5, "warn_cm": 20, "alert_cm": 50}
    #: "ds18b20": a pin number to correct for the air temperature (optional)
    PINS = {"esp32": {"trigger": 5, "echo": 18, "ds18b20": None},
            "rp2": {"trigger": 2, "echo": 3, "ds18b20": None}}
    POLL_MS = 200

    @staticmethod
    def settings_problems(values):
        """Checks across settings (config.Settings calls this with every value as it would be)."""
        if values["alert_cm"] > values["warn_cm"]:
            return []
        return ["alert_cm (%g) must be above warn_cm (%g): raise alert_cm or lower warn_cm"
                % (values["alert_cm"], values["warn_cm"])]

    def __init__(self, settings, pins, link):
        self.link = link
        self.alarmed = False  # True from deep_snow until snow_cleared
        self.apply_settings(settings)
        self.trigger = machine.Pin(pins["trigger"], machine.Pin.OUT, value=0)
        self.echo = machine.Pin(pins["echo"], machine.Pin.IN)
        self.thermometer = None
        if pins.get("ds18b20") is not None:
            import ds18x20
            import onewire
            self.thermometer = ds18x20.DS18X20(onewire.OneWire(machine.Pin(pins["ds18b20"])))
        self.next_reading = clock.ticks_ms()

    def apply_settings(self, settings):
        self.interval_s = settings["interval_s"]
        self.mount_height_cm = settings["mount_height_cm"]
        self.samples = int(settings["samples"])
        self.warn_cm = settings["warn_cm"]
        self.alert_cm = settings["alert_cm"]
        self.next_reading = clock.ticks_ms()  # new settings: measure now, like on the Pi

    def ping_cm(self):
        """One ping: the distance in cm at 20 °C, or None when no echo came back."""
        self.trigger.value(1)
        time.sleep_us(10)
        self.trigger.value(0)
        echo_us = machine.time_pulse_us(self.echo, 1, ECHO_TIMEOUT_US)
        if echo_us < 0:  # -1 or -2: no echo within the timeout
            return None
        return echo_us * ASSUMED_SPEED_OF_SOUND / 20000  # there and back, m/s -> cm/us

    def temperature_c(self):
        if self.thermometer is None:
            return None
        try:
            sensors = self.thermometer.scan()
            self.thermometer.convert_temp()
            clock.sleep_ms(750)
            temp_c = self.thermometer.read_temp(sensors[0])
        except (OSError, IndexError):
            return None  # a loose wire: measure without the correction
        return temp_c if -55 <= temp_c <= 125 and temp_c != 85 else None

    def depth(self, distances_cm, temp_c=None):
        """The reading from the pings' distances: None unless at least half came back."""
        good = [d for d in distances_cm if d is not None and MIN_DISTANCE_CM < d < MAX_DISTANCE_CM]
        if not good or len(good) * 2 < len(distances_cm):
            return None
        distance_cm = median(good)
        reading = {}
        if temp_c is not None:
            distance_cm *= speed_of_sound(temp_c) / ASSUMED_SPEED_OF_SOUND
            reading["temp_c"] = round(temp_c, 1)
        reading["depth_cm"] = round(max(0.0, self.mount_height_cm - distance_cm), 1)
        return reading

    def measure(self):
        distances = []
        for _ in range(self.samples):
            clock.sleep_ms(PING_GAP_MS)
            distances.append(self.ping_cm())
        return self.depth(distances, self.temperature_c())

    def step(self, now):
        if time.ticks_diff(now, self.next_reading) < 0:
            return
        self.next_reading = time.ticks_add(now, int(self.interval_s * 1000))
        reading = self.measure()
        if reading is None:
            print("snow gauge: too few echoes came back; no reading this time")
        else:
            self.link.publish_reading(reading)
            self.check_alarm(reading["depth_cm"])

    def check_alarm(self, depth_cm):
        """Send ``deep_snow`` on reaching ``alert_cm``, ``snow_cleared`` below ``warn_cm``; each once."""
        if not self.alarmed and depth_cm >= self.alert_cm:
            self.alarmed = True
            self.link.publish_event("deep_snow", {"depth_cm": depth_cm, "alert_cm": self.alert_cm})
        elif self.alarmed and depth_cm < self.warn_cm:
            self.alarmed = False
            self.link.publish_event("snow_cleared", {"depth_cm": depth_cm, "warn_cm": self.warn_cm})

    def commands(self):
        return {"report_now": self.report_now}

    def report_now(self, args):
        self.next_reading = clock.ticks_ms()
        return True, "measuring now"
