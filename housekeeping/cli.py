"""`hk`: what is not a Dagster run. A thin click shell over the same core the assets use."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from analytics.alerts.cli import alerts, rules, status
from analytics.cli import query
from housekeeping.cli_options import config_option, database_option
from housekeeping.config import ConfigError, database_url, load_config
from housekeeping.database import AppDatabase
from housekeeping.errors import HkError


class HkGroup(click.Group):
    """The one error handler of `hk`: every product error (`HkError`) becomes its message and
    exit status 1, never a traceback; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HkError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=HkGroup)
@click.version_option(package_name="pg-housekeeping")
def main() -> None:
    """Housekeeping and metrics for applications on PostgreSQL (Dagster runs the schedules)."""


@main.group()
def instance() -> None:
    """Check the Dagster instance ($DAGSTER_HOME/dagster.yaml) before starting Dagster."""


@instance.command("check")
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="The Dagster instance directory (default: $DAGSTER_HOME).",
)
@click.option(
    "--connect-timeout",
    default=5,
    show_default=True,
    type=click.IntRange(1, 120),
    help="Seconds to wait for the storage database.",
)
def instance_check(home, connect_timeout):
    """Check dagster.yaml: every variable it reads is set, the storage database answers."""
    from housekeeping.instance_preflight import check_instance

    report = check_instance(home, connect_timeout=connect_timeout)
    click.echo(f"ok    {report.config_file}")
    click.echo(f"ok    storage: {report.storage}")
    if report.variables:
        click.echo(f"ok    environment: {', '.join(report.variables)} set")
    monitoring = "on" if report.run_monitoring else "off"
    click.echo(f"instance OK (run monitoring {monitoring})")


@main.command()
@database_option
@click.option("--tokens", default=20_000, show_default=True, help="Revoked tokens to generate.")
@click.option("--requests", default=200_000, show_default=True, help="Request log rows.")
@click.option("--days", default=30, show_default=True, help="Days of history to spread them over.")
@click.option("--seed", "random_seed", default=42, show_default=True, help="Random seed.")
@click.option("--reset", is_flag=True, help="Drop and recreate the tables if they hold rows.")
@click.option(
    "--partitioned-request-logs",
    is_flag=True,
    help="PostgreSQL only: create request_logs range-partitioned by day.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def seed(database_url, tokens, requests, days, random_seed, reset, partitioned_request_logs, quiet):
    """Create the reference schema and fill it with realistic generated data."""
    from housekeeping.demo.seed import seed_database

    summary = seed_database(
        database_url or _default_database_url(),
        tokens=tokens,
        requests=requests,
        days=days,
        seed=random_seed,
        progress=not quiet,
        reset=reset,
        partitioned_request_logs=partitioned_request_logs,
    )
    click.echo(_describe_seed(summary))


def _describe_seed(summary) -> str:
    counts = ", ".join(f"{table} {rows:,}" for table, rows in summary.row_counts.items())
    return f"seeded {counts} in {summary.elapsed_seconds:.1f}s"


def _default_database_url() -> str:
    url = database_url()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


@main.group()
def config() -> None:
    """Inspect the config file."""


@config.command("check")
@config_option
@database_option
def config_check(config_file, database_url):
    """Validate the config against the live database; advise missing indexes."""
    from housekeeping.policies import archive_store
    from housekeeping.schema_check import check_policy, index_advice

    settings = load_config(config_file)
    db = AppDatabase(database_url or _default_database_url())
    problems = []
    advice = []
    for name, policy in settings.policies.items():
        try:
            checked = check_policy(db, name, policy)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        click.echo(
            f"ok    {name}: {policy.table}.{policy.cutoff_column} (key {', '.join(checked.primary_key)})"
        )
        tip = index_advice(db, checked)
        if tip:
            advice.append(tip)
    if any(policy.archive for policy in settings.policies.values()):
        archive_store(settings).check_writable()
    for tip in advice:
        click.echo(
            f"warn  {tip.policy}: {tip.table}.{tip.column} has no index, so every cleanup scans "
            f"the whole table. Run:\n      {tip.statement}"
        )
    for problem in problems:
        click.echo(f"error {problem}", err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in the config")
    click.echo(f"config OK: {len(settings.policies)} policies against {db.describe()}")


@main.command()
@click.option("--tokens", default=20_000, show_default=True)
@click.option("--requests", default=100_000, show_default=True)
@click.option("--days", default=120, show_default=True)
def demo(tokens, requests, days):
    """Seed the demo database (first time), run the housekeeping job once through Dagster, report."""
    import dagster as dg

    from housekeeping.demo.seed import seed_database
    from housekeeping.history import RunHistory

    url = _default_database_url()
    db = AppDatabase(url)
    if "revoked_tokens" not in db.table_names():
        click.echo(f"Seeding the demo application database ({db.describe()})...")
        summary = seed_database(url, tokens=tokens, requests=requests, days=days, progress=True)
        click.echo(_describe_seed(summary))
    db.dispose()

    from housekeeping.definitions import defs

    if not os.environ.get("DAGSTER_HOME"):
        raise click.ClickException(
            "DAGSTER_HOME is not set (make demo sets it to var/dagster_home)"
        )
    from housekeeping.defs.assets import policy_asset_key

    instance = dg.DagsterInstance.get()
    click.echo(
        "Running housekeeping_job through Dagster (this first run on a never-cleaned database "
        "sets allow_large_delete)..."
    )
    first_run_config = {
        # The report below says what happened; the step-by-step log is in the UI (make dev).
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "ops": {
            policy_asset_key(name).to_python_identifier(): {"config": {"allow_large_delete": True}}
            for name in load_config().policies
        },
    }
    result = defs.resolve_job_def("housekeeping_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=first_run_config
    )
    click.echo("")
    click.echo(f"Dagster run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}")
    for event in result.all_events:
        if event.is_step_materialization:
            materialization = event.event_specific_data.materialization
            metadata = {key: value.value for key, value in materialization.metadata.items()}
            click.echo(_report_line(materialization.asset_key.path[-1], metadata))
        elif event.is_step_failure:
            click.echo(
                f"  FAILED {event.step_key}: {event.event_specific_data.error.message.strip()}"
            )
    failed_checks = {}
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            detail = ", ".join(f"{key} {value.value}" for key, value in evaluation.metadata.items())
            failed_checks.setdefault(evaluation.asset_key.path[-1], []).append(
                f"{evaluation.check_name} ({detail})"
            )
    history = RunHistory.from_config(load_config())
    click.echo("")
    click.echo("Health (asset checks):")
    for name in [*load_config().policies, "dagster_run_history"]:
        health = history.health(name)
        warnings = "; ".join(failed_checks.get(name, [])) or "all checks passed"
        click.echo(f"  {name:<22} {health.status:<9} {warnings}")
    history.dispose()
    rolled_up = _demo_rollups(defs, instance)
    _demo_alerts()
    click.echo("")
    click.echo("Open the Dagster UI on this demo with: make dev  (http://127.0.0.1:3000)")
    if not (result.success and rolled_up):
        sys.exit(1)


def _demo_rollups(defs, instance) -> bool:
    """The last 24 h of request rollups through Dagster (one run over a partition range), then
    what an analyst reads from the published DuckDB file."""
    from datetime import UTC, datetime, timedelta

    import duckdb

    from analytics.defs.partitions import hour_partition_key
    from analytics.settings import analytics_settings

    current_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    click.echo("")
    click.echo(
        "Rolling up the last 24 h of request logs through Dagster (analytics_requests_job)..."
    )
    result = defs.resolve_job_def("analytics_requests_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={
            "dagster/asset_partition_range_start": hour_partition_key(
                current_hour - timedelta(hours=24)
            ),
            "dagster/asset_partition_range_end": hour_partition_key(current_hour),
        },
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                click.echo(f"  FAILED: {event.event_specific_data.error.message.strip()}")
        return False
    metadata = next(
        {
            key: value.value
            for key, value in event.event_specific_data.materialization.metadata.items()
        }
        for event in result.all_events
        if event.is_step_materialization
    )
    settings = analytics_settings(load_config())
    click.echo(
        f"  Dagster run {result.run_id}: {metadata['rows_read']:,} request logs -> "
        f"{metadata['rows_written']:,} minute rows in {metadata['partitions_written']} hour "
        f"files, {metadata['duration_ms']:,.0f} ms"
    )
    since = (current_hour - timedelta(hours=24)).replace(tzinfo=None)
    with duckdb.connect(str(settings.database_path), read_only=True) as connection:
        overall = connection.execute(
            "SELECT requests, error_rate, latency_p95_ms FROM request_stats_overall(?, ?)",
            [since, datetime.now(UTC).replace(tzinfo=None)],
        ).fetchone()
        slowest = connection.execute(
            "SELECT route, requests, latency_p95_ms FROM request_stats(?, ?) "
            "ORDER BY latency_p95_ms DESC LIMIT 3",
            [since, datetime.now(UTC).replace(tzinfo=None)],
        ).fetchall()
    if overall is None or not overall[0]:
        click.echo("  no requests in the last 24 h")
        return True
    requests, error_rate, p95 = overall
    click.echo(
        f"  last 24 h: {requests:,} requests, error rate {error_rate:.2%}, p95 {p95:,.0f} ms "
        "(merged minute sketches)"
    )
    for route, route_requests, route_p95 in slowest:
        click.echo(f"    {route:<32} p95 {route_p95:>8,.0f} ms over {route_requests:,} requests")
    click.echo(
        '  analysts: hk query "SELECT * FROM requests_hourly_overall ORDER BY hour DESC LIMIT 24"'
        f" (or open {settings.database_path} read-only with DuckDB)"
    )
    return True


def _demo_alerts() -> None:
    """One evaluation of the alert rules, as the sensor runs it (the console stands in for Slack)."""
    from analytics.alerts.service import AlertRuntime, evaluate_and_deliver
    from analytics.alerts.slack import sender_from_environment

    click.echo("")
    click.echo("Alert rules (one evaluation, as alert_rules_sensor runs it every minute):")
    runtime = AlertRuntime.load()
    try:
        sender = sender_from_environment(lambda line: click.echo(f"  {line}"))
        click.echo(f"  sending through: {sender.description}")
        report, delivery = evaluate_and_deliver(runtime, sender)
    finally:
        runtime.close()
    click.echo(
        f"  {report.rules} rules, {report.groups} groups: {len(report.active)} not ok, "
        f"{len(report.notifications)} new notifications, {delivery.sent} sent "
        "(hk alerts list / hk status show them)"
    )


def _report_line(asset: str, metadata: dict) -> str:
    if "runs_deleted" in metadata:
        return f"  {asset:<22} purged {metadata['runs_deleted']} Dagster runs"
    deleted = metadata.get("deleted", 0)
    parts = [
        f"deleted {deleted:>9,} of {metadata.get('table_rows', 0):>9,} rows",
        f"{metadata.get('batches', 0):>3} batches",
        f"{metadata.get('duration_ms', 0):>7,.0f} ms",
    ]
    if metadata.get("archived_rows"):
        parts.append(f"archived {metadata['archived_rows']:,}")
    parts.append(f"remaining expired {metadata.get('remaining_expired', 0)}")
    if metadata.get("skipped_locked"):
        parts.append(f"skipped {metadata['skipped_locked']:,} locked by other sessions")
    return f"  {asset:<22} " + ", ".join(parts)


main.add_command(query)
main.add_command(rules)
main.add_command(alerts)
main.add_command(status)


if __name__ == "__main__":
    main()
