"""Value types of the task interpreter and how they are written as text. No torch.

Numbers are `fractions.Fraction` everywhere (exact arithmetic: 0.1 + 0.2 == 0.3), clock times
are `ClockTime` (minutes since midnight of the start day, so a time past midnight keeps its
day offset), orderings are `Ordering` (a tuple of names, smallest first). Names and choices
are plain strings. Rendering follows the report: "15", "6.3", "4:15 PM", "D<C<B<A".
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
import re

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, order=True)
class ClockTime:
    """A clock reading as minutes since midnight of the problem's first day (may be ≥ 1440)."""

    minutes: int

    @property
    def day_offset(self) -> int:
        return self.minutes // MINUTES_PER_DAY

    def render(self) -> str:
        """12-hour form as the report writes it: "4:15 PM", "12:00 PM" = noon, "12:00 AM" = midnight."""
        hour, minute = divmod(self.minutes % MINUTES_PER_DAY, 60)
        suffix = "AM" if hour < 12 else "PM"
        return f"{(hour % 12) or 12}:{minute:02d} {suffix}"


@dataclass(frozen=True)
class Ordering:
    """Entities from smallest to largest (by whatever the problem orders them by)."""

    items: tuple[str, ...]

    def render(self) -> str:
        return "<".join(self.items)


_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*([AaPp][Mm])?\s*$")


def parse_clock(text: str) -> ClockTime:
    """'1:30 PM' / '13:30' -> ClockTime. Raises ValueError naming the text when it is not a time."""
    match = _TIME_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a clock time (expected like '1:30 PM' or '13:30')")
    hour, minute, suffix = int(match.group(1)), int(match.group(2)), match.group(3)
    if minute > 59 or hour > 23 or (suffix and not 1 <= hour <= 12):
        raise ValueError(f"{text!r} is not a valid clock time")
    if suffix:
        hour = hour % 12 + (12 if suffix.lower() == "pm" else 0)
    return ClockTime(hour * 60 + minute)


def to_fraction(value: object) -> Fraction:
    """An int / decimal string / Fraction -> Fraction, exactly (floats go through their repr)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(repr(value))
    if isinstance(value, str):
        return Fraction(value.strip())
    raise ValueError(f"{value!r} is not a number")


def round_half_up(x: Fraction, places: int) -> Fraction:
    """Round to `places` decimals, halves away from zero (how people round money: 2.345 -> 2.35)."""
    scale = Fraction(10) ** places
    magnitude = (abs(x) * scale + Fraction(1, 2)).__floor__()
    return (magnitude if x >= 0 else -magnitude) / scale


def format_number(x: Fraction, decimals: int = 2) -> str:
    """Shortest decimal form after rounding to `decimals`: 15 -> "15", 63/10 -> "6.3", 75/4 -> "18.75"."""
    rounded = round_half_up(x, decimals)
    if rounded.denominator == 1:
        return str(rounded.numerator)
    sign = "-" if rounded < 0 else ""
    whole, frac = divmod(abs(rounded) * 10**decimals, 10**decimals)
    digits = f"{int(frac):0{decimals}d}".rstrip("0")
    return f"{sign}{int(whole)}.{digits}"


def render_value(value: object, decimals: int = 2) -> str:
    """Any interpreter value as problem text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Fraction):
        return format_number(value, decimals)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (ClockTime, Ordering)):
        return value.render()
    if isinstance(value, tuple):
        return ", ".join(render_value(v, decimals) for v in value)
    return str(value)


def to_plain(value: object) -> object:
    """A JSON-friendly form of a value (for Instance.variables): ints stay ints, other numbers become
    decimal strings, times "1:30 PM", orderings "A<B", tuples lists."""
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else format_number(value, 6)
    if isinstance(value, (ClockTime, Ordering)):
        return value.render()
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value
