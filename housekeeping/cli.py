"""`hk`: what is not a Dagster run. A thin click shell over the same core the assets use."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import click
import sqlalchemy as sa

from analytics.alerts.cli import alerts, metrics, rules, status
from analytics.cli import export, parse_moment, query, rollups
from housekeeping.cli_options import config_option, database_option, positive_duration
from housekeeping.config import ConfigError, config_path, database_url, load_config
from housekeeping.database import AppDatabase
from housekeeping.errors import HkError, first_line, one_line

# Set to see the traceback of an error `hk` did not expect (a bug), instead of its one line.
TRACEBACK_VARIABLE = "HK_TRACEBACK"


class HkGroup(click.Group):
    """The one error handler of `hk`: every error becomes one line and exit status 1 (click's
    usage errors: 2), never a traceback.

    A product error (`HkError`) is its message, which names the key, value or object. A reader
    that closed the pipe (``| head``) ends the command quietly (status 1). Anything else is a
    bug: one line with its type and message, and the traceback only when
    ``$HK_TRACEBACK`` is set.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HkError as exc:
            raise click.ClickException(one_line(str(exc))) from None
        except click.ClickException as exc:
            exc.message = one_line(exc.message)
            raise
        except (click.exceptions.Exit, click.Abort):  # click's own exits, not errors
            raise
        except BrokenPipeError:
            # The reader went away (`hk export ... | head`): stop quietly, as a pipe's writer
            # does; standard output goes to /dev/null so the interpreter's last flush is silent.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(1) from None
        except Exception as exc:
            if os.environ.get(TRACEBACK_VARIABLE):
                raise
            raise click.ClickException(
                f"unexpected error ({type(exc).__name__}): {one_line(str(exc)) or '-'} "
                f"(a bug: set {TRACEBACK_VARIABLE}=1 for the traceback and report it)"
            ) from None


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
@click.option(
    "--log-files",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Write the requests and error logs as JSON-lines files under this (existing) directory "
    "instead "
    "(pino, winston and reference shapes, rotated daily), and the jobs as jobs.log (pino, "
    "winston); no database is touched.",
)
def seed(
    database_url,
    tokens,
    requests,
    days,
    random_seed,
    reset,
    partitioned_request_logs,
    quiet,
    log_files,
):
    """Create the reference schema and fill it with realistic generated data."""
    from housekeeping.demo.seed import seed_database

    if log_files is not None:
        from analytics.logs.seed import write_log_files

        written = write_log_files(log_files, requests=requests, days=days, seed=random_seed)
        click.echo(
            f"wrote {written.requests:,} requests, {written.errors:,} error lines and "
            f"{written.jobs:,} jobs in {written.files} files under {log_files} "
            f"(pino/, winston/, reference/; jobs.log in pino/ and winston/; "
            f"{written.start:%Y-%m-%d %H:%M} .. {written.now:%Y-%m-%d %H:%M} UTC)"
        )
        return

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


CONFIG_SECTIONS = ("policies", "analytics", "alerts")


@config.command("check")
@config_option
@database_option
@click.option(
    "--section",
    "sections",
    multiple=True,
    type=click.Choice(CONFIG_SECTIONS),
    help="Check only this section (repeatable; default: all).",
)
def config_check(config_file, database_url, sections):
    """Check the config against the live database: what the runs would fail on; advise indexes.

    Every section parses (a duration without a unit, an unknown time zone, ... name their key);
    policies: tables (not views) and columns exist as spelled, the zone of each naive cutoff
    column; analytics: every source's table and columns; alerts: the rule file loads.
    """
    from analytics.config_check import SECTION_CHECKS

    settings = load_config(config_file)
    source = str(config_file or config_path())
    sections = sections or CONFIG_SECTIONS
    problems = []
    db: AppDatabase | None = None
    live: AppDatabase | None = None
    if database_url or os.environ.get("DATABASE_URL") or _needs_database(settings, sections):
        db = live = AppDatabase(database_url or _default_database_url())
    else:
        click.echo(
            "ok    DATABASE_URL: not needed (no table policy, no analytics: section); not checked"
        )
    # The database itself first (the analytics sources live there too); SQLite would create a
    # missing file on connect, so a missing one is named instead, and the sections are still
    # parsed (live is None: nothing is checked against a database).
    sqlite_file = db.url.database if db is not None and not db.is_postgres else None
    if sqlite_file and not Path(sqlite_file).exists():
        problems.append(f"DATABASE_URL: the SQLite file {sqlite_file} does not exist")
        live = None
    if live is not None:
        live.table_names()
    try:
        for line in _check_own_databases(settings):
            click.echo(f"ok    {line}")
    except HkError as exc:
        problems.append(str(exc))
    if "policies" in sections and live is not None:
        problems += _check_policies(live, settings)
    if "policies" in sections:
        problems += _check_file_policies(settings)
        problems += _check_archive_root(settings)
    for section in sections:
        if section in SECTION_CHECKS:
            report = SECTION_CHECKS[section](live, settings, source)
            for line in report.ok:
                click.echo(f"ok    {line}")
            for line in report.warnings:
                click.echo(f"warn  {line}")
            problems += report.problems
    for problem in problems:
        click.echo(f"error {problem}", err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in the config")
    against = db.describe() if db is not None else "no application database (none needed)"
    click.echo(
        f"config OK ({', '.join(sections)}): {len(settings.every_policy())} policies against "
        f"{against}"
    )


def _needs_database(settings, sections) -> bool:
    """Does `hk config check` need the application database: a table policy, or an
    `analytics:` section, among the sections checked? (Files policies and alerts do not.)"""
    return bool(
        ("policies" in sections and settings.policies)
        or ("analytics" in sections and settings.analytics)
    )


def _check_archive_root(settings) -> list[str]:
    """archive.root can be written when a policy archives (printing so); its problem. Nothing
    is created: a missing root is judged by its nearest existing parent."""
    from housekeeping.policies import archive_store

    if not any(policy.archive for policy in settings.every_policy().values()):
        return []
    try:
        click.echo(f"ok    {archive_store(settings).check_writable(create=False)}")
    except HkError as exc:
        return [str(exc)]
    return []


def _check_own_databases(config) -> list[str]:
    """The product's own databases (run history, alert store) answer, or ConfigError naming the
    key: every run and `hk status` needs them. Nothing is created: a SQLite file is made by the
    first run, and a server is only connected to. An `alerts:` section that does not parse is
    left to its own check. Returns one line per database."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from analytics.alerts.settings import alerts_settings
    from housekeeping.database import make_engine, redact_url

    urls = {"state_database_url": config.state_database_url}
    with contextlib.suppress(HkError):
        urls["alerts.database_url"] = alerts_settings(config).database_url
    lines = []
    for key, url in urls.items():
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError(f"{key}: not a SQLAlchemy URL: {redact_url(url)}") from None
        if parsed.get_backend_name() == "sqlite":
            lines.append(f"{key}: {redact_url(parsed)} (a SQLite file; the first run creates it)")
            continue
        engine = make_engine(parsed)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise ConfigError(
                f"{key}: cannot connect to {redact_url(engine.url)}: {first_line(cause)}"
            ) from None
        finally:
            engine.dispose()
        lines.append(f"{key}: {redact_url(engine.url)} answers")
    return lines


def _check_policies(db: AppDatabase, settings) -> list[str]:
    """Each policy against the live schema (printing what is fine); its problems."""
    from housekeeping.schema_check import check_policy, index_advice

    problems = []
    advice = []
    for name, policy in settings.policies.items():
        try:
            checked = check_policy(db, name, policy)
            tip = index_advice(db, checked)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        except sa.exc.SQLAlchemyError as exc:
            # What the check did not foresee still names the policy and its table, in one line.
            problems.append(
                f"policies.{name}.table: cannot read {policy.table!r} "
                f"({type(exc).__name__}: {first_line(getattr(exc, 'orig', None) or exc)})"
            )
            continue
        click.echo(
            f"ok    {name}: {policy.table}.{policy.cutoff_column} (key {', '.join(checked.primary_key)})"
        )
        click.echo(f"      {_cutoff_reading(name, checked)}")
        if tip:
            advice.append(tip)
    for tip in advice:
        click.echo(
            f"warn  {tip.policy}: {tip.table}.{tip.column} has no index, so every cleanup scans "
            f"the whole table. Run:\n      {tip.statement}"
        )
    return problems


def _check_file_policies(settings) -> list[str]:
    """Each files policy's directory (exists, can be listed and written, is not inside
    archive.root; printing how many files match, a warning when none does, and one naming the
    files a run could not read); its problems."""
    from housekeeping.file_retention import describe_policy_check, some_names

    problems = []
    for name, policy in settings.file_policies.items():
        try:
            checked = describe_policy_check(name, policy, settings.archive.root)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        click.echo(f"ok    {checked.line}")
        if not checked.matched:
            click.echo(f"warn  {name}: no file matches yet (policies.{name}.glob)")
        if checked.unreadable:
            click.echo(
                f"warn  {name}: {len(checked.unreadable)} files cannot be read (permission "
                f"denied), so runs will skip them: {some_names(checked.unreadable)}"
            )
    return problems


def _cutoff_reading(name, checked) -> str:
    """How the cutoff column's values are read: instants, or wall clock in which zone."""
    column = checked.table.columns[checked.policy.cutoff_column]
    zone = checked.cutoff_zone
    if zone is None:
        reading = f"{column.name} is {column.type_name}: instants"
        if "timezone" in checked.policy.model_fields_set:
            reading += f" (policies.{name}.timezone is not used)"
        return reading
    return (
        f"{column.name} is {column.type_name} (no time zone): read as wall clock in {zone} "
        f"(policies.{name}.timezone)"
    )


@main.group(invoke_without_command=True)
@click.option("--tokens", default=20_000, show_default=True)
@click.option("--requests", default=100_000, show_default=True)
@click.option("--days", default=120, show_default=True)
@click.option(
    "--log-files",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the demo's request logs, error logs and jobs as JSON-lines files under this "
    "(existing, writable) directory and run the demo's rollups from them.",
)
@click.pass_context
def demo(ctx, tokens, requests, days, log_files):
    """Seed the demo database (first time), add the last 2 h of live traffic (with an incident
    when the last 24 h have none), run the housekeeping job once through Dagster, report.
    With --log-files DIR, the rollups read the demo's traffic from log files written to DIR."""
    if ctx.invoked_subcommand is not None:
        return
    if log_files is not None:
        _check_log_files_directory(log_files)
    from housekeeping.dagster_runs import open_instance
    from housekeeping.demo.seed import seed_database
    from housekeeping.history import RunHistory

    # Everything that can be wrong is found before the first side effect (the seed): the config,
    # the definitions built from it, DAGSTER_HOME and its instance, the application database.
    config = load_config()
    from housekeeping.definitions import defs
    from housekeeping.defs.assets import policy_asset_key

    instance = open_instance()
    _check_own_databases(config)
    url = _default_database_url()
    db = AppDatabase(url)
    if "revoked_tokens" not in db.table_names():
        click.echo(f"Seeding the demo application database ({db.describe()})...")
        summary = seed_database(url, tokens=tokens, requests=requests, days=days, progress=True)
        click.echo(_describe_seed(summary))
    db.dispose()
    incident = _demo_live_traffic(url)
    _demo_partitions_start()

    history = RunHistory.from_config(config)
    never_cleaned = not history.policies()
    history.dispose()
    if never_cleaned:
        click.echo(
            "Running housekeeping_job through Dagster (this first run on a never-cleaned "
            "database sets allow_large_delete)..."
        )
    else:
        click.echo("Running housekeeping_job through Dagster (the database was cleaned before)...")
    first_run_config = {
        # The report below says what happened; the step-by-step log is in the UI (make dev).
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "ops": {
            policy_asset_key(name).to_python_identifier(): {
                "config": {"allow_large_delete": never_cleaned}
            }
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
    if log_files is not None:
        _demo_on_log_files(log_files, url)
    rolled_up = _demo_rollups(defs, instance)
    _demo_lifecycle(incident)
    _demo_alerts()
    click.echo("")
    click.echo("Open the Dagster UI on this demo with: make dev  (http://127.0.0.1:3000)")
    if not (result.success and rolled_up):
        sys.exit(1)


def _demo_rollups(defs, instance) -> bool:
    """The last 24 h of request rollups through Dagster (one run over a partition range), then
    what an analyst reads from the published DuckDB file."""
    from datetime import UTC, datetime, timedelta

    from analytics.defs.partitions import hour_partition_key
    from analytics.publish import RollupStore
    from analytics.sandbox import open_rollups
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
    store = RollupStore(settings.root_path, settings.database_path)
    with open_rollups(store) as connection:
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


def _check_log_files_directory(directory: Path) -> None:
    """``hk demo --log-files DIR``: DIR must be an existing directory this user can write, found
    out before the demo's first side effect."""
    if not directory.exists():
        raise click.ClickException(f"--log-files: {directory} does not exist; create it first")
    if not directory.is_dir():
        raise click.ClickException(f"--log-files: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise click.ClickException(f"--log-files: cannot write to {directory} (permission denied)")


def _demo_on_log_files(directory: Path, url: str) -> None:
    """Write the demo database's request logs, error logs and jobs into ``directory`` (what is
    new since the last demo, after the first) and point the rest of the demo at them: a copy of
    the config file whose request and job sources are the pino files
    (``var/hk-demo-log-files.yaml``), named by HK_CONFIG for this process."""
    from datetime import UTC, datetime

    import yaml

    from analytics.logs.seed import export_log_files

    db = AppDatabase(url)
    try:
        written = export_log_files(directory, db, datetime.now(UTC))
    finally:
        db.dispose()
    click.echo("")
    click.echo(
        f"Log files: wrote {written.requests:,} requests, {written.errors:,} error lines and "
        f"the jobs' lifecycle lines under {directory} (pino/, winston/, reference/); the "
        "rollups below read pino/access.log* and pino/jobs.log*"
    )
    data = yaml.safe_load(config_path().read_text(encoding="utf-8")) or {}
    analytics = data.setdefault("analytics", None) or {}
    data["analytics"] = analytics
    sources = analytics.setdefault("sources", None) or {}
    analytics["sources"] = sources
    # The files were written before this read: no need to wait for them to settle.
    for key, stem in (("request_logs", "access.log"), ("jobs", "jobs.log")):
        sources[key] = {
            "kind": "json_lines",
            "path": str((directory / "pino" / f"{stem}*").resolve()),
            "format": "pino",
            "settle": "0s",
        }
    derived = Path("var") / "hk-demo-log-files.yaml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.environ["HK_CONFIG"] = str(derived.resolve())


def _demo_partitions_start() -> None:
    """Write var/partitions_start once: the day the demo's first rollup (the last 24 h) starts.
    The Makefile passes it as HK_PARTITIONS_START, which hk.yaml reads, so the UI's partitions
    start with the demo's data and "missing" means missing."""
    from datetime import UTC, datetime, timedelta

    marker = Path("var") / "partitions_start"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{(datetime.now(UTC) - timedelta(hours=24)).date().isoformat()}\n")


def _demo_live_traffic(url: str):
    """The last 2 h of live traffic (hk demo traffic's rows), with a 20-minute error burst on
    the busiest route ending 40 minutes ago when the last 24 h hold no injected incident; that
    incident."""
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from housekeeping.demo.live import (
        DEMO_BURST_ROUTE,
        MAX_CATCH_UP,
        LiveDatabase,
        LiveIncident,
        write_traffic,
    )

    now = datetime.now(UTC).replace(microsecond=0)
    live = LiveDatabase(url)
    try:
        recent = [i for i in live.incidents(now - timedelta(hours=24)) if i.kind != "stuck-job"]
        rng = np.random.default_rng()
        if recent:
            incident = recent[-1]
            newest = live.newest_request() or now - MAX_CATCH_UP
            start = max(newest, now - MAX_CATCH_UP)
        else:
            start = now - MAX_CATCH_UP
            burst = (now - timedelta(minutes=60)).replace(second=0)
            end = burst + timedelta(minutes=20)
            incident = LiveIncident("error-burst", DEMO_BURST_ROUTE, burst, end)
            live.add_incident(incident)
        live.finish_jobs(now - timedelta(minutes=30), now, set())
        written = write_traffic(live, rng, start, now)
    finally:
        live.close()
    click.echo(
        f"Live traffic: {written['request_logs']:,} requests since {start:%H:%M} UTC (as "
        f"`hk demo traffic` writes them); incident in the last 24 h: {incident.kind} "
        f"{incident.start:%H:%M}-{incident.end:%H:%M} UTC"
        + (f" on {incident.route}" if incident.route else "")
    )
    return incident


def _demo_lifecycle(incident) -> None:
    """The rules replayed minute by minute over the incident (hk rules backtest): its lifecycle,
    FIRING ... RESOLVED, with the minute of each notification."""
    from datetime import UTC, datetime, timedelta

    from analytics.alerts.backtest import backtest
    from analytics.alerts.messages import format_value
    from analytics.alerts.service import AlertRuntime
    from housekeeping.history import RunHistory

    runtime = AlertRuntime.load()
    # Until 30 minutes after the incident: enough for the window to clear and the alert to resolve.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    until = min(now, incident.end.replace(second=0, microsecond=0) + timedelta(minutes=30))
    since = max(incident.start - timedelta(minutes=15), now - timedelta(hours=24))
    try:
        result = backtest(
            runtime.rules,
            runtime.analytics.database_path,
            RunHistory.from_config(runtime.config),
            since,
            until,
            timedelta(minutes=1),
            runtime.settings.channel_for(),
            rollup_root=runtime.analytics.root_path,
        )
    finally:
        runtime.close()
    click.echo("")
    click.echo(
        f"The incident's lifecycle ({incident.kind} from {incident.start:%H:%M} to "
        f"{incident.end:%H:%M} UTC), the rules replayed minute by minute "
        f"from {since:%H:%M} to {until:%H:%M}:"
    )
    if not result.notifications:
        click.echo("  no notification")
    for notification in result.notifications:
        group = f" [{notification.key.group}]" if notification.key.group else ""
        value = (
            f" {format_value(notification.unit, notification.value)}"
            if notification.value is not None
            else ""
        )
        click.echo(
            f"  {notification.evaluated_at:%H:%M}  {notification.kind.value.upper():<9} "
            f"{(notification.severity.value if notification.severity else ''):<8} "
            f"{notification.key.rule}{group}{value} -> {notification.channel or 'console'}"
        )


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


@demo.command("traffic")
@click.option(
    "--interval", default="5s", show_default=True, help="Time between two writes, e.g. 5s."
)
@click.option(
    "--rate",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Requests a minute (jobs: 1 per 20 requests, revoked tokens: 1 per 10).",
)
def demo_traffic(interval: str, rate: float) -> None:
    """Keep the demo's application writing: catch up the gap since the last request (at most
    2 h), then append request logs, error logs, jobs and revoked tokens every --interval, shaped
    by the incidents `hk demo incident` records. Stops on Ctrl-C or SIGTERM (make dev starts and
    stops it with the UI)."""
    from housekeeping.demo.live import run_live

    step = positive_duration(interval, "--interval")
    stopping = {"now": False}

    def stop(*_args) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        run_live(
            database_url(),
            step,
            rate,
            report=click.echo,
            stop=lambda: stopping["now"],
            caught_up=_publish_current_hour,
        )


def _publish_current_hour() -> None:
    """The current hour's rollups refreshed once, as the freshness sensor does every minute: a
    demo started after a pause is not "stale" (or silent) while the daemon's sensors start."""

    from analytics.freshness import FreshnessCursor, refresh_recent, refresh_recent_jobs
    from analytics.publish import RollupStore
    from analytics.settings import analytics_settings
    from analytics.views import publish_rollup_views

    config = load_config()
    settings = analytics_settings(config)
    store = RollupStore(settings.root_path, settings.database_path)
    publish_rollup_views(store, settings.day_timezone(config), settings.budgets)
    db = AppDatabase(_default_database_url())
    try:
        now = db.clock()
        outcome = refresh_recent(db, store, settings, FreshnessCursor(), now)
        jobs = refresh_recent_jobs(db, store, settings, now)
    finally:
        db.dispose()
    click.echo(f"published the current hour: {outcome.summary()}; {jobs}")


@demo.command("incident")
@click.argument("kind", type=click.Choice(["error-burst", "slow", "outage", "stuck-job"]))
@click.option("--route", default=None, help="Only this route (default: every route).")
@click.option("--for", "duration", default="10m", show_default=True, help="How long, e.g. 10m.")
@config_option
def demo_incident(kind: str, route: str | None, duration: str, config_file: str | None) -> None:
    """Inject an incident into the live demo traffic (hk demo traffic / make dev), from now for
    --for: error-burst (30 % 5xx), slow (about 1.8 s a request), outage (every request 503),
    stuck-job (a job active for longer than analytics.stuck_after)."""
    from datetime import UTC, datetime

    from analytics.settings import analytics_settings
    from housekeeping.demo.live import LiveDatabase, inject_incident, parse_incident

    length = positive_duration(duration, "--for")
    parse_incident(kind, route, length)
    config = load_config(config_file)
    stuck_after = analytics_settings(config, config_file or "config").stuck_after
    live = LiveDatabase(database_url())
    try:
        incident = inject_incident(live, kind, route, length, datetime.now(UTC), stuck_after)
    finally:
        live.close()
    where = f" on {incident.route}" if incident.route else ""
    click.echo(
        f"{incident.kind}{where} from {incident.start:%H:%M:%S} to {incident.end:%H:%M:%S} UTC "
        "injected: watch the asset checks in the UI (alert_* on analytics/requests_minute or "
        "analytics/jobs_hourly), the alert_rules_sensor ticks and Slack (or the console)."
    )


# `hk rollups backfill` runs the analytics Dagster shell, which only the roots may wire.
@rollups.command("backfill")
@click.argument("dataset")
@click.option("--since", default=None, help="Backfill this far back from now, e.g. 7d or 36h.")
@click.option(
    "--from",
    "start",
    default=None,
    help="First moment, ISO (2026-11-01 or 2026-11-01T13:00); without an offset: UTC for "
    "hourly datasets, analytics.timezone for daily ones.",
)
@click.option("--to", "end", default=None, help="End (exclusive), as --from; default: now.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@config_option
def rollups_backfill(
    dataset: str,
    since: str | None,
    start: str | None,
    end: str | None,
    quiet: bool,
    config_file: str | None,
) -> None:
    """Recompute DATASET's partitions of a time window through Dagster, as the UI's backfill
    does: the asset's backfill policy cuts them into runs (24 hours per run for the hourly
    rollups), each run recorded in the Dagster instance ($DAGSTER_HOME) and shown in the UI.
    """
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from tqdm import tqdm

    from analytics.datasets import all_datasets
    from analytics.defs.backfill import plan_backfill, rollup_of, run_backfill
    from analytics.defs.definitions import build_analytics_defs
    from analytics.defs.partitions import Partitioning
    from analytics.settings import analytics_settings
    from housekeeping.config import config_path
    from housekeeping.dagster_runs import open_instance

    if (since is None) == (start is None):
        raise click.UsageError("give --since, or --from (with an optional --to)")
    if since is not None and end is not None:
        raise click.UsageError("--to goes with --from, not with --since")
    found = rollup_of(dataset)
    if found is None:
        known = ", ".join(sorted(d.name for d in all_datasets()))
        raise click.BadParameter(
            f"no dataset {dataset!r} (datasets: {known})", param_hint="DATASET"
        )
    written, rollup = found
    config = load_config(config_file)
    settings = analytics_settings(config, config_file or "config")
    daily = rollup.partitioning is Partitioning.DAILY
    zone = ZoneInfo(settings.day_timezone(config)) if daily else ZoneInfo("UTC")
    now = datetime.now(UTC)
    if since is not None:
        window_start, window_end = now - positive_duration(since, "--since"), now
    else:
        assert start is not None
        window_start = parse_moment(start, "--from", zone)
        window_end = parse_moment(end, "--to", zone) if end is not None else now
        if window_start >= window_end:
            raise click.BadParameter(
                f"{start!r} is not before {end or 'now'!r}", param_hint="--from/--to"
            )
    defs = build_analytics_defs(config, str(Path(config_file or config_path()).resolve()))
    plan = plan_backfill(defs, written, rollup, window_start, window_end, now)
    instance = open_instance()
    click.echo(
        f"{written.name}: {len(plan.partition_keys)} {plan.kind} partitions from "
        f"{plan.partition_keys[0]} to {plan.partition_keys[-1]} in {len(plan.chunks)} run(s) of "
        f"up to {plan.max_per_run} ({rollup.job}, backfill {plan.backfill_id})"
    )
    with tqdm(
        total=len(plan.partition_keys), desc=written.name, unit="partition", disable=quiet
    ) as progress:
        runs = run_backfill(
            defs, instance, plan, lambda run: progress.update(len(run.partition_keys))
        )
    click.echo(
        f"done: {len(runs)} run(s), {len(plan.partition_keys)} partitions; in the Dagster UI: "
        f"Runs, tag hk/backfill={plan.backfill_id}"
    )


def _report_line(asset: str, metadata: dict) -> str:
    if "matched_files" in metadata:  # a files policy
        return (
            f"  {asset:<22} compressed {metadata.get('compressed', 0)}, archived "
            f"{metadata.get('archived', 0)}, deleted {metadata.get('deleted', 0)} of "
            f"{metadata['matched_files']} files, freed {metadata.get('bytes_freed', 0):,} bytes"
        )
    if "runs_deleted" in metadata:
        return (
            f"  {asset:<22} purged {metadata['runs_deleted']} Dagster runs, kept "
            f"{metadata.get('materializations_reported', 0)} latest materializations"
        )
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
main.add_command(rollups)
main.add_command(rules)
main.add_command(alerts)
main.add_command(status)
main.add_command(metrics)
main.add_command(export)


if __name__ == "__main__":
    main()
