"""Every bad input gets a clear error naming the key or object, and nothing is deleted."""

from __future__ import annotations

import os
import stat

import pytest

from housekeeping.archive import ArchiveError
from housekeeping.config import ConfigError, load_config, parse_config
from housekeeping.database import AppDatabase, DatabaseError
from housekeeping.policies import run_policy
from tests.housekeeping.test_token_cleanup import token_config
from tests.support.app_tables import create_revoked_tokens, rows_of
from tests.support.roles import role_database


@pytest.fixture
def db(app_url):
    database = AppDatabase(app_url)
    yield database
    database.dispose()


def config_with(**policy):
    base = {"kind": "age", "table": "request_logs", "cutoff_column": "ts", "retention": "30d"}
    base.update(policy)
    return {"policies": {"request_logs": base}}


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"retention": "0d"}, r"policies\.request_logs\.retention: must be greater than 0"),
        ({"retention": "-5d"}, r"policies\.request_logs\.retention: expected a duration"),
        ({"retention": "thirty days"}, r"policies\.request_logs\.retention: expected a duration"),
        ({"schedule": "0 25 * * *"}, r"policies\.request_logs\.schedule: not a valid 5-field cron"),
        ({"schedule": "every day"}, r"policies\.request_logs\.schedule: not a valid 5-field cron"),
        ({"kind": "sometimes"}, r"policies\.request_logs\.kind: Input should be"),
        ({"retention": None}, r"kind 'age' needs 'retention'"),
        ({"tabel": "x"}, r"policies\.request_logs\.tabel: unknown key"),
        ({"max_delete_fraction": 1.5}, r"policies\.request_logs\.max_delete_fraction"),
        ({"kind": "jobs", "retention": None}, r"kind 'jobs' needs 'status_column'"),
        (
            {"kind": "expired"},
            r"policies\.request_logs\.retention: 'retention' is for kind 'age'; kind 'expired' "
            r"uses 'grace'",
        ),
        (
            {"status_column": "status"},
            r"policies\.request_logs\.status_column: 'status_column' is for kind 'jobs'",
        ),
    ],
)
def test_malformed_policy_values_name_the_key(policy, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(config_with(**policy))


def test_an_unknown_time_zone_is_named():
    with pytest.raises(ConfigError, match=r"timezone: unknown time zone 'Mars/Olympus'"):
        parse_config({"timezone": "Mars/Olympus"})


def test_policy_names_must_be_usable_as_asset_names():
    with pytest.raises(ConfigError, match=r"policies\.Request-Logs"):
        parse_config({"policies": {"Request-Logs": config_with()["policies"]["request_logs"]}})


def test_missing_environment_variable_in_config_names_it(monkeypatch):
    monkeypatch.delenv("HK_NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(
        ConfigError, match=r"archive\.root: environment variable HK_NOT_SET_ANYWHERE"
    ):
        parse_config({"archive": {"root": "${HK_NOT_SET_ANYWHERE}"}})


def test_config_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("policies: [unclosed")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)


def test_the_shipped_config_is_valid():
    config = load_config("hk.yaml")
    assert "revoked_tokens" in config.policies


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"table": "revoked_tokenz"},
            r"policies\.revoked_tokens\.table: table 'revoked_tokenz' does not exist",
        ),
        (
            {"cutoff_column": "expires"},
            r"policies\.revoked_tokens\.cutoff_column: column 'expires' does not exist",
        ),
        (
            {"cutoff_column": "token_hash"},
            r"policies\.revoked_tokens\.cutoff_column: column revoked_tokens\.token_hash is .*not a timestamp",
        ),
        (
            {"primary_key": ["nope"]},
            r"policies\.revoked_tokens\.primary_key: column 'nope' does not exist",
        ),
    ],
)
def test_config_that_does_not_match_the_live_schema_is_refused(db, tmp_path, overrides, message):
    create_revoked_tokens(db, rows=50, expired_fraction=0.5)
    before = rows_of(db, "revoked_tokens")

    with pytest.raises(ConfigError, match=message):
        run_policy(db, token_config(tmp_path, **overrides), "revoked_tokens")

    assert rows_of(db, "revoked_tokens") == before


def test_an_unreachable_database_is_named_without_its_password():
    db = AppDatabase("postgresql://hk:s3cret@127.0.0.1:1/app")
    with pytest.raises(DatabaseError) as caught:
        db.clock()
    assert "cannot connect to the application database" in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_an_unsupported_database_url_is_refused():
    with pytest.raises(DatabaseError, match="unsupported database 'mysql'"):
        AppDatabase("mysql://localhost/app")


def test_an_archive_root_that_cannot_be_written_is_refused_before_deleting(db, tmp_path):
    if os.geteuid() == 0:
        # root ignores directory permissions: use a path under a regular file instead.
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        root = blocker / "archive"
    else:
        root = tmp_path / "readonly"
        root.mkdir()
        root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    create_revoked_tokens(db, rows=50, expired_fraction=0.5)
    before = rows_of(db, "revoked_tokens")
    config = token_config(tmp_path, archive=True)
    config = config.model_copy(
        update={"archive": config.archive.model_copy(update={"root": str(root)})}
    )

    with pytest.raises(ArchiveError, match=r"archive\.root: cannot write to"):
        run_policy(db, config, "revoked_tokens")

    assert rows_of(db, "revoked_tokens") == before


@pytest.mark.postgres
def test_a_user_without_delete_rights_is_refused_by_name(pg_url, postgres_server, tmp_path):
    db = AppDatabase(pg_url)
    create_revoked_tokens(db, rows=50, expired_fraction=0.5)
    try:
        denied = r"policies\.revoked_tokens\.table: the database user may not DELETE"
        with (
            role_database(postgres_server, db, "hk_reader", "SELECT") as reader,
            pytest.raises(ConfigError, match=denied),
        ):
            run_policy(reader, token_config(tmp_path), "revoked_tokens")
        assert len(rows_of(db, "revoked_tokens")) == 50
    finally:
        db.dispose()
