"""The daily summary: the last 24 hours in one Slack message, with a chart of error rate and p95.

Built from the same sources as the rules (published rollups, read-only; the housekeeping run
history; the alert outbox), so the numbers match what analysts and alerts see. The text goes
through the outbox like every alert (stored before it is sent, once per day); the chart is saved
next to the rollups and uploaded to Slack when a bot token is configured.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import sqlalchemy as sa

from analytics.alerts.metrics import window_bounds
from analytics.alerts.model import AlertKey, Notification, NotificationKind
from analytics.alerts.store import outbox
from analytics.sandbox import open_rollups, rollup_store
from housekeeping.history import RunHistory, RunStatus

SUMMARY_RULE = "daily_summary"
TOP_ROUTES = 5


@dataclass
class PolicySummary:
    policy: str
    runs: int
    failed: int
    deleted: int
    status: str


@dataclass
class DailySummary:
    start: datetime
    end: datetime
    policies: list[PolicySummary] = field(default_factory=list)
    requests: int | None = None
    error_rate: float | None = None
    p95_ms: float | None = None
    top_failing_routes: list[tuple[str, int, float]] = field(default_factory=list)
    jobs_completed: int | None = None
    jobs_failed: int | None = None
    jobs_backlog: int | None = None
    alerts_fired: int = 0
    alerts_resolved: int = 0
    # (hour, error rate, p95 ms) for the chart
    hourly: list[tuple[datetime, float | None, float | None]] = field(default_factory=list)

    def text(self) -> str:
        day = f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"
        lines = [f"Daily summary, {day}"]
        if self.policies:
            lines.append("Housekeeping:")
            lines += [
                f"  {item.policy}: {item.runs} runs, {item.failed} failed, "
                f"{item.deleted:,} rows deleted, {item.status}"
                for item in self.policies
            ]
        else:
            lines.append("Housekeeping: no runs recorded")
        if self.requests is None:
            lines.append("Requests: no published rollups")
        else:
            rate = f"{self.error_rate:.2%}" if self.error_rate is not None else "n/a"
            p95 = f"{self.p95_ms:,.0f} ms" if self.p95_ms is not None else "n/a"
            lines.append(f"Requests: {self.requests:,}, error rate {rate}, p95 {p95}")
            if self.top_failing_routes:
                lines.append("Top failing routes:")
                lines += [
                    f"  {route}: {errors:,} errors ({rate:.1%})"
                    for route, errors, rate in self.top_failing_routes
                ]
        if self.jobs_completed is not None:
            lines.append(
                f"Jobs: {self.jobs_completed:,} completed, {self.jobs_failed:,} failed, "
                f"backlog {self.jobs_backlog if self.jobs_backlog is not None else 'n/a'}"
            )
        lines.append(f"Alerts: {self.alerts_fired} fired, {self.alerts_resolved} resolved")
        return "\n".join(lines)

    def notification(self, channel: str) -> Notification:
        return Notification(
            key=AlertKey(SUMMARY_RULE, ""),
            kind=NotificationKind.SUMMARY,
            severity=None,
            channel=channel,
            title=f"Daily summary {self.end:%Y-%m-%d}",
            text=self.text(),
            evaluated_at=self.end,
        )


def build_summary(
    views_database: Path,
    history: RunHistory | None,
    alert_engine: sa.Engine | None,
    now: datetime,
    hours: int = 24,
    rollup_root: Path | None = None,
) -> DailySummary:
    """The last ``hours`` of requests, jobs, cleanups and alerts up to ``now``.

    The rollups are read through the sandboxed connection every reader uses (it keeps working
    while an analyst holds the views file); ``rollup_root`` defaults to the one the views file's
    manifest records.
    """
    start, end = window_bounds(now, timedelta(hours=hours))
    summary = DailySummary(start=start.replace(tzinfo=UTC), end=end.replace(tzinfo=UTC))
    if history is not None:
        for policy in history.policies():
            runs = [run for run in history.recent(policy, limit=500) if run.finished_at <= now]
            today = [run for run in runs if run.finished_at > now - timedelta(hours=hours)]
            summary.policies.append(
                PolicySummary(
                    policy=policy,
                    runs=len(today),
                    failed=sum(1 for run in today if run.status is RunStatus.FAILED),
                    deleted=sum(run.deleted for run in today),
                    status=history.health(policy, runs).status.value,
                )
            )
    if Path(views_database).exists():
        store = rollup_store(Path(views_database), rollup_root)
        with open_rollups(store, timezone="UTC") as connection:
            _requests(connection, summary, start, end)
            _jobs(connection, summary, start, end)
    if alert_engine is not None:
        query = (
            sa.select(outbox.c.kind, sa.func.count())
            .where(
                outbox.c.evaluated_at >= summary.start,
                outbox.c.evaluated_at < summary.end,
                outbox.c.kind.in_([NotificationKind.FIRING.value, NotificationKind.RESOLVED.value]),
            )
            .group_by(outbox.c.kind)
        )
        with alert_engine.connect() as conn:
            counts = {NotificationKind(kind): count for kind, count in conn.execute(query).all()}
        summary.alerts_fired = int(counts.get(NotificationKind.FIRING, 0))
        summary.alerts_resolved = int(counts.get(NotificationKind.RESOLVED, 0))
    return summary


def _requests(
    connection: duckdb.DuckDBPyConnection, summary: DailySummary, start: datetime, end: datetime
) -> None:
    try:
        overall = connection.execute(
            "SELECT requests, error_rate, latency_p95_ms FROM request_stats_overall($s, $e)",
            {"s": start, "e": end},
        ).fetchall()
        routes = connection.execute(
            "SELECT route, status_5xx, error_rate FROM request_stats($s, $e) "
            f"WHERE status_5xx > 0 ORDER BY status_5xx DESC, route LIMIT {TOP_ROUTES}",
            {"s": start, "e": end},
        ).fetchall()
        hourly = connection.execute(
            "SELECT hour, error_rate, latency_p95_ms FROM requests_hourly_overall "
            "WHERE hour >= $s AND hour < $e ORDER BY hour",
            {"s": start, "e": end},
        ).fetchall()
    except duckdb.CatalogException:
        return
    summary.requests = int(overall[0][0]) if overall else 0
    if overall:
        summary.error_rate, summary.p95_ms = overall[0][1], overall[0][2]
    summary.top_failing_routes = [(str(r), int(n), float(rate)) for r, n, rate in routes]
    summary.hourly = [(hour, rate, p95) for hour, rate, p95 in hourly]


def _jobs(
    connection: duckdb.DuckDBPyConnection, summary: DailySummary, start: datetime, end: datetime
) -> None:
    try:
        row = connection.execute(
            "SELECT sum(completed), sum(failed) FROM jobs_hourly WHERE hour >= $s AND hour < $e",
            {"s": start, "e": end},
        ).fetchone()
        backlog = connection.execute(
            "SELECT sum(backlog) FROM jobs_hourly WHERE hour = "
            "(SELECT max(hour) FROM jobs_hourly WHERE hour < $e)",
            {"e": end},
        ).fetchone()
    except duckdb.CatalogException:
        return
    summary.jobs_completed = int(row[0] or 0)
    summary.jobs_failed = int(row[1] or 0)
    summary.jobs_backlog = int(backlog[0]) if backlog and backlog[0] is not None else None


def render_chart(summary: DailySummary) -> bytes:
    """A PNG: error rate and p95 per hour across the day."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    hours = [hour for hour, _, _ in summary.hourly]
    error_rates = [(rate or 0.0) * 100 for _, rate, _ in summary.hourly]
    p95s = [p95 or 0.0 for _, _, p95 in summary.hourly]
    figure, left = plt.subplots(figsize=(8, 3), dpi=100)
    try:
        left.plot(hours, error_rates, color="#d62728", label="error rate (%)")
        left.set_ylabel("error rate (%)", color="#d62728")
        right = left.twinx()
        right.plot(hours, p95s, color="#1f77b4", label="p95 (ms)")
        right.set_ylabel("p95 (ms)", color="#1f77b4")
        left.set_title(f"Last 24 h to {summary.end:%Y-%m-%d %H:%M} UTC")
        figure.autofmt_xdate()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)
