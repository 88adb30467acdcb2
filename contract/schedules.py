"""Schedules: when a device switches its outputs by itself (a setting of type "schedule").

A schedule is a list of at most 24 entries, pushed to the device on ``config`` like any
setting, and run by the device itself, so a road heater still comes on at 5:00 when the
network is down. Each entry (switching spec §3)::

    {"output": "heater", "on": "05:00", "off": "08:00", "days": "mon-fri"}

- ``on`` and ``off`` are ``HH:MM`` (24-hour) in the town's local time; ``off`` earlier than
  ``on`` means the window runs past midnight (``22:00`` to ``02:00``).
- ``days`` is optional (every day): ``mon-fri``, ``sat,sun``, ``mon,wed,fri``, ``fri-mon``.

On the operator pages a schedule is written one entry per line, which reads the same::

    heater 05:00-08:00 mon-fri
    sprinkler 22:00-02:00

Example::

    check_schedule([{"output": "heater", "on": "05:00", "off": "08:00"}], outputs={"heater"})
    parse_lines("heater 05:00-08:00 mon-fri")   # [{"output": "heater", "on": "05:00", "off": "08:00", "days": "mon-fri"}]
    check_schedule([{"output": "heater", "on": "5am"}])
    # ScheduleError: schedule entry 1 (heater): on must be a time like 05:00 (HH:MM, 24-hour), not '5am'; …
"""

from __future__ import annotations

import re
from typing import Any

MAX_ENTRIES = 24
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
OUTPUT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
KEYS = ("output", "on", "off", "days")
EXAMPLE = 'heater 05:00-08:00 mon-fri (or {"output": "heater", "on": "05:00", "off": "08:00", "days": "mon-fri"})'


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message names the entry and what to write instead."""


def day_set(days: str) -> set[int]:
    """The days ``days`` names, 0 = Monday: ``"mon-fri"`` → {0, 1, 2, 3, 4}; ValueError if unreadable."""
    found: set[int] = set()
    for part in days.replace(" ", "").lower().split(","):
        first, dash, last = part.partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise ValueError(part)
        start, end = DAYS.index(first), DAYS.index(last or first)
        day = start
        while True:  # fri-mon wraps round the weekend
            found.add(day)
            if day == end:
                break
            day = (day + 1) % 7
    return found


def check_schedule(schedule: Any, outputs: set[str] | None = None) -> list[dict[str, str]]:
    """The schedule as the device gets it, or ScheduleError naming each entry to fix.

    ``outputs``: the outputs the device has (its status lists them); None: not known here,
    the device itself refuses an output it does not have.
    """
    if isinstance(schedule, str):
        schedule = parse_lines(schedule)
    if not isinstance(schedule, list):
        raise ScheduleError(f"a schedule is a list of entries, one per line like {EXAMPLE}")
    if len(schedule) > MAX_ENTRIES:
        raise ScheduleError(f"a schedule has at most {MAX_ENTRIES} entries, not {len(schedule)}")
    clean, problems = [], []
    for number, entry in enumerate(schedule, 1):
        where = f"schedule entry {number}"
        if not isinstance(entry, dict):
            problems.append(f"{where} ({entry}): write it like {EXAMPLE}")
            continue
        if entry.get("output"):
            where += f" ({entry['output']})"
        wrong = []
        unknown = sorted(set(entry) - set(KEYS))
        if unknown:
            wrong.append(f"unknown {', '.join(map(str, unknown))} (an entry has {', '.join(KEYS)})")
        output = entry.get("output")
        if not isinstance(output, str) or not OUTPUT.match(output):
            wrong.append(f"output must be an output's name like heater, not {output!r}")
        elif outputs is not None and output not in outputs:
            wrong.append(f"the device has no output {output!r}; it has {', '.join(sorted(outputs)) or 'none'}")
        for key in ("on", "off"):
            value = entry.get(key)
            if not isinstance(value, str) or not TIME.match(value):
                wrong.append(f"{key} must be a time like {'05:00' if key == 'on' else '08:00'} (HH:MM, 24-hour),"
                             f" not {value!r}")
        if not wrong and entry["on"] == entry["off"]:
            wrong.append(f"on and off are both {entry['on']}: give the time it goes off")
        days = entry.get("days")
        if days is not None:
            try:
                if not isinstance(days, str):
                    raise ValueError(days)
                day_set(days)
            except ValueError:
                wrong.append(f"days must be like mon-fri, sat,sun or mon,wed,fri (or left out: every day),"
                             f" not {days!r}")
        if wrong:
            problems.append(f"{where}: {'; '.join(wrong)}")
            continue
        tidy = {"output": output, "on": entry["on"], "off": entry["off"]}
        if days:
            tidy["days"] = days.replace(" ", "").lower()
        clean.append(tidy)
    if problems:
        raise ScheduleError("; ".join(problems))
    return clean


def parse_lines(text: str) -> list[dict[str, str] | str]:
    """Lines like ``heater 05:00-08:00 mon-fri`` (or separated by ``;``) as entries.

    A line that does not read as one is passed on as it is, for check_schedule to name it.
    """
    entries: list[dict[str, str] | str] = []
    for line in re.split(r"[\n;]", text):
        words = line.split()
        if not words:
            continue
        if len(words) in (2, 3) and "-" in words[1]:
            on, _, off = words[1].partition("-")
            entry = {"output": words[0], "on": _padded(on), "off": _padded(off)}
            if len(words) == 3:
                entry["days"] = words[2]
            entries.append(entry)
        else:
            entries.append(line.strip())
    return entries


def as_lines(schedule: Any) -> str:
    """A schedule as the operator pages show it: one ``heater 05:00-08:00 mon-fri`` a line."""
    if not isinstance(schedule, list):
        return ""
    lines = []
    for entry in schedule:
        if isinstance(entry, dict):
            line = f"{entry.get('output')} {entry.get('on')}-{entry.get('off')}"
            lines.append(f"{line} {entry['days']}" if entry.get("days") else line)
    return "\n".join(lines)


def _padded(time: str) -> str:
    """``5:00`` → ``05:00``: staff write times as they say them."""
    return f"0{time}" if re.match(r"^[0-9]:[0-5][0-9]$", time) else time
