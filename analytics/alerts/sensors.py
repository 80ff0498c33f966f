"""The Dagster shell of alerting: thin adapters over service.py and summary.py.

- ``alert_rules_sensor`` evaluates every rule and drains the outbox, every
  ``alerts.evaluation_interval``; its cursor holds the last evaluation's counts.
- ``alert_run_failure_sensor`` stores one notification per failed run of this code location (not
  per retry) before trying to send it; Slack being down loses nothing, the next drain sends it.
- ``alert_watchdog_sensor`` watches the rule evaluation's heartbeat, so an alert sensor that keeps
  failing is itself an alert.
- ``daily_summary_job`` builds the last 24 h summary; its schedule runs at ``alerts.summary.cron``.
"""

import json
from datetime import UTC, datetime

import dagster as dg

from analytics.alerts.delivery import (
    SlackWebSender,
    TransientError,
    deliver,
    sender_from_environment,
)
from analytics.alerts.service import (
    AlertRuntime,
    evaluate_and_deliver,
    notify_run_failure,
    watch_evaluation,
)
from analytics.alerts.settings import AlertsSettings
from analytics.alerts.summary import build_summary, render_chart
from housekeeping.history import RunHistory

GROUP = "alerts"
WILL_RETRY_TAG = "dagster/will_retry"


class AlertsResource(dg.ConfigurableResource):
    """Loads config, rules and the alert store when a tick or run starts."""

    config_file: str = ""

    def runtime(self) -> AlertRuntime:
        return AlertRuntime.load(self.config_file or None)


def build_alert_sensor(settings: AlertsSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name="alert_rules_sensor",
        minimum_interval_seconds=int(settings.evaluation_interval.total_seconds()),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Evaluates every alert rule over the published rollups and the housekeeping "
        "history, then sends pending notifications (Slack, or the console without a token).",
    )
    def alert_rules_sensor(
        context: dg.SensorEvaluationContext, alerts: AlertsResource
    ) -> dg.SensorResult:
        runtime = alerts.runtime()
        try:
            evaluation, delivery = evaluate_and_deliver(runtime, sender_from_environment())
        finally:
            runtime.close()
        for rule, error in evaluation.errors.items():
            context.log.error(f"rule {rule} failed to evaluate: {error}")
        if delivery.error:
            context.log.error(f"alert delivery stopped: {delivery.error}")
        for error in delivery.channel_errors:
            context.log.error(error)
        summary = (
            f"{evaluation.rules} rules, {evaluation.groups} groups: "
            f"{len(evaluation.active)} not ok, {len(evaluation.notifications)} new notifications, "
            f"{delivery.sent} sent, {delivery.waiting} waiting"
            + (f"; delivery: {delivery.error}" if delivery.error else "")
        )
        cursor = json.dumps(
            {
                "evaluated_at": evaluation.evaluated_at.isoformat(),
                "not_ok": len(evaluation.active),
                "waiting": delivery.waiting,
            }
        )
        return dg.SensorResult(skip_reason=summary, cursor=cursor)

    return alert_rules_sensor


@dg.run_failure_sensor(
    name="alert_run_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One alert per failed run of this code location (not per retry), stored before "
    "it is sent.",
)
def alert_run_failure_sensor(
    context: dg.RunFailureSensorContext, alerts: AlertsResource
) -> dg.SkipReason:
    run = context.dagster_run
    if run.tags.get(WILL_RETRY_TAG) == "true":
        return dg.SkipReason(f"run {run.run_id} will be retried: alerting on the final attempt")
    runtime = alerts.runtime()
    try:
        error = context.failure_event.message or ""
        added = notify_run_failure(
            runtime,
            run_id=run.run_id,
            root_run_id=run.root_run_id,
            job_name=run.job_name,
            error=error,
        )
        delivery = deliver(runtime.store, sender_from_environment(), runtime.settings)
    finally:
        runtime.close()
    if delivery.error:
        context.log.error(f"alert delivery stopped: {delivery.error}")
    state = "stored" if added else "already notified (a retry of the same run)"
    return dg.SkipReason(f"run {run.run_id}: {state}; {delivery.sent} sent")


@dg.sensor(
    name="alert_watchdog_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when the rule evaluation has not completed for several intervals.",
)
def alert_watchdog_sensor(alerts: AlertsResource) -> dg.SkipReason:
    runtime = alerts.runtime()
    try:
        if not watch_evaluation(runtime):
            return dg.SkipReason("rule evaluation is on time")
        delivery = deliver(runtime.store, sender_from_environment(), runtime.settings)
    finally:
        runtime.close()
    return dg.SkipReason(f"rule evaluation is late: alert stored, {delivery.sent} sent")


@dg.op(
    description="Builds the last 24 h summary, stores it in the outbox (once per day) and sends it.",
)
def send_daily_summary(context: dg.OpExecutionContext, alerts: AlertsResource) -> dg.Output[None]:
    runtime = alerts.runtime()
    now = datetime.now(UTC)
    try:
        summary = build_summary(
            runtime.analytics.database_path,
            RunHistory.from_config(runtime.config),
            runtime.store.engine,
            now,
        )
        channel = runtime.settings.summary.channel or runtime.settings.default_channel
        with runtime.store.transaction() as conn:
            added = runtime.store.enqueue(
                conn,
                [summary.notification(channel)],
                now=now,
                dedupe_key=f"summary:{summary.end.date()}",
            )
        sender = sender_from_environment(context.log.info)
        delivery = deliver(runtime.store, sender, runtime.settings)
        chart_path = runtime.analytics.root_path / "summaries" / f"{summary.end:%Y-%m-%d}.png"
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart = render_chart(summary)
        chart_path.write_bytes(chart)
        uploaded = False
        sent = [
            row
            for row in runtime.store.rows(status="sent")
            if row.notification.key.rule == "daily_summary"
            and row.notification.evaluated_at == summary.end
        ]
        if isinstance(sender, SlackWebSender) and sent and sent[-1].slack_channel:
            try:
                sender.upload(
                    sent[-1].slack_channel,
                    chart,
                    chart_path.name,
                    "Error rate and p95, last 24 h",
                    sent[-1].slack_ts,
                )
                uploaded = True
            except TransientError as exc:
                context.log.warning(f"chart not uploaded: {exc}")
    finally:
        runtime.close()
    if delivery.error:
        context.log.error(f"summary delivery stopped (it stays queued): {delivery.error}")
    return dg.Output(
        None,
        metadata={
            "stored": added > 0,
            "sent": delivery.sent,
            "requests": summary.requests or 0,
            "error_rate": summary.error_rate or 0.0,
            "alerts_fired": summary.alerts_fired,
            "chart": dg.MetadataValue.path(str(chart_path)),
            "chart_uploaded": uploaded,
            "summary": dg.MetadataValue.md(f"```\n{summary.text()}\n```"),
        },
    )


@dg.op(
    description="Deletes sent notifications and expired silences older than "
    "alerts.history_retention: the product's own tables have retention too.",
)
def purge_alert_history(context: dg.OpExecutionContext, alerts: AlertsResource) -> dg.Output[None]:
    runtime = alerts.runtime()
    try:
        cutoff = datetime.now(UTC) - runtime.settings.history_retention
        purged = runtime.store.purge(cutoff)
    finally:
        runtime.close()
    context.log.info(f"purged alert history before {cutoff:%Y-%m-%d %H:%M} UTC: {purged}")
    return dg.Output(None, metadata={**purged, "cutoff": cutoff.isoformat()})


@dg.job(
    description="Sends the daily summary of the last 24 h (cleanup, requests, jobs, alerts) with "
    "a chart of error rate and p95, then applies the alert history's retention.",
    tags={"kind": "slack"},
)
def daily_summary_job() -> None:
    send_daily_summary()
    purge_alert_history()


def build_summary_schedule(settings: AlertsSettings, timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_summary_schedule",
        job=daily_summary_job,
        cron_schedule=settings.summary.cron,
        execution_timezone=settings.summary.timezone or timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The daily summary ({settings.summary.cron}, "
        f"{settings.summary.timezone or timezone}).",
    )
