"""Checks the config against the live database before anything is deleted."""

from __future__ import annotations

from dataclasses import dataclass

from housekeeping.config import ConfigError
from housekeeping.database import AppDatabase, RelationKind, TableInfo
from housekeeping.errors import closest_names, did_you_mean
from housekeeping.policy_kinds import DeleteStrategy, PolicyConfig
from housekeeping.sql import TableName, quote_identifier


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


# Why each kind of relation cannot be housekept: the batches delete by ctid and primary key
# ranges, take the table's advisory lock by OID and archive what they delete.
_NOT_HOUSEKEPT = {
    RelationKind.VIEW: (
        "is a view: rows are deleted from tables, so name the table it reads (a view has no "
        "ctid and deleting through it needs rules or triggers)"
    ),
    RelationKind.MATERIALIZED_VIEW: (
        "is a materialized view: it is rebuilt (REFRESH MATERIALIZED VIEW), not deleted from; "
        "name the table it is built from"
    ),
    RelationKind.FOREIGN_TABLE: (
        "is a foreign table: its rows live on another server; point DATABASE_URL at that server "
        "and name the table there"
    ),
}


def missing_table(db: AppDatabase, key: str, table: TableName) -> str:
    """The message for a table (or view) that does not exist as named: ``<key>: table 'x' does
    not exist in <db>``, with what it may have meant (the case differs, another schema)."""
    known = db.relation_names()
    close = closest_names(str(table), [str(name) for name in known]) or [
        str(name) for name in known if name.name.lower() == table.name.lower()
    ]
    return f"{key}: table {table!r} does not exist in {db.describe()}{did_you_mean(close)}"


def missing_column(key: str, table: TableInfo, column: str) -> str:
    """The message for a column the table lacks: its columns, and what it may have meant."""
    known = list(table.columns)
    hint = did_you_mean(closest_names(column, known))
    return (
        f"{key}: column {column!r} does not exist in table {table.name!r}{hint} "
        f"(columns: {', '.join(known)})"
    )


def check_policy(db: AppDatabase, name: str, policy: PolicyConfig) -> CheckedPolicy:
    """The policy's table and columns as they are in the live database, or ConfigError naming
    the key: a table or column that does not exist as spelled (with "did you mean"), a view or
    other relation that cannot be housekept, no primary key, no DELETE privilege."""
    key = f"policies.{name}"
    table = db.table_info(policy.table)
    if table is None:
        raise ConfigError(missing_table(db, f"{key}.table", policy.table))
    if table.kind in _NOT_HOUSEKEPT:
        raise ConfigError(f"{key}.table: {policy.table!r} {_NOT_HOUSEKEPT[table.kind]}")

    def require_column(config_key: str, column: str, *, timestamp: bool = False) -> None:
        info = table.columns.get(column)
        if info is None:
            raise ConfigError(missing_column(f"{key}.{config_key}", table, column))
        if timestamp and not info.is_timestamp:
            raise ConfigError(
                f"{key}.{config_key}: column {policy.table}.{column} is {info.type_name}, "
                "not a timestamp; a cutoff needs a timestamp column"
            )

    if policy.strategy is DeleteStrategy.PAGE_RANGES and not db.is_postgres:
        raise ConfigError(
            f"{key}.strategy: page_ranges walks PostgreSQL's table pages (TID ranges); on SQLite "
            "use auto, primary_key_ranges or cutoff_index"
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
            f"(GRANT DELETE ON {policy.table.sql} TO <user>)"
        )
    return CheckedPolicy(name, policy, table)


def index_advice(db: AppDatabase, checked: CheckedPolicy) -> IndexAdvice | None:
    """A CREATE INDEX to run when the cutoff column has no index (a cleanup would scan the table)."""
    column = checked.policy.cutoff_column
    if column in checked.table.indexed_leading_columns:
        return None
    table = checked.table.name
    # The index goes to the table's schema by itself: its name is never qualified.
    index_name = quote_identifier(f"idx_{table.name}_{column}"[:63])
    concurrently = " CONCURRENTLY" if db.is_postgres and not checked.table.is_partitioned else ""
    statement = (
        f"CREATE INDEX{concurrently} {index_name} ON {table.sql} ({quote_identifier(column)});"
    )
    return IndexAdvice(checked.name, str(table), column, statement)
