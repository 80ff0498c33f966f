"""The alerting sensors: thin adapters over service.py.

- ``alert_rules_sensor`` evaluates every rule and drains the outbox, every
  ``alerts.evaluation_interval``; it reports each rule's state as its asset check (checks.py)
  when the state changes or the dataset was materialized since, and its tick names what fires;
  its cursor holds the last evaluation's counts and what each check last reported.
- ``alert_run_failure_sensor`` stores one notification per failed run of this code location (not
  per retry) before trying to send it; Slack being down loses nothing, the next drain sends it.
- ``alert_watchdog_sensor`` watches the rule evaluation's heartbeat, so an alert sensor that keeps
  failing is itself an alert.
"""

import json
import time
from collections.abc import Iterable

import dagster as dg

from analytics.alerts.defs.checks import RuleVerdict, check_evaluation, check_key, verdicts
from analytics.alerts.defs.resources import AlertsResource
from analytics.alerts.rules import RulePack
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
        reported = json.loads(context.cursor or "{}").get("checks", {})
        rule_verdicts = {
            name: verdict
            for name, verdict in verdicts(runtime.rules, evaluation.active.values()).items()
            if name not in evaluation.errors
        }
        events, reported = check_events(context.instance, runtime.rules, rule_verdicts, reported)
        summary = (
            f"{firing_headline(rule_verdicts.values())}{evaluation.rules} rules, "
            f"{evaluation.groups} groups: "
            f"{len(evaluation.active)} not ok, {len(evaluation.notifications)} new notifications, "
            f"{delivery.sent} sent, {delivery.waiting} waiting"
            + (f"; delivery: {delivery.error}" if delivery.error else "")
        )
        cursor = json.dumps(
            {
                "evaluated_at": evaluation.evaluated_at.isoformat(),
                "not_ok": len(evaluation.active),
                "waiting": delivery.waiting,
                "checks": reported,
            }
        )
        return dg.SensorResult(skip_reason=summary, cursor=cursor, asset_events=events)

    return alert_rules_sensor


def firing_headline(rule_verdicts: Iterable[RuleVerdict]) -> str:
    """``FIRING: a critical, b high; PENDING: c. `` (empty when nothing is), for the tick."""
    parts = []
    for state in ("firing", "pending"):
        names = [verdict.headline() for verdict in rule_verdicts if verdict.state == state]
        if names:
            parts.append(f"{state.upper()}: {', '.join(names)}")
    return "; ".join(parts) + ". " if parts else ""


def check_events(
    instance: dg.DagsterInstance,
    pack: RulePack,
    rule_verdicts: dict[str, RuleVerdict],
    reported: dict[str, list],
) -> tuple[list[dg.AssetCheckEvaluation], dict[str, list]]:
    """The check evaluations to report now, and the cursor's new ``checks`` entry.

    ``reported`` maps a rule to ``[signature, unix time]`` of its last reported evaluation. A
    rule is reported when its verdict's signature changed, or when its dataset was materialized
    after that report: Dagster shows a check's result only while it is newer than the asset's
    latest materialization, so a firing check would otherwise turn grey after the next run.
    """
    now = time.time()
    latest: dict[dg.AssetKey, float] = {}
    # Only the pack's rules: one removed or renamed is not kept in the cursor forever.
    names = {rule.name for rule in pack.rules}
    events = []
    updated = {name: entry for name, entry in reported.items() if name in names}
    for rule in pack.rules:
        verdict = rule_verdicts.get(rule.name)
        if verdict is None:  # the rule failed to evaluate: its check keeps its last result
            continue
        asset = check_key(rule).asset_key
        if asset not in latest:
            entry = instance.get_latest_materialization_event(asset)
            latest[asset] = entry.timestamp if entry is not None else 0.0
        signature, at = (reported.get(rule.name) or ["", 0.0])[:2]
        if signature == verdict.signature() and latest[asset] < at:
            continue
        events.append(check_evaluation(rule, verdict))
        updated[rule.name] = [verdict.signature(), now]
    return events, updated


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
