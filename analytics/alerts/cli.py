"""`hk rules ...`, `hk alerts ...` and `hk status`: a thin click shell over the alerting core.

Registered in housekeeping/cli.py. `hk alerts evaluate` runs one evaluation through the very code
the sensor runs (and sends through the same outbox); `hk rules backtest` replays the rules.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click
from croniter import croniter

from analytics.alerts.backtest import backtest
from analytics.alerts.catalog import GroupBy, unit_of
from analytics.alerts.delivery import deliver
from analytics.alerts.messages import format_value
from analytics.alerts.model import AlertState
from analytics.alerts.rule_tests import load_rule_test, run_rule_test
from analytics.alerts.rules import RulePack, load_rules
from analytics.alerts.service import AlertRuntime, evaluate_and_deliver
from analytics.alerts.settings import alerts_settings
from analytics.alerts.slack import sender_from_environment
from housekeeping.cli_options import config_option, positive_duration
from housekeeping.config import HealthConfig, config_path, load_config
from housekeeping.config_types import format_duration
from housekeeping.history import HealthStatus, RunHistory


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


# --- hk rules -----------------------------------------------------------------------------
@click.group()
def rules() -> None:
    """Check, test and backtest the alert rules."""


def _load_rule_file(
    rule_file: str | None, config_file: str | None
) -> tuple[str | None, RulePack, HealthConfig]:
    """The rule file given, else alerts.rules_file of the config (None: the shipped pack), and
    the config's health: section its health.<key> thresholds were read from."""
    # The config's health: section fills health.<key> thresholds; a rule file checked on
    # its own, with no config file around, gets that section's defaults.
    config = None
    if rule_file is None or config_file or config_path().exists():
        config = load_config(config_file)
    if rule_file is None:
        rule_file = alerts_settings(config, config_file or "config").rules_file
    health = config.health if config else HealthConfig()
    return rule_file, load_rules(rule_file, health), health


@rules.command("check")
@click.argument("rule_file", required=False, type=click.Path(dir_okay=False))
@config_option
def rules_check(rule_file: str | None, config_file: str | None) -> None:
    """Validate a rule file (default: alerts.rules_file, else the shipped default pack)."""
    rule_file, pack, _ = _load_rule_file(rule_file, config_file)
    click.echo(f"OK: {len(pack.rules)} rules in {rule_file or 'the default rule pack'}")
    for rule in pack.rules:
        conditions = "; ".join(
            f"{severity.value} {rule.describe_condition(severity)}" for severity in rule.severities
        )
        metric = rule.metric or "sql"
        grouping = f" by {rule.group_by.value}" if rule.group_by is not GroupBy.NONE else ""
        click.echo(
            f"  {rule.name}: {metric}{grouping} over {format_duration(rule.window)}: {conditions}"
        )


@rules.command("backtest")
@click.option("--since", default="30d", show_default=True, help="How far back to replay.")
@click.option("--rule", "rule_names", multiple=True, help="Only this rule (repeatable).")
@click.option("--step", default="1m", show_default=True, help="Time between two evaluations.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@config_option
def rules_backtest(
    since: str, rule_names: tuple[str, ...], step: str, as_json: bool, config_file: str | None
) -> None:
    """Replay the rules over the rollup history and list the notifications they would send."""
    runtime = AlertRuntime.load(config_file)
    pack = runtime.rules.select(list(rule_names))
    until = datetime.now(UTC).replace(second=0, microsecond=0)
    result = backtest(
        pack,
        runtime.analytics.database_path,
        RunHistory.from_config(runtime.config),
        until - positive_duration(since, "--since"),
        until,
        positive_duration(step, "--step"),
        runtime.settings.channel_for(),
        rollup_root=runtime.analytics.root_path,
    )
    runtime.close()
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    for rule, error in result.errors.items():
        click.echo(f"rule {rule} could not be evaluated: {error}", err=True)
    click.echo(
        f"{result.evaluations:,} evaluations from {_when(result.since)} to {_when(result.until)}: "
        f"{len(result.notifications)} notifications"
    )
    for item in result.notifications:
        severity = item.severity.value if item.severity else ""
        click.echo(f"  {_when(item.evaluated_at)}  {item.kind.value:<9} {severity:<8} {item.text}")


@rules.command("test")
@click.argument("test_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--rules",
    "rule_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The rule file to test (default: alerts.rules_file, else the shipped pack).",
)
@config_option
def rules_test(test_files: tuple[str, ...], rule_file: str | None, config_file: str | None) -> None:
    """Replay the rules over each test file's series and compare the alerts with those expected.

    Exits 1 when a case fails, with a diff of the expected (-) and sent (+) notifications.
    """
    _, pack, health = _load_rule_file(rule_file, config_file)
    cases = [(path, load_rule_test(path)) for path in test_files]
    failed = 0
    for path, case in cases:
        result = run_rule_test(pack, case, source=path, health=health)
        title = f"{path}: {case.description}" if case.description else path
        if result.passed:
            click.echo(f"ok    {title}")
            continue
        failed += 1
        click.echo(f"FAIL  {title}")
        for rule, error in sorted(result.errors.items()):
            click.echo(f"      rule {rule} could not be evaluated: {error}")
        for line in result.diff():
            click.echo(f"      {line}")
    click.echo(f"{len(cases)} test files: {len(cases) - failed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)


# --- hk alerts ----------------------------------------------------------------------------
@click.group()
def alerts() -> None:
    """Alert states, silences, the outbox; evaluate or deliver now."""


@alerts.command("list")
@click.option("--outbox", is_flag=True, help="Also list the last notifications and their status.")
@config_option
def alerts_list(outbox: bool, config_file: str | None) -> None:
    """Every alert not ok, active silences, and (with --outbox) recent notifications."""
    runtime = AlertRuntime.load(config_file)
    now = datetime.now(UTC)
    with runtime.store.transaction() as conn:
        states = runtime.store.load_states(conn)
    active = [record for record in states.values() if record.state is not AlertState.OK]
    click.echo(f"Alerts not ok: {len(active)}")
    for record in sorted(active, key=lambda record: record.key):
        severity = record.severity.value if record.severity else "-"
        metric = next(
            (rule.metric for rule in runtime.rules.rules if rule.name == record.key.rule), None
        )
        since = record.firing_since or record.pending_since
        click.echo(
            f"  {record.state.value:<8} {severity:<8} {record.key.rule}"
            f"{' [' + record.key.group + ']' if record.key.group else ''}  "
            f"value {format_value(unit_of(metric), record.last_value)}  since {_when(since)}"
        )
    silences = runtime.store.list_silences(now)
    click.echo(f"Silences: {len(silences)}")
    for silence in silences:
        click.echo(
            f"  #{silence.id} {silence.rule}{' [' + silence.group + ']' if silence.group else ''}"
            f" until {_when(silence.ends_at)} by {silence.created_by}: {silence.reason}"
        )
    pending = runtime.store.pending()
    click.echo(f"Notifications waiting to be sent: {len(pending)}")
    if outbox:
        for row in runtime.store.rows()[-50:]:
            item = row.notification
            error = f" ({row.last_error})" if row.last_error else ""
            click.echo(
                f"  #{row.id} {_when(item.evaluated_at)} {row.status.value:<7} {item.channel} "
                f"{item.title}{error}"
            )
    runtime.close()


@alerts.command("silence")
@click.argument("rule")
@click.option("--group", default=None, help="Only this group (route, queue, ...); default: all.")
@click.option("--for", "duration", required=True, help="How long, e.g. 2h, 30m, 1d.")
@click.option("--reason", required=True, help="Why (shown in hk alerts list).")
@config_option
def alerts_silence(
    rule: str, group: str | None, duration: str, reason: str, config_file: str | None
) -> None:
    """Stop notifications of RULE (states still change) for a while."""
    length = positive_duration(duration, "--for")
    runtime = AlertRuntime.load(config_file)
    if rule not in {item.name for item in runtime.rules.rules}:
        known = ", ".join(sorted(item.name for item in runtime.rules.rules))
        runtime.close()
        raise click.BadParameter(f"unknown rule {rule!r} (rules: {known})", param_hint="RULE")
    if not reason.strip():
        runtime.close()
        raise click.BadParameter("give a reason", param_hint="--reason")
    now = datetime.now(UTC)
    silence_id = runtime.store.add_silence(
        rule, group, now, now + length, reason.strip(), getpass.getuser()
    )
    runtime.close()
    click.echo(
        f"silence #{silence_id}: {rule}{' [' + group + ']' if group else ''} until {_when(now + length)}"
    )


@alerts.command("unsilence")
@click.argument("silence_id", type=int)
@config_option
def alerts_unsilence(silence_id: int, config_file: str | None) -> None:
    """End silence SILENCE_ID now."""
    runtime = AlertRuntime.load(config_file)
    removed = runtime.store.remove_silence(silence_id)
    runtime.close()
    if not removed:
        raise click.ClickException(f"no silence #{silence_id} (see hk alerts list)")
    click.echo(f"silence #{silence_id} removed")


@alerts.command("evaluate")
@config_option
def alerts_evaluate(config_file: str | None) -> None:
    """Evaluate every rule now, as the sensor does, and send what it produces."""
    runtime = AlertRuntime.load(config_file)
    sender = sender_from_environment(click.echo)
    click.echo(f"sending through: {sender.description}")
    report, delivery = evaluate_and_deliver(runtime, sender)
    runtime.close()
    click.echo(
        f"{report.rules} rules, {report.groups} groups: {len(report.active)} not ok, "
        f"{len(report.notifications)} new notifications ({len(report.silenced)} silenced), "
        f"{delivery.sent} sent, {delivery.waiting} waiting"
    )
    for rule, error in report.errors.items():
        click.echo(f"rule {rule} could not be evaluated: {error}", err=True)
    if delivery.error:
        raise click.ClickException(f"delivery stopped: {delivery.error}")


@alerts.command("deliver")
@config_option
def alerts_deliver(config_file: str | None) -> None:
    """Send the notifications waiting in the outbox now."""
    runtime = AlertRuntime.load(config_file)
    sender = sender_from_environment(click.echo)
    report = deliver(runtime.store, sender, runtime.settings)
    runtime.close()
    click.echo(f"{report.sent} sent in {report.messages} messages, {report.waiting} waiting")
    if report.error:
        raise click.ClickException(f"delivery stopped: {report.error}")


# --- hk status ----------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON, shaped like /admin/cleanup-metrics.")
@config_option
def status(as_json: bool, config_file: str | None) -> None:
    """Health of every housekeeping policy and every alert that is not ok."""
    runtime = AlertRuntime.load(config_file)
    config = runtime.config
    history = RunHistory.from_config(config)
    now = datetime.now(UTC)
    policies = {}
    statuses: dict[str, HealthStatus] = {}
    for name, policy in config.policies.items():
        health = history.health(name)
        statuses[name] = health.status
        next_run = None
        if policy.schedule:
            local = now.astimezone(ZoneInfo(config.timezone))
            next_run = croniter(policy.schedule, local).get_next(datetime)
        policies[name] = {
            "metrics": {
                "lastRun": _iso(health.last_run),
                "lastSuccess": _iso(health.last_success),
                "lastFailure": _iso(health.last_failure),
                "totalRuns": health.total_runs,
                "successfulRuns": health.successful_runs,
                "failedRuns": health.failed_runs,
                "totalTokensDeleted": health.total_deleted,
                "averageCleanupMs": (
                    round(health.average_duration_ms)
                    if health.average_duration_ms is not None
                    else None
                ),
                "lastErrorMessage": health.last_error,
                # rows other sessions had locked, which the newest run skipped
                "lastRunSkippedLocked": health.last_skipped_locked,
            },
            "status": health.status.value,
            "nextScheduledRun": _iso(next_run),
        }
    history.dispose()
    with runtime.store.transaction() as conn:
        states = runtime.store.load_states(conn)
    runtime.close()
    active = [
        {
            "rule": record.key.rule,
            "group": record.key.group or None,
            "state": record.state.value,
            "severity": record.severity.value if record.severity else None,
            "value": record.last_value,
            "since": _iso(record.firing_since or record.pending_since),
        }
        for record in sorted(states.values(), key=lambda record: record.key)
        if record.state is not AlertState.OK
    ]
    if as_json:
        click.echo(json.dumps({"policies": policies, "alerts": active}, indent=2))
        return
    click.echo("Housekeeping policies:")
    for name, item in policies.items():
        metrics = item["metrics"]
        average = metrics["averageCleanupMs"]
        click.echo(
            f"  {name:<22} {item['status']:<9} runs {metrics['totalRuns']:>4} "
            f"(failed {metrics['failedRuns']}), deleted {metrics['totalTokensDeleted']:,}, "
            f"avg {average if average is not None else '-'} ms, "
            f"last success {metrics['lastSuccess'] or '-'}, next {item['nextScheduledRun'] or '-'}"
        )
        if metrics["lastRunSkippedLocked"]:
            click.echo(
                f"  {'':<22} last run skipped {metrics['lastRunSkippedLocked']:,} rows locked by "
                "other sessions (the next run retries them)"
            )
        if metrics["lastErrorMessage"] and statuses[name] is not HealthStatus.HEALTHY:
            click.echo(f"  {'':<22} last error: {metrics['lastErrorMessage']}")
    click.echo(f"Alerts not ok: {len(active)}")
    for alert in active:
        group = f" [{alert['group']}]" if alert["group"] else ""
        click.echo(f"  {alert['state']:<8} {alert['severity'] or '-':<8} {alert['rule']}{group}")


# --- hk metrics -------------------------------------------------------------------------------
@click.group(invoke_without_command=True)
@config_option
@click.pass_context
def metrics(context: click.Context, config_file: str | None) -> None:
    """Print every metric in the Prometheus text format (or serve it: hk metrics serve).

    Per policy the cleanup metrics of hk status --json, rollup freshness, every alert's state
    and severity, and the newest database health snapshot (analytics/alerts/prometheus.py).
    """
    if context.invoked_subcommand is None:
        from analytics.alerts.prometheus import render_metrics

        click.echo(render_metrics(config_file), nl=False)


@metrics.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=9464, show_default=True, help="TCP port."
)
@config_option
def metrics_serve(host: str, port: int, config_file: str | None) -> None:
    """Serve /metrics for a Prometheus scrape until interrupted (Ctrl-C or SIGTERM)."""
    import signal
    import threading

    from analytics.alerts.prometheus import render_metrics, serve_metrics

    render_metrics(config_file)  # a bad config fails here, before anything listens
    try:
        server = serve_metrics(host, port, config_file)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    click.echo(f"serving http://{host}:{port}/metrics", err=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        signal.signal(signal.SIGTERM, previous)
