"""``daily_summary_job``: the daily summary, then the alert history's retention.

Both ops are thin adapters over service.py: they load the runtime, call the use case, and report
what it did as metadata and log lines.
"""

import dagster as dg

from analytics.alerts.defs.resources import AlertsResource
from analytics.alerts.service import apply_history_retention, deliver_daily_summary
from analytics.alerts.slack import sender_from_environment
from housekeeping.dagster_runs import MANUAL


@dg.op(
    description="Builds the last 24 h summary, stores it in the outbox (once per day) and sends it.",
)
def send_daily_summary(context: dg.OpExecutionContext, alerts: AlertsResource) -> dg.Output[None]:
    runtime = alerts.runtime()
    try:
        report = deliver_daily_summary(runtime, sender_from_environment(context.log.info))
    finally:
        runtime.close()
    if report.upload_error:
        context.log.warning(f"chart not uploaded: {report.upload_error}")
    if report.delivery.error:
        context.log.error(f"summary delivery stopped (it stays queued): {report.delivery.error}")
    summary = report.summary
    return dg.Output(
        None,
        metadata={
            "stored": report.stored,
            "sent": report.delivery.sent,
            "requests": summary.requests or 0,
            "error_rate": summary.error_rate or 0.0,
            "alerts_fired": summary.alerts_fired,
            "chart": dg.MetadataValue.path(str(report.chart_path)),
            "chart_uploaded": report.chart_uploaded,
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
        cutoff, purged = apply_history_retention(runtime)
    finally:
        runtime.close()
    context.log.info(f"purged alert history before {cutoff:%Y-%m-%d %H:%M} UTC: {purged}")
    return dg.Output(None, metadata={**purged, "cutoff": cutoff.isoformat()})


@dg.job(
    description="Sends the daily summary of the last 24 h (cleanup, requests, jobs, alerts) with "
    "a chart of error rate and p95, then applies the alert history's retention.",
    tags={"kind": "slack", **MANUAL},
)
def daily_summary_job() -> None:
    send_daily_summary()
    purge_alert_history()
