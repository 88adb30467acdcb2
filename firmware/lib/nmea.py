"""A small NMEA 0183 parser for GPS modules: RMC (position, speed, course, date) and GGA (fix quality).

Any talker is accepted (GP = GPS, GN = several systems, GL, GA, BD). A sentence
with a wrong checksum, or one this parser does not know, gives None.

Example::

    import nmea
    nmea.parse("$GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A*43")
    # {"type": "RMC", "valid": True, "lat": 53.361337, "lon": -6.50562,
    #  "speed_kmh": 0.0, "heading": 31.7, "unix": 1306574870}
"""

KNOTS_TO_KMH = 1.852


def checksum_ok(line):
    """True when the two hex digits after ``*`` match the XOR of the characters before it."""
    star = line.rfind("*")
    if not line.startswith("$") or star < 0 or len(line) < star + 3:
        return False
    total = 0
    for char in line[1:star]:
        total ^= ord(char)
    try:
        return total == int(line[star + 1:star + 3], 16)
    except ValueError:
        return False


def _degrees(value, hemisphere):
    """``3608.4480``, ``N`` -> 36.14080 (NMEA gives degrees and minutes run together)."""
    dot = value.find(".")
    if dot < 3:
        return None
    degrees = int(value[:dot - 2]) + float(value[dot - 2:]) / 60
    return -degrees if hemisphere in ("S", "W") else degrees


def _float(value):
    return float(value) if value else None


def days_from_civil(year, month, day):
    """Days from 1970-01-01 to a date, without the board's own epoch (1970 or 2000) getting in."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _unix(hhmmss, ddmmyy):
    if len(hhmmss) < 6 or len(ddmmyy) != 6:
        return None
    days = days_from_civil(2000 + int(ddmmyy[4:6]), int(ddmmyy[2:4]), int(ddmmyy[0:2]))
    return days * 86400 + int(hhmmss[0:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6])


def parse(line):
    """A dict for an RMC or GGA sentence, else None."""
    line = line.strip()
    if not checksum_ok(line):
        return None
    fields = line[1:line.rfind("*")].split(",")
    kind = fields[0][-3:]
    try:
        if kind == "RMC" and len(fields) >= 10:
            fix = {"type": "RMC", "valid": fields[2] == "A", "unix": _unix(fields[1], fields[9])}
            if fix["valid"]:
                fix["lat"] = round(_degrees(fields[3], fields[4]), 6)
                fix["lon"] = round(_degrees(fields[5], fields[6]), 6)
                if fields[7]:
                    fix["speed_kmh"] = round(float(fields[7]) * KNOTS_TO_KMH, 1)
                if fields[8]:
                    fix["heading"] = round(float(fields[8]), 1)
            return fix
        if kind == "GGA" and len(fields) >= 10:
            quality = int(fields[6] or 0)
            fix = {"type": "GGA", "quality": quality, "sats": int(fields[7] or 0),
                   "hdop": _float(fields[8]), "alt_m": _float(fields[9])}
            if quality > 0:
                fix["lat"] = round(_degrees(fields[2], fields[3]), 6)
                fix["lon"] = round(_degrees(fields[4], fields[5]), 6)
            return fix
    except (ValueError, TypeError):
        return None  # a garbled field: a loose wire or a module still starting
    return None
