"""The incidents the generated traffic carries, and where in the time range they go.

At fixed fractions of the range: an error burst on one route, a slow period, a gap without any
request log, a burst of 429s, a streak of failing webhook jobs, and one stuck job (placed by the
jobs generator). The default alert rules should catch each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

import numpy as np


class IncidentKind(StrEnum):
    ERROR_BURST = "error_burst"
    SLOW_PERIOD = "slow_period"
    TRAFFIC_GAP = "traffic_gap"
    RATE_LIMIT_BURST = "rate_limit_burst"
    JOB_FAILURE_STREAK = "job_failure_streak"
    STUCK_JOB = "stuck_job"


class Incident(NamedTuple):
    """An injected incident: rows with ``start <= ts < end`` (on ``route`` when given) show it."""

    kind: IncidentKind
    start: datetime
    end: datetime
    route: str | None


INCIDENT_LAYOUT = (  # kind, fraction of the range where it starts, minutes, route
    (IncidentKind.ERROR_BURST, 0.30, 20, "/api/v1/payments"),
    (IncidentKind.SLOW_PERIOD, 0.45, 30, None),
    (IncidentKind.JOB_FAILURE_STREAK, 0.55, 60, None),
    (IncidentKind.TRAFFIC_GAP, 0.70, 20, None),
    (IncidentKind.RATE_LIMIT_BURST, 0.85, 15, None),
)
# The incidents the request logs show; the others are in the jobs table.
REQUEST_INCIDENTS = frozenset(
    {
        IncidentKind.ERROR_BURST,
        IncidentKind.SLOW_PERIOD,
        IncidentKind.TRAFFIC_GAP,
        IncidentKind.RATE_LIMIT_BURST,
    }
)


@dataclass(frozen=True)
class Window:
    """A time range in microseconds, ``start_us <= t < end_us``."""

    start_us: int
    end_us: int

    def mask(self, times: np.ndarray) -> np.ndarray:
        """Which of ``times`` (µs) fall in the window."""
        return (times >= self.start_us) & (times < self.end_us)
