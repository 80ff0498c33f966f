"""What the values of a timestamp column mean, and the value a time bound is compared with.

PostgreSQL's ``timestamp with time zone`` holds instants: compared with an instant it needs no
setting. A naive column (PostgreSQL's ``timestamp without time zone`` and ``date``, and every
SQLite timestamp, which is text) holds wall-clock readings, and which instant a reading is depends
on the zone of the clock that wrote it. That zone is configured (a policy's ``timezone``, an
analytics source's ``timezone``; default UTC) and never taken from the session's ``TimeZone``:
comparing a naive column with an instant would make PostgreSQL convert the column through the
session's zone, so the same predicate would select other rows under ``ALTER DATABASE ... SET
timezone = 'Asia/Tokyo'`` than under UTC.

So a bound is turned into the column's own terms before it is compared: the instant's wall-clock
reading in the configured zone for a naive column (the column stays bare, so its index serves),
the instant itself for ``timestamp with time zone``. A reading that occurs twice (the hour a DST
change repeats) is the later instant, one that does not exist (the hour DST skips) is read with the
offset before the change: PostgreSQL's own rule for ``AT TIME ZONE``, which DuckDB follows too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

# How naive timestamps are written to and read from SQLite (text that sorts in time order).
SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def wall_clock(moment: datetime, zone: str) -> datetime:
    """The naive reading a clock in ``zone`` shows at the instant ``moment`` (aware)."""
    if moment.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got the naive {moment.isoformat()}")
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def instant_of_wall_clock(reading: datetime, zone: str) -> datetime:
    """The instant (UTC) a naive ``reading`` of a clock in ``zone`` stands for.

    A repeated reading is its later occurrence, a skipped one is read with the offset before the
    change: both are the later of the two candidate instants (PostgreSQL's ``AT TIME ZONE``).
    """
    tz = ZoneInfo(zone)
    candidates = (reading.replace(tzinfo=tz, fold=0), reading.replace(tzinfo=tz, fold=1))
    return max(candidate.astimezone(UTC) for candidate in candidates)


def column_value(moment: datetime, zone: str | None, *, text: bool) -> datetime | str:
    """The value a column is compared with for the instant ``moment``.

    ``zone`` is the zone of a naive column's readings, None for a column of instants; ``text``
    for SQLite, whose timestamps are text in SQLITE_TIMESTAMP_FORMAT.
    """
    if zone is None:
        if text:
            raise ValueError("a SQLite column holds wall-clock text: it needs a zone")
        return moment.astimezone(UTC)
    reading = wall_clock(moment, zone)
    if not text:
        return reading
    # A whole second leaves its fraction off: text comparison then orders it right against
    # values stored with six digits ('... 03:00:00.000000') and without (SQLite's own
    # CURRENT_TIMESTAMP, '... 03:00:00') alike.
    if reading.microsecond == 0:
        return reading.strftime("%Y-%m-%d %H:%M:%S")
    return reading.strftime(SQLITE_TIMESTAMP_FORMAT)


def column_instant(value: datetime | date | str | None, zone: str | None) -> datetime | None:
    """The instant (UTC) a value read from a timestamp column stands for.

    Aware values (``timestamp with time zone``, text with an offset) are instants already; naive
    ones (and dates, their midnight) are readings of a clock in ``zone`` (UTC when None).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    return instant_of_wall_clock(value, zone or "UTC")
