"""The archive keeps PostgreSQL column types Parquet has no type for, losslessly."""

from __future__ import annotations

import psycopg
import pyarrow.parquet as pq
import pytest

from housekeeping.config import parse_config
from housekeeping.database import AppDatabase
from housekeeping.policies import run_policy


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 3])
def test_an_interval_column_is_archived_as_months_days_nanoseconds(pg_url, tmp_path, workers):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL, iv interval)"
        )
        conn.execute(
            "INSERT INTO t SELECT g, now() - interval '1 day', CASE WHEN g % 4 = 0 THEN NULL "
            "ELSE interval '1 month 2 days 03:04:05.678901' * (g % 4) END "
            "FROM generate_series(1, 500) g"
        )
    config = parse_config(
        {
            "archive": {"root": str(tmp_path / "archive")},
            "safety": {"max_delete_fraction": 1},
            "batch": {"workers": workers, "initial_size": 100, "min_size": 100},
            "policies": {
                "t": {
                    "kind": "expired",
                    "table": "t",
                    "cutoff_column": "expires_at",
                    "archive": True,
                    "strategy": "page_ranges",
                }
            },
        },
        "hk.yaml",
    )
    db = AppDatabase(pg_url)
    try:
        result = run_policy(db, config, "t")
    finally:
        db.dispose()
    assert result.deleted == result.archived_rows == 500
    files = sorted((tmp_path / "archive").rglob("*.parquet"))
    rows = [row for file in files for row in pq.read_table(file).to_pylist()]
    by_id = {row["id"]: row["iv"] for row in rows}
    assert len(rows) == len(by_id) == 500
    assert by_id[4] is None
    assert by_id[3] == {"months": 3, "days": 6, "nanoseconds": 3 * 11_045_678_901_000}
