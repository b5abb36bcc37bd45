"""Shift dates and times inside a string by a fixed offset, keeping the string's own format.

Surrogate dates must stay dates, keep their written form (``10/28/1984``, ``2026-09-05``, ``July 15th, 2023``,
``9:30 AM``, ``1993-01-04 14:56:41``) and keep the intervals between the dates of one document, so every date of
a document is moved by the same ``DateShift``. Only English month and weekday names are recognised; numeric dates
are read month-first (US) unless the first number cannot be a month. Pure Python, no spaCy, no Faker.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH_BY_NAME = {**{m: i + 1 for i, m in enumerate(MONTHS)}, **{m[:3]: i + 1 for i, m in enumerate(MONTHS)},
                  "sept": 9}
_WEEKDAY_BY_NAME = {**{d: i for i, d in enumerate(WEEKDAYS)}, **{d[:3]: i for i, d in enumerate(WEEKDAYS)}}
_TIME = re.compile(r"(?<!\d)(\d{1,2}):(\d{2})(?::(\d{2}))?(?!\d)(\s*([AaPp])(\.?)([Mm])(\.?))?")
_TOKEN = re.compile(r"\d+|[A-Za-z]+")
_ORDINALS = ("st", "nd", "rd", "th")


def _like(template: str, word: str) -> str:
    """Give ``word`` the letter case of ``template`` (UPPER, lower or Title)."""
    if template.isupper():
        return word.upper()
    if template.islower():
        return word.lower()
    return word[:1].upper() + word[1:].lower()


def _ordinal(day: int) -> str:
    if 10 <= day % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


@dataclass(frozen=True)
class DateShift:
    """Move dates by ``days`` and clock times by ``minutes`` (both non-zero)."""

    days: int
    minutes: int

    @classmethod
    def from_key(cls, key: bytes, *, max_days: int = 365) -> "DateShift":
        """A shift derived from ``key``: the same key always gives the same shift."""
        digest = hmac.new(key, b"spacy-privfilter date shift", hashlib.sha256).digest()
        magnitude = 1 + int.from_bytes(digest[:4], "big") % max_days
        days = magnitude if digest[4] & 1 else -magnitude
        minutes = 1 + int.from_bytes(digest[5:9], "big") % 1439
        return cls(days=days, minutes=minutes)

    def shift(self, value: str) -> str | None:
        """``value`` with its date and/or time moved; None when no valid date or time is found in it."""
        edits: list[tuple[int, int, str]] = []
        time_match = _TIME.search(value)
        clock = None
        if time_match:
            hour, minute = int(time_match.group(1)), int(time_match.group(2))
            second = int(time_match.group(3) or 0)
            if time_match.group(5):
                if not 1 <= hour <= 12:
                    time_match = None
                else:
                    hour = hour % 12 + (12 if time_match.group(5) in "Pp" else 0)
            if time_match and hour < 24 and minute < 60 and second < 60:
                clock = dt.timedelta(hours=hour, minutes=minute, seconds=second)
            else:
                time_match = None
        rest_end = time_match.start() if time_match else len(value)
        rest_start = time_match.end() if time_match else len(value)
        tokens = [m for m in _TOKEN.finditer(value) if m.end() <= rest_end or m.start() >= rest_start]
        date_parts = self._read_date(tokens)
        if date_parts is None and clock is None:
            return None
        if date_parts is not None:
            year, month, day, has_year, places = date_parts
            try:
                moment = dt.datetime(year, month, day) + (clock or dt.timedelta())
                moved = moment + dt.timedelta(days=self.days, minutes=self.minutes if clock is not None else 0)
            except (ValueError, OverflowError):  # no such date, or one that leaves years 1-9999 when shifted
                return None
            if not has_year and moved.month == 2 and moved.day == 29:
                moved -= dt.timedelta(days=1)  # a date written without a year must exist in every year
            edits += self._date_edits(value, places, moved)
        else:
            moved = dt.datetime(2000, 1, 1) + clock + dt.timedelta(minutes=self.minutes)
        if time_match:
            edits += self._time_edits(time_match, moved)
        out = value
        for start, end, text in sorted(edits, reverse=True):
            out = out[:start] + text + out[end:]
        return out

    @staticmethod
    def _read_date(tokens: list[re.Match]) -> tuple | None:
        """Find (year, month, day, has_year, places) in the tokens; places maps a part name to its token."""
        numbers = [t for t in tokens if t.group().isdigit()]
        names = [t for t in tokens if t.group().casefold() in _MONTH_BY_NAME]
        places: dict[str, re.Match] = {}
        for t in tokens:
            if t.group().casefold() in _WEEKDAY_BY_NAME:
                places["weekday"] = t
        if names:
            places["month_name"] = names[0]
            month = _MONTH_BY_NAME[names[0].group().casefold()]
            days = [t for t in numbers if len(t.group()) <= 2]
            years = [t for t in numbers if len(t.group()) == 4]
            if not days:
                return None
            places["day"] = days[0]
            after = [t for t in tokens if t.start() == days[0].end() and t.group().casefold() in _ORDINALS]
            if after:
                places["ordinal"] = after[0]
            if years:
                places["year"] = years[0]
            year = int(years[0].group()) if years else 2000
            return year, month, int(days[0].group()), bool(years), places
        if len(numbers) < 2:
            return None
        first, second, *more = numbers
        if len(first.group()) == 4:
            if not more:
                return None
            order = {"year": first, "month": second, "day": more[0]}
        elif more and int(first.group()) <= 12:
            order = {"month": first, "day": second, "year": more[0]}
        elif more:
            order = {"day": first, "month": second, "year": more[0]}
        elif len(second.group()) == 4:
            order = {"month": first, "year": second}
        else:
            order = {"month": first, "day": second}
        if "year" in order and len(order["year"].group()) not in (2, 4):
            return None
        places.update(order)
        year = int(order["year"].group()) if "year" in order else 2000
        if "year" in order and len(order["year"].group()) == 2:
            year += 2000 if year < 50 else 1900
        day = int(order["day"].group()) if "day" in order else 1
        return year, int(order["month"].group()), day, "year" in order, places

    @staticmethod
    def _date_edits(value: str, places: dict[str, re.Match], moved: dt.datetime) -> list[tuple[int, int, str]]:
        edits = []
        # Zero padding is read from the value: any "0x" part means padded, any one-digit part means unpadded;
        # numeric dates with two-digit parts alone ("10/28") are taken as padded, the commoner style in records;
        # a day next to a month name ("March 25") is not padded unless written so.
        parts = [places[p].group() for p in ("month", "day") if p in places]
        padded = any(p.startswith("0") for p in parts) or ("month" in places and all(len(p) == 2 for p in parts))

        def number(part: str, new: int) -> None:
            if part in places:
                token = places[part]
                width = len(token.group()) if part == "year" else (2 if padded else 1)
                text = str(new).zfill(width)[-width:] if part == "year" else str(new).zfill(width)
                edits.append((token.start(), token.end(), text))

        number("year", moved.year)
        number("month", moved.month)
        number("day", moved.day)
        if "month_name" in places:
            token = places["month_name"]
            full = MONTHS[moved.month - 1]
            written = token.group().casefold()
            name = full if written in MONTHS else ("sept" if written == "sept" and moved.month == 9 else full[:3])
            edits.append((token.start(), token.end(), _like(token.group(), name)))
        if "ordinal" in places:
            token = places["ordinal"]
            edits.append((token.start(), token.end(), _like(token.group(), _ordinal(moved.day))))
        if "weekday" in places:
            token = places["weekday"]
            full = WEEKDAYS[moved.weekday()]
            edits.append((token.start(), token.end(), _like(token.group(), full if len(token.group()) > 3
                                                            else full[:3])))
        return edits

    @staticmethod
    def _time_edits(match: re.Match, moved: dt.datetime) -> list[tuple[int, int, str]]:
        hour = moved.hour
        edits = []
        if match.group(5):
            edits.append((match.start(5), match.end(5), ("P" if hour >= 12 else "A") if match.group(5).isupper()
                          else ("p" if hour >= 12 else "a")))
            hour = hour % 12 or 12
        hour_text = match.group(1)
        width = 2 if hour_text.startswith("0") or (len(hour_text) == 2 and not match.group(5)) else 1
        edits.append((match.start(1), match.end(1), str(hour).zfill(width)))
        edits.append((match.start(2), match.end(2), f"{moved.minute:02d}"))
        if match.group(3):
            edits.append((match.start(3), match.end(3), f"{moved.second:02d}"))
        return edits
