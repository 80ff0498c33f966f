"""The product's state in the Prometheus text format (``hk metrics``, ``hk metrics serve``).

One collector, read afresh on every scrape, exposes:

- per housekeeping policy, the cleanup metrics of ``hk status --json`` (from the run history):
  runs, failed runs, rows deleted (over the newest 500 runs, as ``hk status``), the average
  duration of the last completed runs, the last success, consecutive failures, and the health
  as a number (0 healthy, 1 degraded, 2 critical);
- per published dataset, the newest time in its rows (rollup freshness: ``time() - x``);
- per rule of the pack (and per group it has a state for), the alert state (0 ok, 1 pending,
  2 firing, 3 resolved) and the severity it fires at (0 none, 1 warning, 2 high, 3 critical);
- the application database's health gauges of the newest published ``pg_health`` snapshot
  (analytics_pg_health_sensor takes one a minute; a scrape never queries the application
  database), and per housekept table its dead and live tuples.

A source that cannot be read (the state database down, nothing published yet) is left out of
that scrape and ``hk_metrics_source_up{source=...}`` says 0; the rest is still served. Values are
gauges: the counts cover a window of the history, not a counter since start. Rendering is the
``prometheus-client`` library's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import duckdb
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from analytics.alerts.model import AlertState, Severity
from analytics.alerts.settings import AlertsSettings, alerts_settings
from analytics.alerts.store import AlertStore
from analytics.datasets import PG_HEALTH, PG_TABLE_HEALTH
from analytics.publish import RollupStore
from analytics.sandbox import newest_published, open_rollups
from analytics.settings import AnalyticsSettings, analytics_settings
from housekeeping.config import HousekeepingConfig, load_config
from housekeeping.errors import HkError, one_line
from housekeeping.history import HealthStatus, RunHistory

LOG = logging.getLogger(__name__)
PREFIX = "hk"
HEALTH_VALUE = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.CRITICAL: 2}
STATE_VALUE = {
    AlertState.OK: 0,
    AlertState.PENDING: 1,
    AlertState.FIRING: 2,
    AlertState.RESOLVED: 3,
}
SEVERITY_VALUE = {None: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
# pg_health columns exposed as gauges: (column, metric name, help).
PG_GAUGES = (
    ("connections", "pg_connections", "client connections at the newest snapshot"),
    ("max_connections", "pg_max_connections", "the server's max_connections"),
    ("connections_active", "pg_connections_active", "connections running a statement"),
    (
        "connections_idle_in_transaction",
        "pg_connections_idle_in_transaction",
        "connections idle in transaction",
    ),
    ("connections_used", "pg_connections_used_ratio", "connections / max_connections"),
    ("longest_transaction_s", "pg_longest_transaction_seconds", "age of the oldest transaction"),
    ("lock_waiting_sessions", "pg_lock_waiting_sessions", "sessions waiting for a lock"),
    ("database_bytes", "pg_database_size_bytes", "database size (SQLite: the file)"),
)
# What a source failing to read may raise (each a one-line error).
SOURCE_ERRORS = (HkError, SQLAlchemyError, duckdb.Error, OSError)


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


class HousekeepingCollector(Collector):
    """Collects every gauge of the module from the config file ``config_file`` on each scrape.

    A config that cannot be loaded raises its ConfigError; with ``serving`` (the endpoint, whose
    config may be edited while it runs) the scrape instead holds only
    ``hk_metrics_source_up{source="config"} 0`` and the error is logged in one line.
    """

    def __init__(self, config_file: str | None = None, *, serving: bool = False) -> None:
        self.config_file = config_file
        self.serving = serving
        self._lock = threading.Lock()  # one scrape at a time: the reads share nothing

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                config = load_config(self.config_file)
                source = self.config_file or "config"
                # A mistake in the config's sections is the config's error (ConfigError), not
                # a source that happens to be down: parsed before any source is read.
                analytics = analytics_settings(config, source)
                alerts = alerts_settings(config, source)
            except HkError as exc:
                if not self.serving:
                    raise
                LOG.warning("hk metrics serve: %s", one_line(str(exc)))
                up = _gauge(
                    "metrics_source_up", "1 when the source was read this scrape", ["source"]
                )
                up.add_metric(["config"], 0)
                yield up
                return
            up = _gauge("metrics_source_up", "1 when the source was read this scrape", ["source"])
            for name, read in (
                ("history", lambda: self._policies(config)),
                ("rollups", lambda: self._rollups(analytics)),
                ("alerts", lambda: self._alerts(config, alerts)),
            ):
                try:
                    families = list(read())
                except SOURCE_ERRORS:
                    up.add_metric([name], 0)
                    continue
                up.add_metric([name], 1)
                yield from families
            yield up

    def _policies(self, config: HousekeepingConfig) -> Iterator[Metric]:
        gauges = {
            "runs": _gauge("cleanup_runs", "runs counted (the newest 500)", ["policy"]),
            "failed": _gauge("cleanup_failed_runs", "of those, failed runs", ["policy"]),
            "deleted": _gauge("cleanup_rows_deleted", "rows deleted by those runs", ["policy"]),
            "average": _gauge(
                "cleanup_average_duration_seconds",
                "mean duration of the last completed runs",
                ["policy"],
            ),
            "success": _gauge(
                "cleanup_last_success_timestamp_seconds",
                "when the newest successful run finished (Unix time)",
                ["policy"],
            ),
            "consecutive": _gauge(
                "cleanup_consecutive_failures", "failed runs in a row", ["policy"]
            ),
            "health": _gauge(
                "cleanup_health", "0 healthy, 1 degraded, 2 critical (hk status)", ["policy"]
            ),
        }
        history = RunHistory.from_config(config)
        try:
            for policy in sorted(config.every_policy()):
                health = history.health(policy)
                values: dict[str, float | None] = {
                    "runs": health.total_runs,
                    "failed": health.failed_runs,
                    "deleted": health.total_deleted,
                    "average": (
                        health.average_duration_ms / 1000
                        if health.average_duration_ms is not None
                        else None
                    ),
                    "success": _timestamp(health.last_success),
                    "consecutive": health.consecutive_failures,
                    "health": HEALTH_VALUE[health.status],
                }
                for key, value in values.items():
                    if value is not None:
                        gauges[key].add_metric([policy], value)
        finally:
            history.dispose()
        yield from gauges.values()

    def _rollups(self, settings: AnalyticsSettings) -> Iterator[Metric]:
        store = RollupStore(settings.root_path, settings.database_path)
        newest = _gauge(
            "rollup_newest_data_timestamp_seconds",
            "the newest time in a published dataset's rows (Unix time; dates at their midnight UTC)",
            ["dataset"],
        )
        for dataset, (value, _) in sorted(newest_published(store).items()):
            newest.add_metric([dataset], _naive_utc_timestamp(value))
        yield newest
        if not store.database.exists() and store.published_manifest() is None:
            return
        yield from _database_health(store)

    def _alerts(self, config: HousekeepingConfig, settings: AlertsSettings) -> Iterator[Metric]:
        state = _gauge("alert_state", "0 ok, 1 pending, 2 firing, 3 resolved", ["rule", "group"])
        severity = _gauge(
            "alert_severity", "0 none, 1 warning, 2 high, 3 critical", ["rule", "group"]
        )
        rules = settings.load_rules(config.health)
        store = AlertStore(settings.database_url)
        try:
            with store.transaction() as conn:
                records = store.load_states(conn)
        finally:
            store.dispose()
        seen = set()
        for key, record in sorted(records.items()):
            seen.add(key.rule)
            state.add_metric([key.rule, key.group], STATE_VALUE[record.state])
            severity.add_metric([key.rule, key.group], SEVERITY_VALUE[record.severity])
        for rule in rules.rules:
            if rule.name not in seen:  # never evaluated to anything but ok
                state.add_metric([rule.name, ""], 0)
                severity.add_metric([rule.name, ""], 0)
        yield state
        yield severity


def _naive_utc_timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).timestamp()
    return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()


def _database_health(store: RollupStore) -> Iterator[Metric]:
    with open_rollups(store, timezone="UTC") as connection:
        try:
            row = connection.execute(
                f"SELECT * FROM {PG_HEALTH.name} ORDER BY taken_at DESC LIMIT 1"
            ).fetchone()
            names = [column[0] for column in connection.description]
            tables = connection.execute(
                f"SELECT table_name, dead_tuples, live_tuples FROM {PG_TABLE_HEALTH.name} "
                f"WHERE taken_at = (SELECT max(taken_at) FROM {PG_TABLE_HEALTH.name}) "
                "ORDER BY table_name"
            ).fetchall()
        except duckdb.CatalogException:
            return  # published before the health datasets existed
    if row is None:
        return
    snapshot = dict(zip(names, row, strict=True))
    taken = _gauge("pg_snapshot_timestamp_seconds", "when the newest health snapshot was taken")
    taken.add_metric([], _naive_utc_timestamp(snapshot["taken_at"]))
    yield taken
    for column, name, documentation in PG_GAUGES:
        if snapshot[column] is not None:
            gauge = _gauge(name, documentation)
            gauge.add_metric([], float(snapshot[column]))
            yield gauge
    dead = _gauge("pg_dead_tuples", "dead tuples of a housekept table", ["table"])
    live = _gauge("pg_live_tuples", "live tuples of a housekept table", ["table"])
    for table, dead_tuples, live_tuples in tables:
        dead.add_metric([table], dead_tuples)
        live.add_metric([table], live_tuples)
    yield dead
    yield live


def metrics_registry(config_file: str | None = None, *, serving: bool = False) -> CollectorRegistry:
    """A registry holding only the product's collector (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HousekeepingCollector(config_file, serving=serving))
    return registry


def render_metrics(config_file: str | None = None) -> str:
    """Every gauge in the Prometheus text format (0.0.4). Raises ConfigError for a bad config
    (its ``analytics:`` and ``alerts:`` sections included)."""
    return generate_latest(metrics_registry(config_file)).decode()


def serve_metrics(host: str, port: int, config_file: str | None = None) -> Any:
    """Serve ``/metrics`` on ``host:port`` in a background thread; returns the HTTP server
    (``shutdown()`` stops it). Prometheus or OpenMetrics text, as the scraper's Accept header
    asks; a config broken while serving gives ``hk_metrics_source_up{source="config"} 0``, not
    an error page. Raises OSError when the address is in use."""
    registry = metrics_registry(config_file, serving=True)
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
