"""What one alert tick does, for the sensors and the `hk alerts` commands alike (no Dagster here).

- ``evaluate_and_deliver``: every rule once (evaluate.py), then drain the outbox (delivery.py);
  rules that failed to evaluate become one SYSTEM notification each per day;
- ``deliver_outbox``: drain the outbox with the messages' details (a policy's last error);
- ``notify_run_failure``: one notification per failed Dagster run (not per retry), naming the
  failing step and the first line of its error;
- ``watch_evaluation``: the evaluation's heartbeat, checked by another sensor, so an alert sensor
  that keeps failing is itself an alert;
- ``deliver_daily_summary``: the last 24 h summary through the outbox, with its chart;
- ``apply_history_retention``: the retention of the product's own alert tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from analytics.alerts.catalog import BUILTIN_METRICS, GroupBy, Source
from analytics.alerts.delivery import DeliveryReport, deliver
from analytics.alerts.evaluate import EvaluationReport, evaluate_rules
from analytics.alerts.messages import (
    SUMMARY_CHART_TITLE,
    evaluation_late_message,
    first_error_line,
    rule_error_message,
    run_failure_message,
)
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import (
    AlertKey,
    Notification,
    NotificationKind,
    OutboxStatus,
    Severity,
)
from analytics.alerts.rules import RulePack
from analytics.alerts.settings import AlertsSettings, alerts_settings
from analytics.alerts.slack import Sender, SlackWebSender, TransientError
from analytics.alerts.store import AlertStore
from analytics.alerts.summary import SUMMARY_RULE, DailySummary, build_summary, render_chart
from analytics.settings import AnalyticsSettings, analytics_settings
from housekeeping.config import HousekeepingConfig, database_url, load_config
from housekeeping.database import AppDatabase, DatabaseError
from housekeeping.history import RunHistory

EVALUATION_HEARTBEAT = "alert_evaluation"
# The evaluation is late when its heartbeat is older than this many intervals.
MISSED_EVALUATIONS = 3
SYSTEM_RULE = "alerting"


@dataclass
class AlertRuntime:
    """The loaded config, settings and rules, and the alert store they name."""

    config: HousekeepingConfig
    settings: AlertsSettings
    analytics: AnalyticsSettings
    rules: RulePack
    store: AlertStore

    @classmethod
    def load(cls, config_file: str | None = None) -> AlertRuntime:
        config = load_config(config_file)
        source = config_file or "config"
        settings = alerts_settings(config, source)
        return cls(
            config=config,
            settings=settings,
            analytics=analytics_settings(config, source),
            rules=settings.load_rules(config.health),
            store=AlertStore(settings.database_url),
        )

    def close(self) -> None:
        self.store.dispose()

    def metric_source(self) -> MetricSource:
        return MetricSource(
            self.analytics.database_path,
            RunHistory.from_config(self.config),
            app_database_answers,
            rollup_root=self.analytics.root_path,
        )

    def system_notification(
        self,
        group: str,
        title: str,
        text: str,
        now: datetime,
        run_id: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Notification:
        severity = Severity.HIGH
        return Notification(
            key=AlertKey(SYSTEM_RULE, group),
            kind=NotificationKind.RUN_FAILURE if run_id else NotificationKind.SYSTEM,
            severity=severity,
            channel=self.settings.channel_for()[severity],
            title=title,
            text=text,
            evaluated_at=now,
            run_id=run_id,
            labels=labels or {},
        )


class MessageDetails:
    """The extra lines of a notification's message (delivery.deliver's ``details``): for a
    housekeeping-health alert that is not resolved, the policy's last error (first line, secrets
    redacted) from the run history, opened on first use; ``close`` releases it."""

    def __init__(self, config: HousekeepingConfig) -> None:
        self.config = config
        self.history: RunHistory | None = None

    def __call__(self, notification: Notification) -> Sequence[str]:
        spec = BUILTIN_METRICS.get(notification.labels.get("metric", ""))
        policy = notification.labels.get(GroupBy.POLICY.value)
        if (
            spec is None
            or spec.source not in (Source.POLICY_HEALTH, Source.POLICY_FAILURES)
            or not policy
            or notification.kind is NotificationKind.RESOLVED
        ):
            return ()
        if self.history is None:
            self.history = RunHistory.from_config(self.config)
        error = self.history.health(policy).last_error
        return (f"Last error of {policy}: {first_error_line(error)}",) if error else ()

    def close(self) -> None:
        if self.history is not None:
            self.history.dispose()


def deliver_outbox(
    runtime: AlertRuntime, sender: Sender, respect_backoff: bool = True
) -> DeliveryReport:
    """Send what waits in the outbox (delivery.deliver) with the messages' details;
    ``respect_backoff=False`` tries rows waiting out a retry backoff now."""
    details = MessageDetails(runtime.config)
    try:
        return deliver(
            runtime.store,
            sender,
            runtime.settings,
            respect_backoff=respect_backoff,
            details=details,
        )
    finally:
        details.close()


def app_database_answers() -> bool:
    """Whether the application database ($DATABASE_URL) answers a trivial query."""
    try:
        database = AppDatabase(database_url())
    except DatabaseError:
        return False
    try:
        with database.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except (DatabaseError, sa.exc.SQLAlchemyError):
        return False
    finally:
        database.dispose()


def evaluate_and_deliver(
    runtime: AlertRuntime, sender: Sender, now: datetime | None = None
) -> tuple[EvaluationReport, DeliveryReport]:
    now = now or datetime.now(UTC)
    with runtime.metric_source() as metrics:
        report = evaluate_rules(
            runtime.rules, metrics, runtime.store, now, runtime.settings.channel_for()
        )
    for rule, error in sorted(report.errors.items()):
        notification = runtime.system_notification(
            f"rule:{rule}", *rule_error_message(rule, error), now
        )
        with runtime.store.transaction() as conn:
            runtime.store.enqueue(
                conn, [notification], now=now, dedupe_key=f"rule_error:{rule}:{now.date()}"
            )
    runtime.store.beat(EVALUATION_HEARTBEAT, now, f"{report.rules} rules, {report.groups} groups")
    return report, deliver_outbox(runtime, sender)


def notify_run_failure(
    runtime: AlertRuntime,
    *,
    run_id: str,
    root_run_id: str | None,
    job_name: str,
    error: str,
    step: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Store one notification for a failed run (retries of one run share it); True if new.

    ``step`` is the failing step's key and ``error`` its error (else the run's failure
    message); the message carries the step, the error's first line (secrets redacted) and a
    link to the run.
    """
    now = now or datetime.now(UTC)
    labels = {"job": job_name, **({"step": step} if step else {})}
    notification = runtime.system_notification(
        f"job:{job_name}",
        *run_failure_message(job_name, run_id, error, step),
        now,
        run_id=run_id,
        labels=labels,
    )
    with runtime.store.transaction() as conn:
        added = runtime.store.enqueue(
            conn, [notification], now=now, dedupe_key=f"run_failure:{root_run_id or run_id}"
        )
    return added > 0


def watch_evaluation(runtime: AlertRuntime, now: datetime | None = None) -> bool:
    """Alert once when the rule evaluation has not completed for several intervals."""
    now = now or datetime.now(UTC)
    last = runtime.store.last_beat(EVALUATION_HEARTBEAT)
    allowed = runtime.settings.evaluation_interval * MISSED_EVALUATIONS + timedelta(minutes=1)
    if last is None or now - last <= allowed:
        return False
    notification = runtime.system_notification("evaluation", *evaluation_late_message(last), now)
    with runtime.store.transaction() as conn:
        added = runtime.store.enqueue(
            conn, [notification], now=now, dedupe_key=f"evaluation_stale:{last.isoformat()}"
        )
    return added > 0


@dataclass(frozen=True)
class SummaryReport:
    """What ``deliver_daily_summary`` did: for the job's metadata and log."""

    summary: DailySummary
    stored: bool  # False: today's summary was already in the outbox
    delivery: DeliveryReport
    chart_path: Path
    chart_uploaded: bool
    upload_error: str | None = None  # why the chart did not reach Slack (the message did)


def deliver_daily_summary(
    runtime: AlertRuntime, sender: Sender, now: datetime | None = None
) -> SummaryReport:
    """Build the last 24 h summary, store it in the outbox (once per day), and send the outbox.

    The chart (PNG) is saved as ``<analytics.root>/summaries/<day>.png`` and, when the sender is
    the Slack Web API and the summary was sent, uploaded in the summary message's thread; an
    upload Slack refuses for a while is reported in ``upload_error``, not raised.
    """
    now = now or datetime.now(UTC)
    summary = build_summary(
        runtime.analytics.database_path,
        RunHistory.from_config(runtime.config),
        runtime.store.engine,
        now,
        rollup_root=runtime.analytics.root_path,
    )
    channel = runtime.settings.summary.channel or runtime.settings.default_channel
    with runtime.store.transaction() as conn:
        added = runtime.store.enqueue(
            conn,
            [summary.notification(channel)],
            now=now,
            dedupe_key=f"summary:{summary.end.date()}",
        )
    delivery = deliver_outbox(runtime, sender)
    chart_path = runtime.analytics.root_path / "summaries" / f"{summary.end:%Y-%m-%d}.png"
    chart_path.parent.mkdir(parents=True, exist_ok=True)
    chart = render_chart(summary)
    chart_path.write_bytes(chart)
    uploaded, upload_error = False, None
    sent = [
        row
        for row in runtime.store.rows(status=OutboxStatus.SENT)
        if row.notification.key.rule == SUMMARY_RULE
        and row.notification.evaluated_at == summary.end
    ]
    if isinstance(sender, SlackWebSender) and sent and sent[-1].slack_channel:
        try:
            sender.upload(
                sent[-1].slack_channel,
                chart,
                chart_path.name,
                SUMMARY_CHART_TITLE,
                sent[-1].slack_ts,
            )
            uploaded = True
        except TransientError as exc:
            upload_error = str(exc)
    return SummaryReport(summary, added > 0, delivery, chart_path, uploaded, upload_error)


def apply_history_retention(
    runtime: AlertRuntime, now: datetime | None = None
) -> tuple[datetime, dict[str, int]]:
    """Delete sent notifications and expired silences older than ``alerts.history_retention``.

    Returns the cutoff and the rows deleted per table (``outbox_rows``, ``silences``).
    """
    cutoff = (now or datetime.now(UTC)) - runtime.settings.history_retention
    return cutoff, runtime.store.purge(cutoff)
