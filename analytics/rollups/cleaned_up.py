"""Rollups over tables that housekeeping cleans: deleted rows come back from the archive.

A cleanup policy deletes old rows from a rollup's source (request logs after 30 days, finished
jobs after 24 h, expired tokens). A rollup re-run after that (a backfill, a re-materialisation
from the UI) would find fewer rows and replace a published partition with smaller numbers. Two
things prevent it:

1. where a policy on the table archives (``archive: true``), the rollup reads the rows the
   cleanup archived (its Parquet files, ``<archive.root>/<table>/date=*/*.parquet``; never the
   ``.pending`` ones of a batch whose delete may not have committed) along with the live rows,
   de-duplicated by primary key, so it counts what it counted before the cleanup;
2. a recount never lowers a published partition (``engine.keep_published_where_lower``): where
   it has fewer source rows than the published file, the published rows are kept and the run
   says why (``kept_why``). Rows only leave a source through cleanup, so fewer rows means
   deleted rows, not a correction. To lower a partition on purpose (a data fix), delete its
   file and re-materialise.

Only archive files that can hold rows of the range are read: folders dated from two days before
the range on (a row is archived after its cutoff timestamp passed, and the folder is the UTC day
of archiving), and of those the files whose manifest range of the cutoff column meets the range.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

from analytics.extract import (
    ColumnKind,
    RowStream,
    Source,
    SourceColumn,
    SourceError,
    TimeRange,
    check_source,
    stream_rows,
)
from analytics.rollups.engine import conversion_failure, load_stream, timestamp_literal
from housekeeping.archive import ArchiveError, LocalArchiveStore, TableArchive
from housekeeping.config import HousekeepingConfig
from housekeeping.database import AppDatabase
from housekeeping.sql import TableName, quote_identifier, sql_string

# Clock differences between the database (whose clock sets cutoffs) and the archiving process
# (whose UTC day names the folder), and time zones.
ARCHIVE_DAY_MARGIN = timedelta(days=2)


@dataclass(frozen=True)
class Cleanup:
    """The housekeeping policies that delete rows from one table, and where they archive."""

    table: str  # as the archive names its folder: the policy's table, spelled (``app.sessions``)
    archiving: tuple[str, ...] = ()
    not_archiving: tuple[str, ...] = ()
    archive_root: Path | None = None
    # The cutoff column of every archiving policy, when they all share one.
    cutoff_column: str | None = None

    @classmethod
    def of(cls, config: HousekeepingConfig | None, table: TableName | str) -> Cleanup:
        """The policies of ``config`` on ``table`` (none without a config)."""
        table = TableName.of(table)
        if config is None:
            return cls(str(table))
        policies = {name: p for name, p in sorted(config.policies.items()) if p.table == table}
        archiving = tuple(name for name, policy in policies.items() if policy.archive)
        cutoffs = {policies[name].cutoff_column for name in archiving}
        return cls(
            str(table),
            archiving,
            tuple(name for name, policy in policies.items() if not policy.archive),
            Path(config.archive.root),
            cutoffs.pop() if len(cutoffs) == 1 else None,
        )

    @property
    def policies(self) -> tuple[str, ...]:
        """Every policy on the table, sorted."""
        return tuple(sorted(self.archiving + self.not_archiving))

    def kept_why(self) -> str:
        """Why a recount can find fewer rows than were published, from the config."""
        if self.not_archiving:
            names = ", ".join(self.not_archiving)
            return f"policy {names} deletes rows of {self.table} without archiving them"
        if self.archiving:
            names = ", ".join(self.archiving)
            return (
                f"rows are missing from {self.table} and from the archive of policy {names} "
                f"(archive.root {self.archive_root})"
            )
        return f"no housekeeping policy cleans {self.table}: rows were deleted outside housekeeping"


def primary_key(
    db: AppDatabase, config: HousekeepingConfig | None, table: TableName | str
) -> tuple[str, ...]:
    """The primary key that de-duplicates live and archived rows: a policy's ``primary_key``,
    else the table's own (empty when it has none)."""
    if config is not None:
        for _, policy in sorted(config.policies.items()):
            if policy.table == TableName.of(table) and policy.primary_key:
                return tuple(policy.primary_key)
    info = db.table_info(table)
    return info.primary_key if info is not None else ()


def _moment(value: object, zone: str | None) -> datetime | None:
    """A manifest's cutoff bound as an aware instant; a naive one is a wall-clock reading in
    ``zone`` (the source column's, as the table held it; None or UTC: UTC). None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo:
        return moment
    return moment.replace(tzinfo=ZoneInfo(zone) if zone else UTC)


def _meets(low: datetime, high: datetime, bounds: TimeRange) -> bool:
    """Whether ``[low, high]`` (a file's cutoff values) meets ``bounds``."""
    return (bounds.start is None or high >= bounds.start) and (
        bounds.end is None or low < bounds.end
    )


def archive_files(cleanup: Cleanup, source: Source, where: Sequence[TimeRange]) -> list[Path]:
    """The published archive files of ``cleanup.table`` that can hold source rows in ``where``.

    Ranges on the policies' cutoff column narrow the day folders and the files (by the cutoff
    range each file's manifest entry records); files a manifest does not list yet (a run that
    stopped between publishing and listing) are always read.
    """
    if not cleanup.archiving or cleanup.archive_root is None:
        return []
    on_cutoff = [
        bounds for bounds in where if source.column(bounds.column).name == cleanup.cutoff_column
    ]
    starts = [bounds.start for bounds in on_cutoff if bounds.start is not None]
    earliest = (max(starts).astimezone(UTC).date() - ARCHIVE_DAY_MARGIN) if starts else date.min
    archive = TableArchive(LocalArchiveStore(cleanup.archive_root), cleanup.table, "")
    files = []
    for folder in sorted((cleanup.archive_root / cleanup.table).glob("date=*")):
        try:
            day = date.fromisoformat(folder.name.removeprefix("date="))
        except ValueError:
            continue
        if day < earliest:
            continue
        try:
            manifest = archive.manifest(f"{cleanup.table}/{folder.name}")
        except ArchiveError as exc:
            raise SourceError(f"{source.config_key}: {exc}") from None
        entries = {entry["file"]: entry for entry in manifest.get("files", [])}
        column = manifest.get("cutoff_column")
        zone = next((item.zone for item in source.columns if item.name == column), None)
        for path in sorted(folder.glob("*.parquet")):
            entry = entries.get(path.name)
            if entry is not None:
                low = _moment(entry.get("min_cutoff"), zone)
                high = _moment(entry.get("max_cutoff"), zone)
                ranges = [b for b in where if source.column(b.column).name == column]
                if low and high and not all(_meets(low, high, b) for b in ranges):
                    continue
            files.append(path)
    return files


@dataclass(frozen=True)
class ArchivedRows:
    """The archive files a refresh reads, and the key columns that de-duplicate them."""

    files: tuple[Path, ...]
    key_columns: tuple[str, ...]

    @property
    def key_aliases(self) -> list[str]:
        return [f"key_{index}" for index in range(len(self.key_columns))]

    def source_with_keys(self, db: AppDatabase, source: Source) -> Source:
        """``source`` (checked against the live schema first, so its zones are set) plus its key
        columns as ``key_0``, ``key_1``, ... (compared as given, whatever their type)."""
        if not source.checked:
            source = check_source(db, source)
        keys = tuple(
            SourceColumn(alias, name, ColumnKind.TEXT, f"{source.config_key}.table (its key)")
            for alias, name in zip(self.key_aliases, self.key_columns, strict=True)
        )
        return dataclasses.replace(source, columns=source.columns + keys)


def archived_value(column: SourceColumn) -> str:
    """DuckDB SQL for one archived column as the live rows carry it. The archive keeps what the
    table held, so a naive timestamp column's readings (in its source's ``timezone``) become the
    instants they stand for, as ``stream_rows`` turns the live ones (a UTC ``TIMESTAMP``)."""
    name = quote_identifier(column.name)
    if column.kind is not ColumnKind.TIMESTAMP or column.zone in (None, "UTC"):
        return name
    return f"timezone({sql_string(column.zone)}, CAST({name} AS TIMESTAMP))"


def archived_instant(column: SourceColumn) -> str:
    """An archived timestamp column as a UTC ``TIMESTAMP`` (naive readings in its zone)."""
    return f"CAST(CAST({archived_value(column)} AS TIMESTAMPTZ) AS TIMESTAMP)"


def archived_rows(
    db: AppDatabase,
    config: HousekeepingConfig | None,
    source: Source,
    where: Sequence[TimeRange],
) -> ArchivedRows | None:
    """What of the archive a refresh of ``where`` must read; None when nothing (no archiving
    policy on the table, no primary key to de-duplicate by, or no file that can hold its rows)."""
    cleanup = Cleanup.of(config, source.table)
    if not cleanup.archiving:
        return None
    keys = primary_key(db, config, source.table)
    files = archive_files(cleanup, source, where) if keys else []
    return ArchivedRows(tuple(files), keys) if files else None


def stream_with_archive(
    db: AppDatabase,
    config: HousekeepingConfig | None,
    source: Source,
    aliases: Sequence[str],
    where: Sequence[TimeRange],
    archive_where: Sequence[TimeRange] | None = None,
    *,
    streams: int | None = None,
) -> tuple[Source, RowStream, ArchivedRows | None]:
    """The live rows of ``where`` as a stream (read over ``streams`` connections, see
    ``stream_rows``), and what of the archive to add to them (rows in ``archive_where``, default
    ``where``): the source carries the key columns then, and the stream them too, as
    ``load_with_archive`` expects. Returns (source, stream, archived)."""
    archived = archived_rows(db, config, source, where if archive_where is None else archive_where)
    aliases = list(aliases)
    if archived is not None:
        source = archived.source_with_keys(db, source)
        aliases += archived.key_aliases
    return source, stream_rows(db, source, aliases, where, streams=streams), archived


def unreadable_archive(source: Source, files: Sequence[Path], error: duckdb.Error) -> SourceError:
    """Archive files that do not read as the source table's rows: the key and folder named."""
    first = str(error).strip().splitlines()[0]
    return SourceError(
        f"{source.config_key}: the archive of {source.table} ({files[0].parent.parent}) "
        f"cannot be read as rows of {source.table} ({first})"
    )


def load_with_archive(
    connection: duckdb.DuckDBPyConnection,
    stream: RowStream,
    source: Source,
    sql: str,
    archived: ArchivedRows | None,
    where: Sequence[TimeRange],
) -> int:
    """Run ``sql`` over ``source_rows``: the live rows of ``stream``, plus the archived rows in
    ``where`` whose key no live row has. Returns how many archived rows were added.

    Without ``archived`` this is ``load_stream`` (the live rows are aggregated as they stream).
    With it the live rows are held in a temp table first (they are few: most were deleted); the
    archived columns are cast to the live ones' types, so the rollup SQL sees one shape.
    """
    if archived is None:
        load_stream(connection, stream, source, sql)
        return 0
    load_stream(
        connection, stream, source, "CREATE TEMP TABLE live_rows AS SELECT * FROM source_rows"
    )
    types = connection.execute("SELECT column_name, column_type FROM (DESCRIBE live_rows)")
    select = ", ".join(
        f"CAST({archived_value(source.column(alias))} AS {kind}) AS {alias}"
        for alias, kind in types.fetchall()
    )
    conditions = ["TRUE"]
    for bounds in where:
        moment = f"CAST(CAST({bounds.column} AS TIMESTAMPTZ) AS TIMESTAMP)"
        if bounds.start is not None:
            conditions.append(f"{moment} >= {timestamp_literal(bounds.start)}")
        if bounds.end is not None:
            conditions.append(f"{moment} < {timestamp_literal(bounds.end)}")
    keys = archived.key_aliases
    paths = "[" + ", ".join(sql_string(str(path)) for path in archived.files) + "]"
    try:
        connection.execute(
            f"""
            CREATE TEMP TABLE archived_rows AS
            SELECT DISTINCT ON ({", ".join(keys)}) * FROM (
                SELECT {select} FROM read_parquet({paths}, union_by_name = true)
            ) WHERE {" AND ".join(conditions)}
            """
        )
    except duckdb.Error as exc:
        raise unreadable_archive(source, archived.files, exc) from None
    match = " AND ".join(f"a.{key} = l.{key}" for key in keys)
    connection.execute(
        "CREATE TEMP TABLE archived_only AS "
        f"SELECT a.* FROM archived_rows a ANTI JOIN live_rows l ON {match}"
    )
    connection.execute(
        "CREATE TEMP VIEW source_rows AS "
        "SELECT * FROM live_rows UNION ALL SELECT * FROM archived_only"
    )
    try:
        connection.execute(sql)
    except duckdb.ConversionException as exc:
        raise conversion_failure(source, exc) from None
    added = connection.execute("SELECT count(*) FROM archived_only").fetchone()[0]
    connection.execute("DROP VIEW source_rows")
    for table in ("archived_only", "archived_rows", "live_rows"):
        connection.execute(f"DROP TABLE {table}")
    return int(added)
