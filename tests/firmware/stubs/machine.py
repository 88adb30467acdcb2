# Test stand-in for MicroPython's machine module: pins the tests can set and read.
#
# Not shipped to boards. Tests set ``light_u16``, ``echoes`` and feed the UART.


light_u16 = 65535          # what every ADC reads
echoes = []                # what time_pulse_us returns next (pulse lengths in µs, or -1)
echo_default = -1
uarts = []
pwms = []
watchdogs = []


class Pin:
    IN = 0
    OUT = 1

    def __init__(self, number, mode=None, value=None, pull=None):
        self.number = number
        self._value = value or 0

    def value(self, value=None):
        if value is None:
            return self._value
        self._value = value


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self.pin = pin

    def atten(self, value):
        pass

    def read_u16(self):
        return light_u16


class PWM:
    def __init__(self, pin):
        self.pin = pin
        self.duty = 0
        self.changes = 0
        self.hz = 0
        pwms.append(self)

    def freq(self, hz):
        self.hz = hz

    def duty_u16(self, duty):
        self.duty = duty
        self.changes += 1


class UART:
    def __init__(self, number, baudrate=9600, rx=None, tx=None):
        self.buffer = b""
        uarts.append(self)

    def feed(self, data):
        self.buffer += data

    def any(self):
        return len(self.buffer)

    def read(self, count=None):
        count = len(self.buffer) if count is None else count
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data or None


def time_pulse_us(pin, level, timeout_us):
    if echoes:
        return echoes.pop(0)
    return echo_default


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout
        self.fed = 0
        watchdogs.append(self)

    def feed(self):
        self.fed += 1


def reset():
    raise SystemExit("machine.reset()")
