"""Time as the generator counts it: integer microseconds since the Unix epoch, in UTC.

Vectorised numpy code draws times as int64 microseconds; these convert at the edges.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def resolve_now(now: datetime | None) -> datetime:
    """The run's ``now`` in UTC (the current time when None); a naive datetime is a ValueError."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")
    return now.astimezone(UTC)


def to_us(moment: datetime) -> int:
    """A zone-aware datetime -> microseconds since the epoch."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(value: int) -> datetime:
    """Microseconds since the epoch -> a UTC datetime."""
    return EPOCH + timedelta(microseconds=int(value))
