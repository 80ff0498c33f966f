"""Token revocations per day, and per (hashed) user: the reference's per-user revocation analytics.

Per day in the analytics time zone:

- ``revoked``: tokens whose ``revoked_at`` falls in the day;
- ``expired``: tokens whose ``expires_at`` falls in the day (for today: up to now);
- ``cleaned_up``: rows the token cleanup deleted in runs that finished that day, from the
  housekeeping run history (every policy whose table is the token table);
- per user: revocations of the day, with the user id replaced by a keyed SHA-256
  (``sha256(key || user_id)``; the key comes from ``analytics.user_hash_key_env`` or a key file
  in ``archive.root``, never beside the published rollups). Raw user ids are never written.

Cleanup deletes expired rows from the token table, so a day recomputed later would see fewer rows.
Two things keep an old day's counts whole:

1. when a policy archives the token table, the archived rows (the cleanup's own Parquet files)
   are read along with the live ones, de-duplicated by primary key (a row that is in both, e.g.
   a batch whose delete did not commit, counts once);
2. a recomputation never lowers a published count: each counter (and each user's count) keeps
   the larger of the published and the recomputed value, and the run reports how many it kept.
   Rows only leave the table through cleanup, so a lower recount means lost rows, not a
   correction. To really lower a day (a data fix), delete its two files and re-materialise.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb

from analytics.datasets import TOKEN_REVOCATIONS_BY_USER, TOKEN_REVOCATIONS_DAILY
from analytics.extract import (
    ColumnKind,
    Source,
    SourceColumn,
    TimeRange,
    check_source,
    rows_without,
    stream_rows,
)
from analytics.publish import PublishError, RollupStore
from analytics.rollups.cleaned_up import (
    Cleanup,
    archive_files,
    archived_instant,
    primary_key,
    unreadable_archive,
)
from analytics.rollups.engine import (
    RollupResult,
    day_bounds,
    duckdb_session,
    load_stream,
    preview_rows,
    replace_dataset_partition,
    timestamp_literal,
)
from analytics.settings import AnalyticsSettings
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.history import RunHistory
from housekeeping.sql import TableName, quote_identifier, sql_string

KEY_FILE = ".user_hash_key"


@dataclass(frozen=True)
class TokenRollupResult:
    daily: RollupResult
    by_user: RollupResult
    # Counters (daily and per user) where the published value was higher than the recount.
    kept_from_published: int


def user_hash_key(settings: AnalyticsSettings, config: HousekeepingConfig) -> str:
    """The hashing key: the environment variable, else a random key kept in a file.

    The file lives in ``archive.root``, beside the raw rows the cleanup archives, and never
    under ``analytics.root``: whoever can read the published rollups must not be able to read the
    key, or hashed user ids (often small integers) could be recomputed. It is created once (mode
    0600, written in full before it appears) so hashes stay stable across runs. Never logged or
    put in metadata.
    """
    from_env = os.environ.get(settings.user_hash_key_env)
    if from_env:
        return from_env
    path = Path(config.archive.root) / KEY_FILE
    if path.exists():
        return path.read_text().strip()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{KEY_FILE}.{os.getpid()}.tmp")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, path)  # atomic, and fails if another run created the key first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    except OSError as exc:
        raise PublishError(f"archive.root: cannot create the user hash key {path}: {exc}") from None
    return path.read_text().strip()


def token_policies(config: HousekeepingConfig, table: TableName) -> list[str]:
    """The housekeeping policies that clean the token table."""
    return list(Cleanup.of(config, table).policies)


def revoked_tokens_source(settings: AnalyticsSettings, key_columns: tuple[str, ...]) -> Source:
    """The token table ``analytics.sources.revoked_tokens`` maps, with its key columns."""
    config = settings.sources.revoked_tokens
    key = "analytics.sources.revoked_tokens"
    columns = [
        SourceColumn("user_id", config.user_id, ColumnKind.TEXT, f"{key}.user_id"),
        SourceColumn("revoked_at", config.revoked_at, ColumnKind.TIMESTAMP, f"{key}.revoked_at"),
        SourceColumn("expires_at", config.expires_at, ColumnKind.TIMESTAMP, f"{key}.expires_at"),
    ]
    # Text: any type works, the key is only compared with the archive's copy of itself.
    columns += [
        SourceColumn(f"key_{index}", name, ColumnKind.TEXT, f"{key}.table (its key column)")
        for index, name in enumerate(key_columns)
    ]
    return Source(config.table, key, tuple(columns), config.timezone)


def refresh_token_revocations(
    db: AppDatabase,
    store: RollupStore,
    settings: AnalyticsSettings,
    config: HousekeepingConfig,
    history: RunHistory,
    day: date,
    timezone: str,
    now: datetime,
    *,
    check: bool = True,
) -> TokenRollupResult:
    """Recompute one day (in ``timezone``) and replace its two files, never lowering a count."""
    started = time.perf_counter()
    start, end = day_bounds(day, timezone)
    table = settings.sources.revoked_tokens.table
    key_columns = primary_key(db, config, table)
    source = revoked_tokens_source(settings, key_columns)
    if check:
        source = check_source(db, source)  # a policy's configured primary_key must exist too
    keys = [f"key_{index}" for index in range(len(key_columns))]
    cleanup = Cleanup.of(config, table)
    # A token expires after it was revoked, so every row of the day expires from its start on.
    files = (
        archive_files(cleanup, source, [TimeRange("expires_at", start, None)])
        if key_columns
        else []
    )
    expired_until = min(end, now)
    policies = cleanup.policies
    cleaned_up = sum(
        recorded.run.deleted
        for recorded in history.finished_between(start, end)
        if recorded.run.policy in policies
    )
    hash_key = user_hash_key(settings, config)
    low, high = timestamp_literal(start), timestamp_literal(end)
    expired_high = timestamp_literal(expired_until)
    key_expression = (
        "concat_ws('|', " + ", ".join(f"CAST({name} AS VARCHAR)" for name in keys) + ")"
        if keys
        else "CAST(row_number() OVER () AS VARCHAR)"
    )
    with duckdb_session(store.root / ".tmp") as connection:
        for name, column, upper in (
            ("live_revoked", "revoked_at", end),
            ("live_expired", "expires_at", expired_until),
        ):
            if upper <= start:
                connection.execute(
                    f"CREATE TEMP TABLE {name} (token_key VARCHAR, user_id VARCHAR, "
                    "revoked_at TIMESTAMP, expires_at TIMESTAMP)"
                )
                continue
            stream = stream_rows(
                db,
                source,
                ["user_id", "revoked_at", "expires_at", *keys],
                [TimeRange(column, start, upper)],
                streams=settings.extract_workers,
            )
            load_stream(
                connection,
                stream,
                source,
                f"""
                    CREATE TEMP TABLE {name} AS SELECT
                        {key_expression} AS token_key,
                        CAST(user_id AS VARCHAR) AS user_id,
                        CAST(CAST(revoked_at AS TIMESTAMPTZ) AS TIMESTAMP) AS revoked_at,
                        CAST(CAST(expires_at AS TIMESTAMPTZ) AS TIMESTAMP) AS expires_at
                    FROM source_rows
                    """,
            )
        _load_archive(connection, files, source, key_columns)
        connection.execute(
            f"""
            CREATE TEMP TABLE revoked AS
            SELECT token_key, any_value(user_id) AS user_id FROM (
                SELECT token_key, user_id FROM live_revoked
                UNION ALL
                SELECT token_key, user_id FROM archived
                WHERE revoked_at >= {low} AND revoked_at < {high}
            ) GROUP BY token_key
            """
        )
        expired = connection.execute(
            f"""
            SELECT count(DISTINCT token_key) FROM (
                SELECT token_key FROM live_expired
                UNION ALL
                SELECT token_key FROM archived
                WHERE expires_at >= {low} AND expires_at < {expired_high}
            )
            """
        ).fetchone()[0]
        day_literal = f"DATE {sql_string(day.isoformat())}"
        connection.execute(
            f"""
            CREATE TEMP TABLE recount_by_user AS
            SELECT {day_literal} AS day,
                CASE WHEN user_id IS NULL THEN NULL ELSE sha256($key || user_id) END AS user_hash,
                count(*) AS revoked
            FROM revoked GROUP BY ALL
            """,
            {"key": hash_key},
        )
        kept = _merge_published(connection, store, day)
        connection.execute(
            f"""
            CREATE TEMP TABLE rollup_by_user AS
            SELECT {TOKEN_REVOCATIONS_BY_USER.select_list()} FROM merged_by_user
            """
        )
        recount_revoked = connection.execute("SELECT count(*) FROM revoked").fetchone()[0]
        connection.execute(
            f"""
            CREATE TEMP TABLE rollup_daily AS
            SELECT {TOKEN_REVOCATIONS_DAILY.select_list()} FROM (
                SELECT {day_literal} AS day,
                    greatest(?, coalesce(p.revoked, 0)) AS revoked,
                    greatest(?, coalesce(p.expired, 0)) AS expired,
                    greatest(?, coalesce(p.cleaned_up, 0)) AS cleaned_up,
                    (SELECT count(*) FROM merged_by_user WHERE user_hash IS NOT NULL)
                        AS revoking_users,
                    (SELECT coalesce(max(revoked), 0) FROM merged_by_user
                     WHERE user_hash IS NOT NULL) AS max_revocations_per_user
                FROM (SELECT 1) LEFT JOIN published_daily p ON true
            )
            """,
            [recount_revoked, expired, cleaned_up],
        )
        published = connection.execute(
            "SELECT revoked, expired, cleaned_up FROM published_daily"
        ).fetchone()
        if published is not None:
            recount = (recount_revoked, expired, cleaned_up)
            kept += sum(old > new for old, new in zip(published, recount, strict=True))
        # A token without revoked_at is revoked on no day: counted, not silently dropped.
        without_revoked_at = rows_without(db, source, "revoked_at")
        results = []
        for dataset, relation, order, preview_order in (
            (TOKEN_REVOCATIONS_DAILY, "rollup_daily", "day", "day"),
            (TOKEN_REVOCATIONS_BY_USER, "rollup_by_user", "user_hash", "revoked DESC, user_hash"),
        ):
            written = replace_dataset_partition(
                connection, store, dataset, day.isoformat(), relation, order
            )
            results.append(
                RollupResult(
                    dataset.name,
                    start,
                    end,
                    (day.isoformat(),),
                    int(recount_revoked),
                    written,
                    time.perf_counter() - started,
                    preview_rows(connection, relation, preview_order),
                    rows_without_timestamp=without_revoked_at,
                )
            )
    return TokenRollupResult(results[0], results[1], int(kept))


def _load_archive(
    connection: duckdb.DuckDBPyConnection,
    files: list[Path],
    source: Source,
    key_columns: tuple[str, ...],
) -> None:
    """``archived``: the token rows the cleanup archived (empty without an archive)."""
    if not files:
        connection.execute(
            "CREATE TEMP TABLE archived (token_key VARCHAR, user_id VARCHAR, "
            "revoked_at TIMESTAMP, expires_at TIMESTAMP)"
        )
        return
    paths = "[" + ", ".join(sql_string(str(path)) for path in files) + "]"
    key = (
        "concat_ws('|', "
        + ", ".join(f"CAST({quote_identifier(n)} AS VARCHAR)" for n in key_columns)
        + ")"
    )
    user_id = quote_identifier(source.column("user_id").name)
    try:
        connection.execute(
            f"""
            CREATE TEMP TABLE archived AS SELECT
                {key} AS token_key,
                CAST({user_id} AS VARCHAR) AS user_id,
                {archived_instant(source.column("revoked_at"))} AS revoked_at,
                {archived_instant(source.column("expires_at"))} AS expires_at
            FROM read_parquet({paths}, union_by_name = true)
            """
        )
    except duckdb.Error as exc:
        raise unreadable_archive(source, files, exc) from None


def _merge_published(connection: duckdb.DuckDBPyConnection, store: RollupStore, day: date) -> int:
    """``merged_by_user`` and ``published_daily``; returns the per-user counts kept."""
    key = day.isoformat()
    daily = store.existing_partition(TOKEN_REVOCATIONS_DAILY.name, key)
    by_user = store.existing_partition(TOKEN_REVOCATIONS_BY_USER.name, key)
    if daily is not None:
        connection.execute(
            f"CREATE TEMP TABLE published_daily AS SELECT revoked, expired, cleaned_up "
            f"FROM read_parquet({sql_string(str(daily))})"
        )
    else:
        connection.execute(
            "CREATE TEMP TABLE published_daily (revoked BIGINT, expired BIGINT, cleaned_up BIGINT)"
        )
    if by_user is not None:
        connection.execute(
            f"CREATE TEMP TABLE published_by_user AS SELECT user_hash, revoked "
            f"FROM read_parquet({sql_string(str(by_user))})"
        )
    else:
        connection.execute(
            "CREATE TEMP TABLE published_by_user (user_hash VARCHAR, revoked BIGINT)"
        )
    connection.execute(
        """
        CREATE TEMP TABLE merged_by_user AS
        SELECT coalesce(r.day, ?) AS day, coalesce(r.user_hash, p.user_hash) AS user_hash,
            greatest(coalesce(r.revoked, 0), coalesce(p.revoked, 0)) AS revoked
        FROM recount_by_user r
        FULL OUTER JOIN published_by_user p ON r.user_hash IS NOT DISTINCT FROM p.user_hash
        """,
        [day],
    )
    return connection.execute(
        "SELECT count(*) FROM published_by_user p LEFT JOIN recount_by_user r "
        "ON r.user_hash IS NOT DISTINCT FROM p.user_hash "
        "WHERE p.revoked > coalesce(r.revoked, 0)"
    ).fetchone()[0]
