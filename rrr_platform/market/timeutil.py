"""Integer-only time conversions (exchange-protocols.md 4.1): everything becomes int ns since epoch."""

from __future__ import annotations

import datetime as dt
import time

NS_PER_MS = 1_000_000
NS_PER_US = 1_000
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S
_EPOCH_DATE = dt.date(1970, 1, 1)


def now_ns() -> int:
    return time.time_ns()


def ms_to_ns(ms: int) -> int:
    return ms * NS_PER_MS


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 (``2026-01-01T00:00:00.123456789Z`` or with an offset) -> int ns, digit by digit.

    ``datetime`` keeps only microseconds, so the fraction is parsed separately and padded to 9 digits.
    """
    body, offset_ns = text, 0
    if body.endswith(("Z", "z")):
        body = body[:-1]
    elif len(body) > 6 and body[-6] in "+-" and body[-3] == ":":
        sign = 1 if body[-6] == "+" else -1
        offset_ns = sign * (int(body[-5:-3]) * 3600 + int(body[-2:]) * 60) * NS_PER_S
        body = body[:-6]
    else:
        raise ValueError(f"RFC 3339 time without a zone: {text!r}")
    if "." in body:
        whole, fraction = body.split(".", 1)
        if not fraction.isdigit() or len(fraction) > 9:
            raise ValueError(f"bad fraction in {text!r}")
        frac_ns = int(fraction.ljust(9, "0"))
    else:
        whole, frac_ns = body, 0
    date_part, _, time_part = whole.replace("t", "T").partition("T")
    year, month, day = (int(x) for x in date_part.split("-"))
    hour, minute, second = (int(x) for x in time_part.split(":"))
    days = (dt.date(year, month, day) - _EPOCH_DATE).days
    return ((days * 86_400 + hour * 3600 + minute * 60 + second) * NS_PER_S) + frac_ns - offset_ns


def format_rfc3339_ns(ts_ns: int, digits: int = 6) -> str:
    """int ns -> ``2026-01-01T00:00:00.123456Z`` with ``digits`` fraction digits (0..9)."""
    seconds, frac = divmod(ts_ns, NS_PER_S)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if digits == 0:
        return base + "Z"
    return f"{base}.{str(frac).zfill(9)[:digits]}Z"


def ns_to_datetime(ts_ns: int) -> dt.datetime:
    seconds, frac = divmod(ts_ns, NS_PER_S)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).replace(microsecond=frac // 1000)


def datetime_to_ns(value: dt.datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime: give a timezone")
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * NS_PER_US


def day_of_ns(ts_ns: int) -> dt.date:
    return _EPOCH_DATE + dt.timedelta(days=ts_ns // NS_PER_DAY)
