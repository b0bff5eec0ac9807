"""RFC 3339 timestamps: the strict check for what clients send and the format the server writes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibews.timestamps import format_rfc3339, is_rfc3339, parse_rfc3339


def posix(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


# --- valid forms -----------------------------------------------------------------------------

VALID = [
    "2026-11-25T10:00:00Z",
    "2026-11-25t10:00:00z",
    "2026-11-25t10:00:00Z",
    "2026-11-25T10:00:00z",
    "2026-11-25T10:00:00+00:00",
    "2026-11-25T10:00:00-00:00",
    "2026-11-25T10:00:00+05:30",
    "2026-11-25T10:00:00-08:00",
    "2026-11-25T10:00:00+23:59",
    "2026-11-25T10:00:00-23:59",
    "2026-11-25T10:00:00.5Z",
    "2026-11-25T10:00:00.123Z",
    "2026-11-25T10:00:00.123456789+01:00",
    "2026-11-25T10:00:00.000000000000000001Z",
    "1985-04-12T23:20:50.52Z",
    "1996-12-19T16:39:57-08:00",
    "1990-12-31T23:59:60Z",
    "1990-12-31T15:59:60-08:00",
    "1937-01-01T12:00:27.87+00:20",
    "2016-12-31T23:59:60Z",
    "2024-02-29T12:00:00Z",
    "2000-02-29T00:00:00Z",
    "2028-02-29T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-01-31T00:00:00Z",
    "2026-04-30T00:00:00Z",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_rfc3339(text: str) -> None:
    """Strict RFC 3339 date-times (T/t, Z/z, offsets, fractions, :60, Feb 29) are accepted."""
    assert is_rfc3339(text)
    assert isinstance(parse_rfc3339(text), float)


# --- invalid forms ---------------------------------------------------------------------------

INVALID = [
    "2026-11-25 10:00:00Z",
    "2026-11-25_10:00:00Z",
    "2026-11-25T10:00Z",
    "2026-11-25T10Z",
    "2026-11-25T10:00:00",
    "2026-11-25T10:00:00.123",
    "2026-11-25",
    "T10:00:00Z",
    "10:00:00Z",
    "2025-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "2026-01-00T00:00:00Z",
    "2026-01-32T00:00:00Z",
    "2026-11-25T24:00:00Z",
    "2026-11-25T10:60:00Z",
    "2026-11-25T10:00:61Z",
    "2026-11-25T10:00:00+24:00",
    "2026-11-25T10:00:00-24:00",
    "2026-11-25T10:00:00+05:60",
    "2026-11-25T10:00:00+0530",
    "2026-11-25T10:00:00+05",
    "2026-11-25T10:00:00 +05:00",
    "2026-11-25T10:00:00ZZ",
    "2026-11-25T10:00:00Z ",
    " 2026-11-25T10:00:00Z",
    "2026-11-25T10:00:00Zx",
    "2026-11-25T10:00:00Z\n",
    "2026-11-25T10:00:00+01:00Z",
    "2026-11-25T10:00:00.Z",
    "2026-11-25T10:00:00,5Z",
    "2026-11-25T10:00:00.5.5Z",
    "2026-1-25T10:00:00Z",
    "2026-11-5T10:00:00Z",
    "2026-11-25T1:00:00Z",
    "26-11-25T10:00:00Z",
    "12026-11-25T10:00:00Z",
    "+2026-11-25T10:00:00Z",
    "2026-W48-3T10:00:00Z",
    "20261125T100000Z",
    "2026-11-25T10:00:00UTC",
    "2026-11-25T10:00:00GMT",
    "\uff12\uff10\uff12\uff16-11-25T10:00:00Z",
    "2026-\uff11\uff11-25T10:00:00Z",
    "\u0662\u0660\u0662\u0666-11-25T10:00:00Z",
    "2026-11-25T10:00:00\uff3a",
    "2026-11-25\u0054\u030010:00:00Z",
    "",
    "Z",
]


@pytest.mark.parametrize("text", INVALID, ids=repr)
def test_invalid_rfc3339(text: str) -> None:
    """Near misses (space separator, missing parts, bad calendar or clock values, offsets out of
    range, trailing garbage, non-ASCII digits) are refused: False and None."""
    assert not is_rfc3339(text)
    assert parse_rfc3339(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0000-01-01T00:00:00Z", -62_167_219_200.0),
        ("0000-02-29T00:00:00Z", -62_167_219_200.0 + 59 * 86_400),
        ("0000-12-31T23:59:59Z", -62_135_596_801.0),
    ],
)
def test_year_zero_does_not_raise(text: str, expected: float) -> None:
    """Year 0000 fits the grammar: it is accepted with its proleptic Gregorian value (0 is a leap
    year) or refused, but is_rfc3339 and parse_rfc3339 never raise (they once raised ValueError)."""
    value = parse_rfc3339(text)
    assert is_rfc3339(text) is (value is not None)
    assert value is None or value == expected


# --- values and offset arithmetic ------------------------------------------------------------


def test_offset_arithmetic() -> None:
    """An offset names local time: 01:00 at +01:00 is midnight UTC, and so on."""
    midnight = parse_rfc3339("2026-01-01T00:00:00Z")
    assert midnight == posix(2026, 1, 1)
    assert parse_rfc3339("2026-01-01T01:00:00+01:00") == midnight
    assert parse_rfc3339("2025-12-31T19:00:00-05:00") == midnight
    assert parse_rfc3339("2026-01-01T05:30:00+05:30") == midnight
    assert parse_rfc3339("2025-12-31T23:00:00-01:00") == midnight
    assert parse_rfc3339("2026-01-01T00:00:00+00:00") == midnight
    assert parse_rfc3339("2026-01-01T00:00:00-00:00") == midnight
    assert parse_rfc3339("2026-01-01t00:00:00z") == midnight


def test_known_values() -> None:
    """Parsing gives POSIX seconds, fractions included."""
    assert parse_rfc3339("1970-01-01T00:00:00Z") == 0.0
    assert parse_rfc3339("1969-12-31T23:59:59Z") == -1.0
    assert parse_rfc3339("2026-11-25T10:00:00Z") == posix(2026, 11, 25, 10)
    assert parse_rfc3339("2026-11-25T10:00:00.5Z") == posix(2026, 11, 25, 10) + 0.5
    assert parse_rfc3339("2024-02-29T12:00:00Z") == posix(2024, 2, 29, 12)
    value = parse_rfc3339("1985-04-12T23:20:50.52Z")
    assert value == pytest.approx(posix(1985, 4, 12, 23, 20, 50) + 0.52)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    st.sampled_from(["T", "t"]),
    st.sampled_from(["Z", "z", "offset"]),
)
def test_parse_agrees_with_datetime(
    utc: datetime, offset_minutes: int, separator: str, zone: str
) -> None:
    """For any instant in years 1-9999, written in UTC or at any offset, parse gives the POSIX
    time datetime computes."""
    if zone != "offset":
        offset_minutes = 0
    local = utc + timedelta(minutes=offset_minutes)
    if zone == "offset":
        hours, minutes = divmod(abs(offset_minutes), 60)
        zone = f"{'-' if offset_minutes < 0 else '+'}{hours:02d}:{minutes:02d}"
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}{separator}"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}.{local.microsecond:06d}{zone}"
    )
    assert is_rfc3339(text)
    assert parse_rfc3339(text) == pytest.approx(utc.replace(tzinfo=UTC).timestamp(), abs=1e-5)


def test_leap_second_counts_as_next_second() -> None:
    """A leap second (:60) is accepted and counted as the start of the next second."""
    assert parse_rfc3339("2016-12-31T23:59:60Z") == posix(2017, 1, 1)
    assert parse_rfc3339("1990-12-31T15:59:60-08:00") == posix(1991, 1, 1)


# --- format_rfc3339 --------------------------------------------------------------------------

FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", re.ASCII)


@pytest.mark.parametrize(
    ("posix_time", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1.5, "1970-01-01T00:00:01.500Z"),
        (posix(2026, 11, 25, 10) + 0.123, "2026-11-25T10:00:00.123Z"),
        (posix(2024, 2, 29, 23, 59, 59) + 0.9994, "2024-02-29T23:59:59.999Z"),
        (posix(2024, 2, 29, 23, 59, 59) + 0.9996, "2024-03-01T00:00:00.000Z"),
        (posix(2026, 1, 1) + 0.0004, "2026-01-01T00:00:00.000Z"),
        (posix(9999, 12, 31, 23, 59, 59), "9999-12-31T23:59:59.000Z"),
    ],
)
def test_format_rfc3339(posix_time: float, text: str) -> None:
    """format_rfc3339 writes UTC as YYYY-MM-DDTHH:MM:SS.mmmZ, rounding to the millisecond."""
    assert format_rfc3339(posix_time) == text
    assert FORMAT.fullmatch(text)
    assert is_rfc3339(text)


@pytest.mark.parametrize(
    "text",
    [
        "1970-01-01T00:00:00.000Z",
        "2026-11-25T10:00:00.123Z",
        "2026-11-25T10:00:00.999Z",
        "2024-02-29T12:34:56.007Z",
        "2000-01-01T00:00:00.001Z",
        "2038-01-19T03:14:08.500Z",
    ],
)
def test_format_parse_round_trip(text: str) -> None:
    """A formatted time parses back to itself, and formats to the same text again."""
    value = parse_rfc3339(text)
    assert value is not None
    assert format_rfc3339(value) == text


@pytest.mark.parametrize(
    "posix_time", [0.0, 1.0, 1_764_064_800.0, 1_764_064_800.123, 1_764_064_800.5, 4_102_444_800.25]
)
def test_format_then_parse_is_within_half_a_millisecond(posix_time: float) -> None:
    """parse(format(t)) is t to the millisecond."""
    value = parse_rfc3339(format_rfc3339(posix_time))
    assert value is not None
    assert abs(value - posix_time) <= 0.0005 + 1e-6


@pytest.mark.parametrize("posix_time", [-0.5, -1.25, -86_400.001])
def test_format_before_1970(posix_time: float) -> None:
    """Times before the epoch are formatted in the same valid form (fractions once came out as
    a negative millisecond field: -0.5 -> '1970-01-01T00:00:00.-500Z')."""
    text = format_rfc3339(posix_time)
    assert FORMAT.fullmatch(text), text
    assert parse_rfc3339(text) == pytest.approx(posix_time, abs=0.0005)
