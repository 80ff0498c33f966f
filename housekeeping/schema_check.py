"""Checks the config against the live database before anything is deleted."""

from __future__ import annotations

from dataclasses import dataclass

from housekeeping.config import ConfigError
from housekeeping.database import AppDatabase, TableInfo
from housekeeping.policy_kinds import PolicyConfig
from housekeeping.sql import quote_identifier


@dataclass(frozen=True)
class CheckedPolicy:
    """A policy whose table and columns exist as the config says, with the key to walk by."""

    name: str
    policy: PolicyConfig
    table: TableInfo

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(self.policy.primary_key or self.table.primary_key)

    @property
    def cutoff_zone(self) -> str | None:
        """The zone the cutoff column's readings are in (the policy's ``timezone``), None when
        the column holds instants (timestamp with time zone)."""
        return self.table.columns[self.policy.cutoff_column].reading_zone(self.policy.timezone)


@dataclass(frozen=True)
class IndexAdvice:
    policy: str
    table: str
    column: str
    statement: str


def check_policy(db: AppDatabase, name: str, policy: PolicyConfig) -> CheckedPolicy:
    key = f"policies.{name}"
    table = db.table_info(policy.table)
    if table is None:
        raise ConfigError(f"{key}.table: table {policy.table!r} does not exist in {db.describe()}")

    def require_column(config_key: str, column: str, *, timestamp: bool = False) -> None:
        info = table.columns.get(column)
        if info is None:
            known = ", ".join(table.columns)
            raise ConfigError(
                f"{key}.{config_key}: column {column!r} does not exist in table "
                f"{policy.table!r} (columns: {known})"
            )
        if timestamp and not info.is_timestamp:
            raise ConfigError(
                f"{key}.{config_key}: column {policy.table}.{column} is {info.type_name}, "
                "not a timestamp; a cutoff needs a timestamp column"
            )

    require_column("cutoff_column", policy.cutoff_column, timestamp=True)
    for config_key, column in policy.kind_columns().items():
        require_column(config_key, column)
    if policy.primary_key:
        for column in policy.primary_key:
            require_column("primary_key", column)
    elif not table.primary_key:
        raise ConfigError(
            f"{key}.primary_key: table {policy.table!r} has no primary key; name a unique, "
            "non-null column (or columns) under primary_key"
        )
    if not db.can_delete_from(policy.table):
        raise ConfigError(
            f"{key}.table: the database user may not DELETE from {policy.table!r} "
            f"(GRANT DELETE ON {quote_identifier(policy.table)} TO <user>)"
        )
    return CheckedPolicy(name, policy, table)


def index_advice(db: AppDatabase, checked: CheckedPolicy) -> IndexAdvice | None:
    """A CREATE INDEX to run when the cutoff column has no index (a cleanup would scan the table)."""
    column = checked.policy.cutoff_column
    if column in checked.table.indexed_leading_columns:
        return None
    table = checked.table.name
    index_name = quote_identifier(f"idx_{table}_{column}"[:63])
    concurrently = " CONCURRENTLY" if db.is_postgres and not checked.table.is_partitioned else ""
    statement = (
        f"CREATE INDEX{concurrently} {index_name} ON {quote_identifier(table)} "
        f"({quote_identifier(column)});"
    )
    return IndexAdvice(checked.name, table, column, statement)
