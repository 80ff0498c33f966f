"""Keeping the current hour fresh: the incremental refresh the freshness sensor runs every minute.

Each refresh re-reads the source rows newer than the previous watermark minus
``late_commit_overlap`` (rows committed a little late still land), recomputes those minutes and
replaces them in the current hour's partition. The watermark is the database clock taken before
the read, kept by the caller (the sensor's cursor). Closed hours are finalised by a partition run
of the requests asset once ``late_row_grace`` has passed; ``refresh_recent`` says which are due.

Plain Python with an injectable clock: the lag test drives it minute by minute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from analytics.extract import SourceError
from analytics.logs.manifest import LogSourceError
from analytics.publish import RollupStore
from analytics.rollups.engine import HOUR, RollupResult, floor_hour, floor_minute
from analytics.rollups.jobs import refresh_jobs
from analytics.rollups.requests import refresh_requests
from analytics.settings import AnalyticsSettings
from housekeeping.database import AppDatabase

MAX_FINALISE_BACKLOG = 48 * HOUR


@dataclass(frozen=True)
class FreshnessCursor:
    # The database clock when the previous refresh started reading.
    watermark: datetime | None = None
    # The first hour not yet handed over for finalisation.
    next_hour_to_finalise: datetime | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "watermark": self.watermark.isoformat() if self.watermark else None,
                "next_hour_to_finalise": (
                    self.next_hour_to_finalise.isoformat() if self.next_hour_to_finalise else None
                ),
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> FreshnessCursor:
        if not text:
            return cls()
        data = json.loads(text)

        def moment(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value).astimezone(UTC) if value else None

        return cls(moment("watermark"), moment("next_hour_to_finalise"))


@dataclass(frozen=True)
class RefreshOutcome:
    cursor: FreshnessCursor
    result: RollupResult
    hours_to_finalise: tuple[datetime, ...]

    def summary(self) -> str:
        result = self.result
        through = (
            self.cursor.watermark.strftime("%Y-%m-%d %H:%M:%S") if self.cursor.watermark else "?"
        )
        text = (
            f"refreshed {result.dataset} from {result.start:%H:%M} UTC ({result.rows_read:,} rows, "
            f"{result.seconds:.2f} s); complete through {through} UTC"
        )
        if self.hours_to_finalise:
            text += f"; finalising {len(self.hours_to_finalise)} closed hour(s)"
        return text


def refresh_recent_jobs(
    db: AppDatabase, store: RollupStore, settings: AnalyticsSettings, now: datetime
) -> str:
    """Recompute the jobs of the current hour and of the hours still within the late-row grace.

    Hours of jobs are cheap (one pass over the jobs table, which job retention keeps small), so
    the sensor finalises them itself: backlog and stuck snapshots stay as fresh as the requests.
    Without a jobs table (not every application has one), or with job log files it cannot read,
    this says so and does nothing.
    """
    now = now.astimezone(UTC)
    start = floor_hour(now - settings.late_row_grace)
    try:
        result = refresh_jobs(db, store, settings, start, floor_hour(now) + HOUR, now)
    except (SourceError, LogSourceError) as exc:
        return f"jobs rollup skipped: {exc}"
    return f"jobs from {result.start:%H:%M} UTC ({result.rows_read:,} jobs, {result.seconds:.2f} s)"


def refresh_recent(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    cursor: FreshnessCursor,
    now: datetime,
) -> RefreshOutcome:
    """Refresh the minutes since the watermark (minus the overlap) up to ``now``."""
    now = now.astimezone(UTC)
    oldest = floor_hour(now - settings.max_catch_up)
    if cursor.watermark is None:
        start = floor_hour(now - settings.late_row_grace)
    else:
        start = floor_minute(min(cursor.watermark, now) - settings.late_commit_overlap)
    start = max(start, oldest)
    end = floor_hour(now) + HOUR
    result = refresh_requests(db, store, settings, start, end)

    next_hour = cursor.next_hour_to_finalise or floor_hour(now - settings.late_row_grace)
    # After a long pause, hand over at most two days; older hours are a backfill from the UI.
    next_hour = max(next_hour, floor_hour(now) - MAX_FINALISE_BACKLOG)
    due = []
    while next_hour + HOUR + settings.late_row_grace <= now:
        due.append(next_hour)
        next_hour += HOUR
    return RefreshOutcome(FreshnessCursor(now, next_hour), result, tuple(due))
