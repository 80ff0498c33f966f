"""Error logs per hour x route x error name, from the error-level lines a log source staged.

An error line is one whose ``level`` (per the preset or mapping) is one of ``error_levels``:
pino and bunyan 50 and 60, winston ``error``, the reference shape's ``"type": "error"``. Only
its route (cleaned as a request's) and its error's name (``err.type``, ``error.name``, cut at
100 characters; ``(unnamed)`` without one) are staged, never the message or the stack, so
neither can reach a rollup or a Slack message.

A request line is never an error line here, whatever its level: pino-http and express-winston log
every 5xx response at error level (pino-http with a stand-in ``Error``, "failed with status code
500"), so counting them would add one error per failed request and route on top of the
application's own error line, and would duplicate the 5xx the request rollups already count
(``status_5xx``, the ``http_*error_rate`` rules). Only lines that are not requests count.
"""

from __future__ import annotations

from datetime import datetime

from analytics.datasets import LOG_ERRORS_HOURLY
from analytics.logs.ingest import source_directory, staged_files
from analytics.publish import RollupStore
from analytics.rollups.engine import (
    HOUR,
    duckdb_session,
    floor_hour,
    replace_hour_partitions,
    text_or_placeholder,
    timestamp_literal,
)
from housekeeping.sql import sql_string


def refresh_log_errors(store: RollupStore, start: datetime, end: datetime) -> tuple[list[str], int]:
    """Recompute the whole UTC hours overlapping ``[start, end)`` of ``log_errors_hourly`` from
    the staged lines; returns the hour keys written and the rows they hold. Reads only what
    ``ingest_log_files`` staged (call it first)."""
    low = floor_hour(start)
    high = floor_hour(end) if floor_hour(end) == end else floor_hour(end) + HOUR
    files = staged_files(source_directory(store.root), low, high)
    with duckdb_session(store.root / ".tmp") as connection:
        if files:
            paths = "[" + ", ".join(sql_string(str(path)) for path in files) + "]"
            source = (
                f"SELECT make_timestamp(epoch_us(ts) // 3600000000 * 3600000000) AS hour, "
                f"{text_or_placeholder('route')} AS route, "
                f"{text_or_placeholder('error_name', '(unnamed)')} AS error_name, "
                f"count(*) AS errors "
                f"FROM read_parquet({paths}) WHERE error_name IS NOT NULL "
                f"AND outcome = 'error' AND ts >= {timestamp_literal(low)} "
                f"AND ts < {timestamp_literal(high)} GROUP BY ALL"
            )
        else:
            source = (
                "SELECT NULL::TIMESTAMP AS hour, NULL AS route, NULL AS error_name, "
                "0 AS errors WHERE false"
            )
        connection.execute(
            f"CREATE TEMP TABLE rollup AS SELECT {LOG_ERRORS_HOURLY.select_list()} FROM ({source})"
        )
        return replace_hour_partitions(connection, store, LOG_ERRORS_HOURLY, "hour", low, high)
