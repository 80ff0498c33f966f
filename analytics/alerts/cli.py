"""`hk rules ...`, `hk alerts ...` and `hk status`: a thin click shell over the alerting core.

Registered in housekeeping/cli.py. `hk alerts evaluate` runs one evaluation through the very code
the sensor runs (and sends through the same outbox); `hk rules backtest` replays the rules.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from croniter import croniter

from analytics.alerts.backtest import backtest
from analytics.alerts.catalog import GroupBy, unit_of
from analytics.alerts.delivery import DeliveryReport
from analytics.alerts.evaluate import METRIC_ERRORS
from analytics.alerts.messages import format_value
from analytics.alerts.metrics import MetricSource
from analytics.alerts.model import AlertRecord, AlertState
from analytics.alerts.rule_tests import load_rule_test, run_rule_test
from analytics.alerts.rules import Rule, RulePack, load_rules
from analytics.alerts.service import AlertRuntime, deliver_outbox, evaluate_and_deliver
from analytics.alerts.settings import alerts_settings
from analytics.alerts.slack import sender_from_environment
from analytics.publish import RollupStore
from analytics.settings import analytics_settings, parse_analytics_settings
from analytics.views import publish_rollup_views
from housekeeping.cli_options import config_option, positive_duration
from housekeeping.config import HealthConfig, HousekeepingConfig, config_path, load_config
from housekeeping.config_types import format_duration
from housekeeping.errors import first_line
from housekeeping.history import HealthStatus, RunHistory
from housekeeping.policy_kinds import PolicyKind

# `hk alerts evaluate` / `deliver` exit statuses (1: a config or store error, 2: usage).
EXIT_EVALUATION = 3  # a rule could not be evaluated
EXIT_DELIVERY = 4  # the delivery stopped: Slack refused or did not answer; the outbox waits
EXIT_BOTH = 5


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


# --- hk rules -----------------------------------------------------------------------------
@click.group()
def rules() -> None:
    """Check, test and backtest the alert rules."""


def _load_rule_file(
    rule_file: str | None, config_file: str | None
) -> tuple[str | None, RulePack, HealthConfig]:
    rule_file, pack, health, _ = _load_rule_file_and_config(rule_file, config_file)
    return rule_file, pack, health


def _load_rule_file_and_config(
    rule_file: str | None, config_file: str | None
) -> tuple[str | None, RulePack, HealthConfig, HousekeepingConfig | None]:
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
    return rule_file, load_rules(rule_file, health), health, config


def _sql_rule_problems(pack: RulePack, config: HousekeepingConfig | None) -> list[str]:
    """Every SQL rule run once, now, exactly as its evaluation runs it (MetricSource: the same
    parameters, the same sandbox) against the published views of the config's analytics:
    section, or, before anything is published, against empty views published in a scratch
    directory. One line per rule that would fail to evaluate."""
    sql_rules = [rule for rule in pack.rules if rule.sql is not None]
    if not sql_rules:
        return []
    analytics = analytics_settings(config) if config else parse_analytics_settings({})
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="hk-rules-check-") as scratch:
        database, root = analytics.database_path, analytics.root_path
        if not database.exists():
            root = Path(scratch)
            database = root / "views.duckdb"
            publish_rollup_views(RollupStore(root, database), config.timezone if config else "UTC")
        problems = []
        with MetricSource(database, rollup_root=root) as metrics:
            for rule in sql_rules:
                try:
                    metrics.check_sql(rule, now)
                except METRIC_ERRORS as exc:
                    problems.append(f"rule {rule.name}: sql: {first_line(exc)}")
    return problems


@rules.command("check")
@click.argument("rule_file", required=False, type=click.Path(dir_okay=False))
@config_option
def rules_check(rule_file: str | None, config_file: str | None) -> None:
    """Validate a rule file (default: alerts.rules_file, else the shipped default pack).

    Every SQL rule also runs once against the published views, as its evaluation runs it: OK
    means every rule will evaluate."""
    rule_file, pack, _, config = _load_rule_file_and_config(rule_file, config_file)
    problems = _sql_rule_problems(pack, config)
    if problems:
        where = rule_file or "the default rule pack"
        for problem in problems:
            click.echo(f"{where}: {problem}", err=True)
        raise click.ClickException(
            f"{len(problems)} SQL rules of {where} would fail at every evaluation"
        )
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
@click.option(
    "--until",
    "until_text",
    default=None,
    help="Replay up to this moment (ISO, UTC without an offset; default: now), e.g. where the "
    "data ends, so no-data alerts after it are not reported.",
)
@click.option(
    "--rules",
    "rule_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Replay this rule file (e.g. a changed copy of the pack) instead of the config's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@config_option
def rules_backtest(
    since: str,
    rule_names: tuple[str, ...],
    step: str,
    until_text: str | None,
    rule_file: str | None,
    as_json: bool,
    config_file: str | None,
) -> None:
    """Replay the rules over the rollup history (``--since`` before ``--until``) and list the
    notifications they would send."""
    from analytics.cli import parse_moment

    until = datetime.now(UTC).replace(second=0, microsecond=0)
    if until_text is not None:
        until = parse_moment(until_text, "--until", ZoneInfo("UTC")).astimezone(UTC)
    start = until - positive_duration(since, "--since")
    runtime = AlertRuntime.load(config_file)
    pack = runtime.rules
    if rule_file is not None:
        pack = _load_rule_file(rule_file, config_file)[1]
    pack = pack.select(list(rule_names))
    result = backtest(
        pack,
        runtime.analytics.database_path,
        RunHistory.from_config(runtime.config),
        start,
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
    silences = runtime.store.list_silences(now)
    click.echo(f"Alerts not ok: {len(active)}")
    for record in sorted(active, key=lambda record: record.key):
        severity = record.severity.value if record.severity else "-"
        metric = next(
            (rule.metric for rule in runtime.rules.rules if rule.name == record.key.rule), None
        )
        since = record.firing_since or record.pending_since
        value = format_value(unit_of(metric), record.last_value)
        if record.no_data_since is not None:
            value = f"no data since {_when(record.no_data_since)}"
        silenced = next((item for item in silences if item.matches(record.key, now)), None)
        mark = f"  SILENCED by #{silenced.id} until {_when(silenced.ends_at)}" if silenced else ""
        click.echo(
            f"  {record.state.value:<8} {severity:<8} {record.key.rule}"
            f"{' [' + record.key.group + ']' if record.key.group else ''}  "
            f"value {value}  since {_when(since)}{mark}"
        )
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
    try:
        _check_silence(runtime, rule, group, length, reason)
    except click.BadParameter:
        runtime.close()
        raise
    now = datetime.now(UTC)
    silence_id = runtime.store.add_silence(
        rule, group, now, now + length, reason.strip(), getpass.getuser()
    )
    runtime.close()
    click.echo(
        f"silence #{silence_id}: {rule}{' [' + group + ']' if group else ''} until {_when(now + length)}"
    )


def _check_silence(
    runtime: AlertRuntime, name: str, group: str | None, length: timedelta, reason: str
) -> None:
    """Raises click.BadParameter for a silence that would silence nothing or too long: an
    unknown rule, ``--group`` on an ungrouped rule or naming a group the rule has neither in
    its states nor in its metric now, ``--for`` over ``alerts.max_silence``, no reason."""
    rule = next((item for item in runtime.rules.rules if item.name == name), None)
    if rule is None:
        known = ", ".join(sorted(item.name for item in runtime.rules.rules))
        raise click.BadParameter(f"unknown rule {name!r} (rules: {known})", param_hint="RULE")
    if length > runtime.settings.max_silence:
        raise click.BadParameter(
            f"{format_duration(length)} is longer than alerts.max_silence "
            f"({format_duration(runtime.settings.max_silence)})",
            param_hint="--for",
        )
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    if group is None:
        return
    if rule.group_by is GroupBy.NONE and rule.sql is None:
        raise click.BadParameter(
            f"rule {name} is not grouped (no group_by): silence it without --group",
            param_hint="--group",
        )
    groups = _known_groups(runtime, rule)
    if group not in groups:
        shown = ", ".join(sorted(groups)[:10]) or "none"
        more = f" and {len(groups) - 10} more" if len(groups) > 10 else ""
        raise click.BadParameter(
            f"rule {name} has no group {group!r} (its groups now: {shown}{more})",
            param_hint="--group",
        )


def _known_groups(runtime: AlertRuntime, rule: Rule) -> set[str]:
    """The groups of ``rule`` in the alert states and in its metric now (None of a metric that
    cannot be computed now adds nothing)."""
    with runtime.store.transaction() as conn:
        groups = {key.group for key in runtime.store.load_states(conn, [rule.name])}
    with runtime.metric_source() as metrics, contextlib.suppress(*METRIC_ERRORS):
        groups.update(metrics.values(rule, datetime.now(UTC)) or {})
    groups.discard("")
    return groups


@alerts.command("unsilence")
@click.argument("silence_id", type=int)
@config_option
def alerts_unsilence(silence_id: int, config_file: str | None) -> None:
    """End silence SILENCE_ID now."""
    runtime = AlertRuntime.load(config_file)
    now = datetime.now(UTC)
    ended = next(
        (item for item in runtime.store.list_silences(now, True) if item.id == silence_id), None
    )
    removed = runtime.store.remove_silence(silence_id)
    if not removed or ended is None:
        runtime.close()
        raise click.ClickException(f"no silence #{silence_id} (see hk alerts list)")
    with runtime.store.transaction() as conn:
        others = runtime.store.active_silences(conn, now)
        held = [
            record
            for record in runtime.store.load_states(conn).values()
            if record.state is AlertState.FIRING
            and record.unannounced is not None
            and ended.matches(record.key, now)
        ]
    runtime.close()
    click.echo(f"silence #{silence_id} removed")

    def name(record: AlertRecord) -> str:
        return f"{record.key.rule}{' [' + record.key.group + ']' if record.key.group else ''}"

    # The evaluation sends what this silence held (the sensor's next tick, or hk alerts
    # evaluate), unless another silence still covers it.
    still: dict[int, list[str]] = {}
    free = []
    for record in sorted(held, key=lambda record: record.key):
        cover = next((other for other in others if other.matches(record.key, now)), None)
        if cover is None:
            free.append(name(record))
        else:
            still.setdefault(cover.id, []).append(name(record))
    if free:
        click.echo(f"firing while silenced, sent at the next evaluation: {', '.join(free)}")
    for other, names in sorted(still.items()):
        click.echo(f"firing, still silenced by #{other}: {', '.join(names)}")


def _delivery_lines(report: DeliveryReport) -> None:
    for error in report.channel_errors:
        click.echo(f"failed: {error}", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)


@alerts.command("evaluate")
@config_option
def alerts_evaluate(config_file: str | None) -> None:
    """Evaluate every rule now, as the sensor does, and send what it produces.

    Exit status: 0 all evaluated and sent; 3 a rule could not be evaluated; 4 the delivery
    stopped (Slack; the notifications wait in the outbox) or a message failed for good (a
    channel Slack refuses); 5 both; 1 the config or the store.
    """
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
        click.echo(f"evaluation: rule {rule} could not be evaluated: {error}", err=True)
    _delivery_lines(delivery)
    if delivery.error:
        click.echo(f"delivery stopped: {delivery.error}", err=True)
    undelivered = bool(delivery.error or delivery.failed)
    status = (
        EXIT_BOTH
        if report.errors and undelivered
        else EXIT_EVALUATION
        if report.errors
        else EXIT_DELIVERY
        if undelivered
        else 0
    )
    if status:
        raise SystemExit(status)


@alerts.command("deliver")
@click.option(
    "--respect-backoff",
    is_flag=True,
    help="Leave messages waiting out a retry backoff or Retry-After (as the sensor does); "
    "default: try them now.",
)
@config_option
def alerts_deliver(respect_backoff: bool, config_file: str | None) -> None:
    """Send the notifications waiting in the outbox now (exit 4 when the delivery stopped or
    a message failed for good)."""
    runtime = AlertRuntime.load(config_file)
    sender = sender_from_environment(click.echo)
    report = deliver_outbox(runtime, sender, respect_backoff=respect_backoff)
    runtime.close()
    click.echo(f"{report.sent} sent in {report.messages} messages, {report.waiting} waiting")
    _delivery_lines(report)
    if report.error:
        click.echo(f"delivery stopped: {report.error}", err=True)
    if report.error or report.failed:
        # a message failed for good (a channel Slack refuses) is not delivered either
        raise SystemExit(EXIT_DELIVERY)


# --- hk status ----------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# What `hk status --json` calls the total deleted, by policy kind (else ROWS_DELETED).
ROWS_DELETED = "totalRowsDeleted"
DELETED_KEYS = {PolicyKind.EXPIRED: "totalTokensDeleted", PolicyKind.FILES: "totalFilesDeleted"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON, shaped like /admin/cleanup-metrics.")
@config_option
def status(as_json: bool, config_file: str | None) -> None:
    """Health of every housekeeping policy and every alert that is not ok.

    Every policy of the config, then every other one the run history has runs of (the Dagster
    run-history purge, a policy since removed): the same list as the daily summary. A token
    policy (kind ``expired``) counts ``totalTokensDeleted``, a files policy ``totalFilesDeleted``;
    the others ``totalRowsDeleted``.
    """
    runtime = AlertRuntime.load(config_file)
    config = runtime.config
    history = RunHistory.from_config(config)
    now = datetime.now(UTC)
    policies = {}
    statuses: dict[str, HealthStatus] = {}
    configured = config.every_policy()
    names = [
        *configured,
        *(name for name in history.policies() if name not in configured),
    ]
    for name in names:
        policy = configured.get(name)
        health = history.health(name)
        statuses[name] = health.status
        next_run = None
        if policy is not None and policy.schedule:
            local = now.astimezone(ZoneInfo(config.timezone))
            next_run = croniter(policy.schedule, local).get_next(datetime)
        deleted_key = DELETED_KEYS.get(policy.kind if policy is not None else None, ROWS_DELETED)
        policies[name] = {
            "metrics": {
                "lastRun": _iso(health.last_run),
                "lastSuccess": _iso(health.last_success),
                "lastFailure": _iso(health.last_failure),
                "totalRuns": health.total_runs,
                "successfulRuns": health.successful_runs,
                "failedRuns": health.failed_runs,
                deleted_key: health.total_deleted,
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
            f"(failed {metrics['failedRuns']}), deleted "
            f"{sum(metrics.get(key, 0) for key in (*DELETED_KEYS.values(), ROWS_DELETED)):,}, "
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
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address goes in brackets in a URL
    click.echo(f"serving http://{shown}:{port}/metrics", err=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        signal.signal(signal.SIGTERM, previous)
