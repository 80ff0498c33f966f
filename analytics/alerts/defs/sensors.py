"""The alerting sensors: thin adapters over service.py.

- ``alert_rules_sensor`` evaluates every rule and drains the outbox, every
  ``alerts.evaluation_interval``; its cursor holds the last evaluation's counts.
- ``alert_run_failure_sensor`` stores one notification per failed run of this code location (not
  per retry) before trying to send it; Slack being down loses nothing, the next drain sends it.
- ``alert_watchdog_sensor`` watches the rule evaluation's heartbeat, so an alert sensor that keeps
  failing is itself an alert.
"""

import json

import dagster as dg

from analytics.alerts.defs.resources import AlertsResource
from analytics.alerts.service import (
    deliver_outbox,
    evaluate_and_deliver,
    notify_run_failure,
    watch_evaluation,
)
from analytics.alerts.settings import AlertsSettings
from analytics.alerts.slack import sender_from_environment

WILL_RETRY_TAG = "dagster/will_retry"


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
    # The first failed step and its error say more than the run's "Steps failed: [...]".
    # Dagster wraps the op's exception ("Error occurred while executing op ..."): its innermost
    # cause is what the code raised.
    step, error = None, context.failure_event.message or ""
    for event in context.get_step_failure_events():
        step = event.step_key
        info = getattr(event.event_specific_data, "error", None)
        while info is not None and info.cause is not None:
            info = info.cause
        if info is not None and info.message:
            error = info.message
        break
    runtime = alerts.runtime()
    try:
        added = notify_run_failure(
            runtime,
            run_id=run.run_id,
            root_run_id=run.root_run_id,
            job_name=run.job_name,
            error=error,
            step=step,
        )
        delivery = deliver_outbox(runtime, sender_from_environment())
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
        delivery = deliver_outbox(runtime, sender_from_environment())
    finally:
        runtime.close()
    return dg.SkipReason(f"rule evaluation is late: alert stored, {delivery.sent} sent")
