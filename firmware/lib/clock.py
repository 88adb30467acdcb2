"""The board's clocks: a monotonic one for timing, and Unix time once it is known.

A board starts with its real-time clock at 1970 or 2000, depending on the port
(ESP32 and Pico W builds differ between versions), so ``time.time()`` is not
Unix time. We never trust it as such: once NTP (or a GPS fix) tells us the
real time we keep the difference, ``offset``, and Unix time is
``time.time() + offset`` whatever epoch the port uses. Until then readings go
out with ``age`` (seconds since they were taken) and the gateway stamps them.

Floats on these boards are 32-bit (about 7 digits), far too coarse for
1,732,300,000 seconds, so Unix time is always a whole number (an int).

Example::

    import clock
    clock.sync_ntp("pool.ntp.org")   # True when the time server answered
    clock.unix()                     # 1732300000, or None before any sync
    clock.ticks_ms()                 # for timing: never jumps, wraps safely with ticks_diff
"""

import time

NTP_DELTA = 2208988800  # seconds from 1900 (NTP's epoch) to 1970 (Unix's)
RESYNC_MS = 6 * 3600 * 1000

offset = None          # Unix time minus board time, once known
synced_at = None       # ticks_ms of the last sync
utc_offset_s = 9 * 3600  # local time for "today" counters; Japan unless config.json says otherwise



# Tests put stand-ins in place of these two; everything else asks them.
def board_time():
    """Whole seconds on the board's own clock (its epoch may be 1970 or 2000)."""
    return int(time.time())


ticks_ms = time.ticks_ms
sleep_ms = time.sleep_ms


def elapsed_ms(since):
    """Milliseconds from ``since`` (a ticks_ms value) to now, safe across the wrap."""
    return time.ticks_diff(ticks_ms(), since)


def unix():
    """Unix time (int seconds) or None when the clock has not been set yet."""
    if offset is None:
        return None
    return board_time() + offset


def set_unix(seconds):
    """Tell the clock the real time (from NTP or a GPS fix)."""
    global offset, synced_at
    offset = int(seconds) - board_time()
    synced_at = ticks_ms()


def due():
    """True when the clock has never been set, or its last sync is old (boards drift)."""
    return synced_at is None or time.ticks_diff(ticks_ms(), synced_at) > RESYNC_MS


def sync_ntp(host="pool.ntp.org", timeout_s=2):
    """Ask an NTP server for the time; False (and no change) when it cannot be reached."""
    import socket
    request = bytearray(48)
    request[0] = 0x1B  # version 3, client
    sock = None
    try:
        address = socket.getaddrinfo(host, 123)[0][-1]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(timeout_s)
        sock.sendto(request, address)
        answer = sock.recv(48)
    except OSError:
        return False
    finally:
        if sock:
            sock.close()
    if len(answer) < 44:
        return False
    seconds = int.from_bytes(answer[40:44], "big") - NTP_DELTA
    if seconds < 1577836800:  # a server with no time yet answers 0
        return False
    set_unix(seconds)
    return True


def local_day():
    """A number that changes at local midnight; counts days since boot before any sync."""
    now = unix()
    if now is None:
        return board_time() // 86400
    return (now + utc_offset_s) // 86400
