"""The `hk` command: every option exercised against real databases."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from housekeeping.cli import main
from housekeeping.database import AppDatabase
from tests.support.app_tables import create_revoked_tokens


@pytest.fixture
def db(app_url):
    database = AppDatabase(app_url)
    yield database
    database.dispose()


def write_config(tmp_path, policy_overrides=None) -> str:
    policy = {"kind": "expired", "table": "revoked_tokens", "cutoff_column": "expires_at"}
    policy.update(policy_overrides or {})
    path = tmp_path / "hk.yaml"
    path.write_text(
        yaml.safe_dump(
            {"archive": {"root": str(tmp_path / "archive")}, "policies": {"revoked_tokens": policy}}
        )
    )
    return str(path)


def url_of(db: AppDatabase) -> str:
    return db.url.render_as_string(hide_password=False)


def check_policies(config: str, url: str):
    """`hk config check` of the policies alone (these tables are not the reference schema)."""
    return CliRunner().invoke(
        main,
        ["config", "check", "--config", config, "--database-url", url, "--section", "policies"],
    )


def test_config_check_passes_a_config_that_matches_the_database(db, tmp_path):
    create_revoked_tokens(db, rows=10, expired_fraction=0.5)

    result = check_policies(write_config(tmp_path), url_of(db))

    assert result.exit_code == 0, result.output
    assert "ok    revoked_tokens: revoked_tokens.expires_at (key id)" in result.output
    assert "config OK (policies): 1 policies" in result.output
    assert "warn" not in result.output


def test_config_check_warns_about_a_missing_cutoff_index_and_prints_the_fix(db, tmp_path):
    create_revoked_tokens(db, rows=10, expired_fraction=0.5, index=False)

    result = check_policies(write_config(tmp_path), url_of(db))

    assert result.exit_code == 0, result.output
    assert "revoked_tokens.expires_at has no index" in result.output
    concurrently = " CONCURRENTLY" if db.is_postgres else ""
    assert (
        f'CREATE INDEX{concurrently} "idx_revoked_tokens_expires_at" ON "revoked_tokens" ("expires_at");'
        in result.output
    )


def test_config_check_reports_every_mismatch_and_exits_non_zero(db, tmp_path):
    create_revoked_tokens(db, rows=10, expired_fraction=0.5)
    config = write_config(tmp_path, {"cutoff_column": "expires"})

    result = check_policies(config, url_of(db))

    assert result.exit_code == 1
    assert "policies.revoked_tokens.cutoff_column: column 'expires' does not exist" in result.output
    assert "Error: 1 problem(s) in the config" in result.output


def test_a_malformed_config_is_one_line_naming_the_key(tmp_path, sqlite_url):
    config = write_config(tmp_path, {"schedule": "61 * * * *"})

    result = CliRunner().invoke(
        main, ["config", "check", "--config", config, "--database-url", sqlite_url]
    )

    assert result.exit_code == 1
    assert "policies.revoked_tokens.schedule: not a valid 5-field cron" in result.output
    assert "Traceback" not in result.output


def test_config_check_reads_the_environment_by_default(db, tmp_path, monkeypatch):
    create_revoked_tokens(db, rows=10, expired_fraction=0.5)
    monkeypatch.setenv("HK_CONFIG", write_config(tmp_path))
    monkeypatch.setenv("DATABASE_URL", url_of(db))

    result = CliRunner().invoke(main, ["config", "check", "--section", "policies"])

    assert result.exit_code == 0, result.output
    assert "config OK" in result.output


def test_seed_fills_the_reference_schema_with_the_requested_sizes(app_url):
    result = CliRunner().invoke(
        main,
        [
            "seed",
            "--database-url",
            app_url,
            "--tokens",
            "300",
            "--requests",
            "2000",
            "--days",
            "3",
            "--seed",
            "7",
            "--quiet",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "seeded revoked_tokens 300, request_logs 2,000" in result.output
    db = AppDatabase(app_url)
    assert set(db.table_names()) >= {"revoked_tokens", "request_logs", "jobs", "api_usage"}
    db.dispose()


def test_seed_refuses_a_populated_database_unless_reset(sqlite_url):
    runner = CliRunner()
    args = ["seed", "--database-url", sqlite_url, "--tokens", "50", "--requests", "100", "--quiet"]
    assert runner.invoke(main, args).exit_code == 0

    refused = runner.invoke(main, args)
    assert refused.exit_code == 1
    assert "revoked_tokens already holds rows" in refused.output and "--reset" in refused.output

    reset = runner.invoke(main, [*args, "--reset", "--tokens", "60"])
    assert reset.exit_code == 0, reset.output
    assert "revoked_tokens 60" in reset.output


@pytest.mark.postgres
def test_seed_can_partition_request_logs_by_day_on_postgres(pg_url):
    result = CliRunner().invoke(
        main,
        [
            "seed",
            "--database-url",
            pg_url,
            "--tokens",
            "10",
            "--requests",
            "500",
            "--days",
            "2",
            "--partitioned-request-logs",
            "--quiet",
        ],
    )

    assert result.exit_code == 0, result.output
    info = AppDatabase(pg_url).table_info("request_logs")
    assert info.is_partitioned


def test_seed_refuses_partitioning_on_sqlite_by_name(sqlite_url):
    result = CliRunner().invoke(
        main, ["seed", "--database-url", sqlite_url, "--partitioned-request-logs", "--quiet"]
    )

    assert result.exit_code == 1
    assert "partition" in result.output.lower() and "Traceback" not in result.output
