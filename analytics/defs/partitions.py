"""Time partitions of the rollup assets: hours in UTC for minute rollups."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from analytics.settings import AnalyticsSettings

HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def hourly_partitions(settings: AnalyticsSettings) -> dg.HourlyPartitionsDefinition:
    return dg.HourlyPartitionsDefinition(
        start_date=datetime.combine(settings.partitions_start, datetime.min.time()),
        timezone="UTC",
        fmt=HOUR_KEY_FORMAT,
    )


def daily_partitions(settings: AnalyticsSettings, timezone: str) -> dg.DailyPartitionsDefinition:
    """Days in the analytics time zone (DST days are 23 or 25 hours long), today included.

    ``end_offset=1``: today is a partition too, so month-to-date figures can be refreshed during
    the day (re-materialising it replaces it).
    """
    return dg.DailyPartitionsDefinition(
        start_date=datetime.combine(settings.partitions_start, datetime.min.time()),
        timezone=timezone,
        end_offset=1,
    )


def hour_partition_key(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime(HOUR_KEY_FORMAT)
