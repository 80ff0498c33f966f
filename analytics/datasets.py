"""Every published dataset: its name, description and columns, and the registry of them all.

Data only: the rollups (analytics/rollups/) write these datasets, views.py publishes a view over
each, the Dagster assets declare their columns, the alerts read ``requests_minute``. Nothing here
imports any of them, so every one can import this module.

Times are stored as UTC ``TIMESTAMP`` (no zone); daily partitions and views follow the configured
time zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One published column: its name, DuckDB type and the description analysts read."""

    name: str
    type: str  # DuckDB type
    description: str


@dataclass(frozen=True)
class Dataset:
    """A published dataset: one folder of Parquet partitions and one view of the same name."""

    name: str
    description: str
    columns: tuple[Column, ...]

    @property
    def typed_columns(self) -> list[tuple[str, str]]:
        """(column name, DuckDB type) pairs, in published order."""
        return [(column.name, column.type) for column in self.columns]

    def select_list(self) -> str:
        """Columns in their published order and types, from a relation with the same names."""
        return ", ".join(
            f"CAST({column.name} AS {column.type}) AS {column.name}" for column in self.columns
        )


# The mergeable latency sketch (analytics/sketch.py): (bucket, count) pairs, merged by summing.
SKETCH_TYPE = "STRUCT(bucket SMALLINT, count INTEGER)[]"


REQUESTS_MINUTE = Dataset(
    "requests_minute",
    "HTTP requests per minute x route x method, with a mergeable latency sketch.",
    (
        Column("minute", "TIMESTAMP", "start of the minute (UTC)"),
        Column("route", "VARCHAR", "route pattern, e.g. /api/v1/users/:id"),
        Column("method", "VARCHAR", "HTTP method"),
        Column("requests", "BIGINT", "requests in the minute"),
        Column("status_2xx", "BIGINT", "responses 200-299"),
        Column("status_3xx", "BIGINT", "responses 300-399"),
        Column("status_4xx", "BIGINT", "responses 400-499 (429 included)"),
        Column("status_5xx", "BIGINT", "responses 500-599"),
        Column("status_429", "BIGINT", "responses 429 (rate limited), also counted in status_4xx"),
        Column("status_other", "BIGINT", "any other status code, or none (NULL)"),
        Column("latency_min_ms", "DOUBLE", "fastest request (ms); NULL when none has a duration"),
        Column("latency_max_ms", "DOUBLE", "slowest request (ms); NULL when none has a duration"),
        Column(
            "latency_sum_ms",
            "DOUBLE",
            "sum of durations (ms) of the requests that have one: divide by the sketch's total "
            "count (not by requests) for the mean",
        ),
        Column(
            "latency_sketch",
            SKETCH_TYPE,
            "latency histogram of the requests with a duration: (bucket, count) pairs, 1 % "
            "relative accuracy; merge by summing",
        ),
    ),
)


JOBS_HOURLY = Dataset(
    "jobs_hourly",
    "Background jobs per hour x queue x name: outcomes, durations, backlog and stuck snapshots.",
    (
        Column("hour", "TIMESTAMP", "start of the hour (UTC)"),
        Column("queue", "VARCHAR", "queue name"),
        Column("name", "VARCHAR", "job name"),
        Column("created", "BIGINT", "jobs created in the hour"),
        Column("completed", "BIGINT", "jobs that completed in the hour"),
        Column("failed", "BIGINT", "jobs that failed (for good) in the hour"),
        Column("retried", "BIGINT", "jobs finished in the hour that needed more than one attempt"),
        Column("duration_avg_ms", "DOUBLE", "mean run time of the jobs finished in the hour (ms)"),
        Column("duration_p95_ms", "DOUBLE", "p95 run time of the jobs finished in the hour (ms)"),
        Column("duration_sketch", SKETCH_TYPE, "run time histogram; merge by summing counts"),
        Column("backlog", "BIGINT", "jobs waiting at the end of the hour (now, for this hour)"),
        Column("stuck", "BIGINT", "jobs active for longer than stuck_after at that moment"),
    ),
)


API_USAGE_DAILY = Dataset(
    "api_usage_daily",
    "Calls to paid external APIs per day x service x endpoint: calls, errors, tokens, cost, "
    "response time.",
    (
        Column("day", "DATE", "the day in the analytics time zone"),
        Column("service", "VARCHAR", "external service"),
        Column("endpoint", "VARCHAR", "endpoint or model"),
        Column("calls", "BIGINT", "calls made"),
        Column("errors", "BIGINT", "calls that did not succeed"),
        Column("tokens", "BIGINT", "tokens used"),
        Column("cost_usd", "DOUBLE", "cost in USD"),
        Column("response_time_p95_ms", "DOUBLE", "p95 response time (ms)"),
        Column("response_time_sketch", SKETCH_TYPE, "response time histogram; merge by summing"),
    ),
)


HOUSEKEEPING_RUNS = Dataset(
    "housekeeping_runs",
    "One row per housekeeping run (cleanup or retention of one policy) with its recorded metrics.",
    (
        Column("day", "DATE", "the day the run finished, in the analytics time zone"),
        Column("run_id", "BIGINT", "the run's id in the housekeeping run history"),
        Column("policy", "VARCHAR", "the policy (e.g. revoked_tokens)"),
        Column("table_name", "VARCHAR", "the table the policy cleans"),
        Column("status", "VARCHAR", "success, failed, or stopped (terminated on request)"),
        Column("started_at", "TIMESTAMP", "when the run started (UTC)"),
        Column("finished_at", "TIMESTAMP", "when the run finished (UTC)"),
        Column("deleted", "BIGINT", "rows deleted"),
        Column("expected_deleted", "BIGINT", "expired rows counted before deleting"),
        Column("remaining_expired", "BIGINT", "expired rows left after the run (should be 0)"),
        Column("archived_rows", "BIGINT", "rows written to the archive"),
        Column("batches", "INTEGER", "delete transactions"),
        Column("duration_ms", "DOUBLE", "run time (ms)"),
        Column("error", "VARCHAR", "the error of a failed run"),
        Column("dagster_run_id", "VARCHAR", "the Dagster run that did it"),
    ),
)


HOUSEKEEPING_SUMMARY = Dataset(
    "housekeeping_summary",
    "Per housekeeping policy: the cleanup metrics and health status hk status shows.",
    (
        Column("policy", "VARCHAR", "the policy"),
        Column("table_name", "VARCHAR", "the table it cleans"),
        Column(
            "status",
            "VARCHAR",
            "healthy; degraded after a failed run; critical after health.critical_after_failures (3) in a row",
        ),
        Column("consecutive_failures", "INTEGER", "failed runs in a row, newest first"),
        Column("total_runs", "BIGINT", "runs counted (the newest 500, as hk status)"),
        Column("successful_runs", "BIGINT", "of those, runs that succeeded"),
        Column("failed_runs", "BIGINT", "of those, runs that failed"),
        Column("total_deleted", "BIGINT", "rows (tokens) deleted by those runs"),
        Column("average_cleanup_ms", "DOUBLE", "mean run time of the last 10 completed runs"),
        Column("last_run", "TIMESTAMP", "when the newest run finished (UTC)"),
        Column("last_success", "TIMESTAMP", "when the newest successful run finished (UTC)"),
        Column("last_failure", "TIMESTAMP", "when the newest failed run finished (UTC)"),
        Column("last_error", "VARCHAR", "the newest failed run's error"),
        Column(
            "zero_deletes_warning",
            "BOOLEAN",
            "0 rows deleted in health.zero_deleted_runs_warning (default 3) successful runs in a row",
        ),
        Column(
            "slow_warning",
            "BOOLEAN",
            "the last health.average_over_runs (10) completed runs averaged over health.slow_average (1s)",
        ),
        Column("computed_at", "TIMESTAMP", "when this summary was computed (UTC)"),
    ),
)


TOKEN_REVOCATIONS_DAILY = Dataset(
    "token_revocations_daily",
    "Revoked tokens per day: revoked, expired, cleaned up, and how revocations spread over users.",
    (
        Column("day", "DATE", "the day in the analytics time zone"),
        Column("revoked", "BIGINT", "tokens revoked that day"),
        Column("expired", "BIGINT", "revoked tokens whose expiry fell that day (today: until now)"),
        Column("cleaned_up", "BIGINT", "rows the token cleanup deleted in runs finished that day"),
        Column("revoking_users", "BIGINT", "distinct users with a revocation that day"),
        Column("max_revocations_per_user", "BIGINT", "the most revocations of a single user"),
    ),
)


TOKEN_REVOCATIONS_BY_USER = Dataset(
    "token_revocations_by_user",
    "Token revocations per day x user, the user id replaced by a keyed hash.",
    (
        Column("day", "DATE", "the day in the analytics time zone"),
        Column("user_hash", "VARCHAR", "sha256(key || user id), hex; NULL for tokens without user"),
        Column("revoked", "BIGINT", "tokens of this user revoked that day"),
    ),
)


TABLE_STATS = Dataset(
    "table_stats",
    "Snapshots of every housekept table: rows, rows past the policy's cutoff, size on disk.",
    (
        Column("taken_at", "TIMESTAMP", "when the snapshot was taken (database clock, UTC)"),
        Column("policy", "VARCHAR", "the housekeeping policy"),
        Column("table_name", "VARCHAR", "its table"),
        Column("rows", "BIGINT", "rows in the table"),
        Column("expired_rows", "BIGINT", "rows past the policy's cutoff (the next run deletes)"),
        Column("cutoffs", "VARCHAR", "the cutoff(s) applied (UTC, ISO 8601)"),
        Column("total_bytes", "BIGINT", "size on disk: table, indexes and TOAST"),
        Column("table_bytes", "BIGINT", "the table alone (with TOAST on PostgreSQL)"),
        Column("index_bytes", "BIGINT", "its indexes"),
    ),
)


LOG_INGEST_ERRORS = Dataset(
    "log_ingest_errors",
    "Lines read from log files per hour x file x reason (bad ones by what was wrong), for a "
    "log-file source (analytics/logs/).",
    (
        Column("hour", "TIMESTAMP", "the UTC hour the lines were read in"),
        Column("file", "VARCHAR", "the log file (its path when read)"),
        Column(
            "reason",
            "VARCHAR",
            "request, error (an error-level line), job (a job lifecycle line), other (none of "
            "them), or what made a line bad: malformed_json, "
            "not_an_object, invalid_encoding, control_characters, line_too_long, "
            "missing_timestamp, bad_timestamp, damaged_gzip, missing_job_id",
        ),
        Column("lines", "BIGINT", "lines of that file and reason read in the hour"),
        Column("bad", "BOOLEAN", "the reason makes the line bad (not counted in any rollup)"),
        Column(
            "source",
            "VARCHAR",
            "the log source that read them: request_logs or jobs (a file both read is counted "
            "by each)",
        ),
    ),
)


LOG_ERRORS_HOURLY = Dataset(
    "log_errors_hourly",
    "Error-level log lines that are not requests per hour x route x error name, for a log-file "
    "source (never the message or the stack; a request logged at error level is a request).",
    (
        Column("hour", "TIMESTAMP", "start of the hour (UTC)"),
        Column("route", "VARCHAR", "the route of the request that failed, (none) without one"),
        Column("error_name", "VARCHAR", "the error's name or type (ValidationError), (unnamed)"),
        Column("errors", "BIGINT", "error lines in the hour"),
    ),
)


PG_HEALTH = Dataset(
    "pg_health",
    "Health snapshots of the application database, one a minute: connections by state against "
    "max_connections, the longest transaction, lock waits, database size (SQLite: file size only).",
    (
        Column("taken_at", "TIMESTAMP", "when the snapshot was taken (database clock, UTC)"),
        Column("engine", "VARCHAR", "postgresql or sqlite"),
        Column("database_bytes", "BIGINT", "pg_database_size of the database; SQLite: file size"),
        Column("max_connections", "INTEGER", "the server's max_connections"),
        Column("connections", "INTEGER", "client backends connected (all databases)"),
        Column("connections_active", "INTEGER", "of those, running a statement"),
        Column("connections_idle", "INTEGER", "of those, idle"),
        Column(
            "connections_idle_in_transaction",
            "INTEGER",
            "of those, idle in transaction (aborted ones included)",
        ),
        Column("connections_other", "INTEGER", "of those, in another state (fastpath, disabled)"),
        Column(
            "connections_hidden",
            "INTEGER",
            "of those, sessions of other roles whose state this role may not see "
            "(no pg_read_all_stats)",
        ),
        Column("connections_used", "DOUBLE", "connections / max_connections (0-1)"),
        Column(
            "longest_transaction_s",
            "DOUBLE",
            "age of the oldest open transaction (s), 0 when none; it holds back vacuum",
        ),
        Column(
            "longest_idle_in_transaction_s",
            "DOUBLE",
            "the longest a session has sat idle in transaction (s), 0 when none",
        ),
        Column("lock_waiting_sessions", "INTEGER", "sessions waiting for a lock (pg_locks)"),
        Column(
            "missing",
            "VARCHAR",
            "what the role could not read (one line), NULL when it read everything",
        ),
    ),
)


PG_TABLE_HEALTH = Dataset(
    "pg_table_health",
    "Per housekept table and health snapshot: live and dead tuples, the last (auto)vacuum and "
    "(auto)analyze (pg_stat_user_tables; PostgreSQL only).",
    (
        Column("taken_at", "TIMESTAMP", "when the snapshot was taken (database clock, UTC)"),
        Column("table_name", "VARCHAR", "the housekept table (partitions summed)"),
        Column("live_tuples", "BIGINT", "n_live_tup"),
        Column("dead_tuples", "BIGINT", "n_dead_tup: deleted rows vacuum has not reclaimed"),
        Column("dead_ratio", "DOUBLE", "dead_tuples / live_tuples (NULL when no live tuples)"),
        Column("last_vacuum", "TIMESTAMP", "last manual VACUUM (UTC)"),
        Column("last_autovacuum", "TIMESTAMP", "last autovacuum (UTC)"),
        Column("last_analyze", "TIMESTAMP", "last manual ANALYZE (UTC)"),
        Column("last_autoanalyze", "TIMESTAMP", "last autoanalyze (UTC)"),
    ),
)


PG_STATEMENT_STATS = Dataset(
    "pg_statement_stats",
    "Per normalized statement and health snapshot, when pg_stat_statements is installed: calls "
    "and execution time since the previous snapshot. The query text stays here (never in Slack).",
    (
        Column("taken_at", "TIMESTAMP", "when the snapshot was taken (database clock, UTC)"),
        Column("queryid", "VARCHAR", "pg_stat_statements.queryid (the rules' group)"),
        Column("query", "VARCHAR", "the normalized statement text"),
        Column("calls", "BIGINT", "calls since the previous snapshot"),
        Column("exec_ms", "DOUBLE", "execution time of those calls (ms)"),
        Column("mean_exec_ms", "DOUBLE", "exec_ms / calls (ms)"),
        Column(
            "max_exec_ms",
            "DOUBLE",
            "slowest call since the statistics were reset (ms; pg_stat_statements keeps no "
            "per-interval maximum)",
        ),
        Column("calls_total", "BIGINT", "calls since the statistics were reset"),
        Column("exec_ms_total", "DOUBLE", "execution time since the statistics were reset (ms)"),
    ),
)


REQUEST_CLIENTS_MINUTE = Dataset(
    "request_clients_minute",
    "HTTP requests per minute x hashed client address x hashed user: the security signals "
    "(rate-limited clients, busy users). Raw addresses and user ids are never stored.",
    (
        Column("minute", "TIMESTAMP", "start of the minute (UTC)"),
        Column(
            "client_hash",
            "VARCHAR",
            "sha256(key || client IP), hex (the token rollup's key); NULL without an address",
        ),
        Column("user_hash", "VARCHAR", "sha256(key || user id), hex; NULL for anonymous requests"),
        Column("requests", "BIGINT", "requests in the minute"),
        Column("rate_limited", "BIGINT", "of those, responses 429 (rate limited)"),
    ),
)


def all_datasets() -> Sequence[Dataset]:
    """Every published dataset, in the order the views file defines them."""
    return (
        REQUESTS_MINUTE,
        JOBS_HOURLY,
        API_USAGE_DAILY,
        HOUSEKEEPING_RUNS,
        HOUSEKEEPING_SUMMARY,
        TOKEN_REVOCATIONS_DAILY,
        TOKEN_REVOCATIONS_BY_USER,
        TABLE_STATS,
        LOG_INGEST_ERRORS,
        LOG_ERRORS_HOURLY,
        PG_HEALTH,
        PG_TABLE_HEALTH,
        PG_STATEMENT_STATS,
        REQUEST_CLIENTS_MINUTE,
    )
