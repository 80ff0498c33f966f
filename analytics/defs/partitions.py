"""Time partitions of the rollup assets: UTC hours for the hourly rollups, local days for the daily."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import dagster as dg

from analytics.publish import hour_key
from analytics.settings import AnalyticsSettings

# Dagster's own hourly key format, which the UI, run keys and backfill ranges show.
HOUR_PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


class Partitioning(Enum):
    """How a rollup asset is partitioned."""

    HOURLY = "hourly"  # UTC hours; one Parquet file per hour
    DAILY = "daily"  # days in the analytics time zone; one Parquet file per day
    NONE = "none"  # one materialization rewrites (or appends to) the dataset


def hourly_partitions(settings: AnalyticsSettings) -> dg.HourlyPartitionsDefinition:
    """UTC hours from ``analytics.partitions_start``, keyed as ``hour_partition_key`` writes."""
    return dg.HourlyPartitionsDefinition(
        start_date=datetime.combine(settings.partitions_start, datetime.min.time()),
        timezone="UTC",
        fmt=HOUR_PARTITION_FORMAT,
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


def partitions_for(
    partitioning: Partitioning, settings: AnalyticsSettings, timezone: str
) -> dg.PartitionsDefinition | None:
    """The partitions definition of ``partitioning``; None for an unpartitioned asset."""
    if partitioning is Partitioning.HOURLY:
        return hourly_partitions(settings)
    if partitioning is Partitioning.DAILY:
        return daily_partitions(settings, timezone)
    return None


def hour_partition_key(hour: datetime) -> str:
    """The Dagster partition key of ``hour`` (an aware datetime), e.g. ``2026-05-01-13:00``."""
    return hour_key(hour, HOUR_PARTITION_FORMAT)
