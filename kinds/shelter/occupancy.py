"""How full a shelter is, in one word: vacant, crowded, full or closed.

One rule for every part of jisaku that shows a shelter: the tally's own small display,
the residents' map, the operator pages and the open-data export. It imports nothing,
so the gateway and the dashboard may use it as well as the device.

Example::

    from jisaku.kinds.shelter.occupancy import COLOURS, LABELS, level

    level(12, 100, True)       # 'vacant'
    level(85, 100, True)       # 'crowded': 80 % or more
    level(100, 100, True)      # 'full'
    level(3, 100, False)       # 'closed', whatever the count
    LABELS["crowded"]["ja"]    # '混雑'
    COLOURS["full"]            # '#a50f15'
"""

from __future__ import annotations

# From this share of the capacity on, a shelter is "crowded" (混雑): residents on the way
# should think of the next one. 0.8 is what many towns' shelter maps use.
CROWDED_FROM = 0.8

LEVELS = ("vacant", "crowded", "full", "closed")

LABELS = {
    "vacant": {"en": "Space available", "ja": "空きあり"},
    "crowded": {"en": "Crowded", "ja": "混雑"},
    "full": {"en": "Full", "ja": "満員"},
    "closed": {"en": "Closed", "ja": "閉鎖"},
}

# Okabe and Ito's colours, chosen to stay apart for people with the common colour-vision
# differences: they differ in lightness as well as hue (blue, light orange, dark red, grey).
# Closed is grey: there is nothing to go to. Never the colour alone: show the label too.
COLOURS = {
    "vacant": "#0072b2",   # blue
    "crowded": "#e69f00",  # orange
    "full": "#a50f15",     # dark red
    "closed": "#616161",   # grey
}

# The text to write on each colour: a contrast of 4.5:1 or more (WCAG AA) on every one.
TEXT_COLOURS = {
    "vacant": "#ffffff",   # 5.2:1
    "crowded": "#000000",  # 9.3:1 (white would be 2.3:1)
    "full": "#ffffff",     # 7.8:1
    "closed": "#ffffff",   # 6.2:1
}


def level(count: int | None, capacity: int | None, is_open: bool | int | None) -> str:
    """The shelter's level: ``"closed" | "full" | "crowded" | "vacant"``.

    A shelter that is not open is closed, whatever its count. An open one with no known
    capacity (0 or None) cannot be full: it shows "vacant", and staff decide at the door.
    """
    if not is_open:
        return "closed"
    count = max(int(count or 0), 0)
    if not capacity or capacity <= 0:
        return "vacant"
    if count >= capacity:
        return "full"
    if count >= CROWDED_FROM * capacity:
        return "crowded"
    return "vacant"


def now(values: dict, settings: dict | None, known_capacity: int | None = None) -> dict:
    """What residents are shown of a shelter: ``{"count", "capacity", "open", "level"}``.

    ``values`` is the tally's newest reading, ``settings`` the operators' newest settings for
    it. The operators' word wins for ``capacity`` and ``open``: a shelter headquarters opened
    is open on the map at once, even while its tally is off or has no network. A shelter
    nobody opened is closed. ``known_capacity`` (the town's shelter list) is the last resort.
    """
    settings = settings or {}
    count = values.get("count")
    capacity = next((c for c in (settings.get("capacity"), values.get("capacity"), known_capacity)
                     if c is not None), None)
    is_open = settings.get("open", values.get("open", 0))
    return {"count": count, "capacity": capacity, "open": int(bool(is_open)),
            "level": level(count, capacity, is_open)}
