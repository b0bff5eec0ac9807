"""RFC 3339 timestamps: the strict check for what clients send, and the format the server writes.

Kept apart from the wire module because presence, questions and the store need the same two functions
without pulling in message parsing.
"""

from __future__ import annotations

import calendar
import math
import re
import time

# RFC 3339 section 5.6, with the note that "T" and "Z" may be lower case. Nothing more lenient:
# no space separator, no missing seconds, no ISO 8601 week dates.
_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"[Tt](?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?P<frac>\.\d+)?"
    r"(?:[Zz]|(?P<sign>[+-])(?P<off_hour>\d{2}):(?P<off_minute>\d{2}))",
    re.ASCII,
)


def is_rfc3339(text: str) -> bool:
    """Whether ``text`` is a valid RFC 3339 date-time (calendar-checked, leap second allowed)."""
    return parse_rfc3339(text) is not None


def parse_rfc3339(text: str) -> float | None:
    """The POSIX time ``text`` names, or None when it is not strict RFC 3339.

    A leap second (``:60``) is accepted as the grammar allows and counted as the next second's start.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    offset = 0
    if match["sign"] is not None:
        off_hour, off_minute = int(match["off_hour"]), int(match["off_minute"])
        if off_hour > 23 or off_minute > 59:
            return None
        offset = (off_hour * 60 + off_minute) * 60
        if match["sign"] == "-":
            offset = -offset
    fraction = float(match["frac"]) if match["frac"] else 0.0
    base = (_days_from_civil(year, month, day) * 24 + hour) * 3600 + minute * 60
    return base + second + fraction - offset


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if calendar.isleap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar, for any year RFC 3339 can
    write (0000 included, which the datetime and calendar modules refuse)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


# The last whole second formatted: every message without a timestamp is stamped, and strftime of
# the same second over and over showed in the per-message profile.
_last_second: tuple[int, str] = (-1, "")


def format_rfc3339(posix_time: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix: the form the server stamps on what it stores."""
    global _last_second
    whole = math.floor(posix_time)
    millis = round((posix_time - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    if _last_second[0] != whole:
        _last_second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_last_second[1]}.{millis:03d}Z"
