"""The plan of one seed: volumes per table, the traffic curve per minute, where incidents go.

Everything is a pure function of ``seed``, ``now`` and the volume knobs. The curve has a daily and
a weekly cycle with some noise; rows are drawn per minute from it, in chunks of ``CHUNK_ROWS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from housekeeping.demo.clock import DAY_US, HOUR_US, MINUTE_US, from_us, to_us
from housekeeping.demo.incidents import (
    INCIDENT_LAYOUT,
    REQUEST_INCIDENTS,
    Incident,
    IncidentKind,
    Window,
)
from housekeeping.demo.schema import REFERENCE_TABLES

CHUNK_ROWS = 200_000
_TABLE_SEEDS = {table: number for number, table in enumerate(REFERENCE_TABLES)}


@dataclass
class Observed:
    """Facts only known once the rows are drawn."""

    stuck_job_started_us: int | None = None


@dataclass(frozen=True)
class Plan:
    """Volumes, the per-minute traffic weights and the incident windows of one seed (times in µs)."""

    seed: int
    now_us: int
    start_us: int
    origin_us: int  # first whole minute at or after start: the traffic curve is per minute
    minute_weights: np.ndarray
    tokens: int
    requests: int
    audit: int
    jobs: int
    api_usage: int
    users: int
    windows: dict[IncidentKind, Window]
    stuck_job_start_us: int

    @classmethod
    def build(cls, *, tokens: int, requests: int, days: int, seed: int, now: datetime) -> Plan:
        """The plan for ``days`` up to ``now``: the other tables scale with ``requests``."""
        now_us = to_us(now)
        start_us = now_us - days * DAY_US
        origin_us = -(-start_us // MINUTE_US) * MINUTE_US
        minutes = (now_us // MINUTE_US * MINUTE_US - origin_us) // MINUTE_US
        windows = {}
        for kind, fraction, length, _route in INCIDENT_LAYOUT:
            first = int(fraction * minutes)
            windows[kind] = Window(
                origin_us + first * MINUTE_US, origin_us + (first + length) * MINUTE_US
            )
        rng = np.random.default_rng([seed, 99])
        minute_starts = origin_us + np.arange(minutes, dtype=np.int64) * MINUTE_US
        hours = (minute_starts % DAY_US) / HOUR_US
        # Busiest mid-afternoon UTC, quietest before dawn; weekends at 60 %.
        daily = 0.22 + 0.78 * (0.5 - 0.5 * np.cos(2 * np.pi * (hours - 4.0) / 24.0))
        weekday = (minute_starts // DAY_US + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
        weekly = np.where(weekday >= 5, 0.6, 1.0)
        noise = rng.lognormal(0.0, 0.15, minutes)
        handful = 10 if requests else 0
        return cls(
            seed=seed,
            now_us=now_us,
            start_us=start_us,
            origin_us=origin_us,
            minute_weights=daily * weekly * noise,
            tokens=tokens,
            requests=requests,
            audit=max(requests // 50, handful),
            jobs=max(requests // 20, 2 * handful),
            api_usage=max(requests // 10, handful),
            users=int(np.clip((tokens + requests) // 100, 100, 1_000_000)),
            windows=windows,
            stuck_job_start_us=now_us - 3 * HOUR_US,
        )

    def rng(self, table: str) -> np.random.Generator:
        """The table's own random stream, so one table's volume never changes another's rows."""
        return np.random.default_rng([self.seed, _TABLE_SEEDS[table]])

    def minute_counts(self, rng: np.random.Generator, rows: int, *, gap: bool) -> np.ndarray:
        """``rows`` spread over the minutes along the curve; none in the traffic gap with ``gap``."""
        weights = self.minute_weights.copy()
        if gap:
            window = self.windows[IncidentKind.TRAFFIC_GAP]
            first = (window.start_us - self.origin_us) // MINUTE_US
            weights[first : first + (window.end_us - window.start_us) // MINUTE_US] = 0.0
        return rng.multinomial(rows, weights / weights.sum())

    def incidents(self, row_counts: dict[str, int], observed: Observed) -> tuple[Incident, ...]:
        """The incidents that made it into the data (a table with no rows shows none), by start."""
        incidents = []
        for kind, _fraction, _length, route in INCIDENT_LAYOUT:
            table = "request_logs" if kind in REQUEST_INCIDENTS else "jobs"
            if row_counts[table]:
                window = self.windows[kind]
                incidents.append(
                    Incident(kind, from_us(window.start_us), from_us(window.end_us), route)
                )
        if observed.stuck_job_started_us is not None:
            incidents.append(
                Incident(
                    IncidentKind.STUCK_JOB,
                    from_us(observed.stuck_job_started_us),
                    from_us(self.now_us),
                    None,
                )
            )
        incidents.sort(key=lambda incident: incident.start)
        return tuple(incidents)


def minute_chunks(
    counts: np.ndarray, origin_us: int, rng: np.random.Generator
) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first row, sorted timestamps in µs) per chunk of about CHUNK_ROWS rows."""
    cumulative = np.concatenate(([0], np.cumsum(counts)))
    first_minute = 0
    while first_minute < len(counts):
        wanted = cumulative[first_minute] + CHUNK_ROWS
        last_minute = int(np.searchsorted(cumulative, wanted, side="left"))
        last_minute = min(max(last_minute, first_minute + 1), len(counts))
        rows = int(cumulative[last_minute] - cumulative[first_minute])
        if rows:
            minutes = np.repeat(
                np.arange(first_minute, last_minute), counts[first_minute:last_minute]
            )
            times = origin_us + minutes * MINUTE_US + rng.integers(0, MINUTE_US, rows)
            times.sort()
            yield int(cumulative[first_minute]), times
        first_minute = last_minute
