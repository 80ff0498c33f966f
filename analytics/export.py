"""``hk export``: any published dataset as CSV, JSON lines or Parquet, streamed.

Rows are read through the sandboxed, read-only connection every reader uses (sandbox.py) as
Arrow record batches and written batch by batch, so a month of minute rows never sits in memory
at once: memory stays at about one batch (``BATCH_ROWS`` rows). Rows come in the order of the
dataset's partition files (time order; within a file, the order it was written in). ``since``
keeps the rows whose time column (the dataset's first ``TIMESTAMP`` or ``DATE`` column, e.g.
``minute``, ``hour``, ``day``, ``taken_at``) is at or after ``now - since`` (UTC); Parquet
statistics let DuckDB skip older row groups.

Formats: ``csv`` (a header line; a nested column, such as a latency sketch, as JSON text),
``json`` (one JSON object per line: times in ISO 8601, nested columns as arrays and objects),
``parquet`` (the published types). A file given as ``output`` is written beside itself and
renamed when complete: a failed export leaves no partial file.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from analytics.datasets import Column, Dataset, all_datasets
from analytics.publish import RollupStore
from analytics.sandbox import open_rollups
from housekeeping.errors import HkError, first_line

FORMATS = ("csv", "json", "parquet")
BATCH_ROWS = 50_000


class ExportError(HkError):
    """The dataset, format or output file of an export is not usable; the message names it."""


def find_dataset(name: str) -> Dataset:
    """The published dataset ``name``; ExportError naming the closest name (a typo) and the
    known ones otherwise."""
    for dataset in all_datasets():
        if dataset.name == name:
            return dataset
    names = sorted(dataset.name for dataset in all_datasets())
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ExportError(f"unknown dataset {name!r} ({hint}published datasets: {', '.join(names)})")


def time_column(dataset: Dataset) -> Column | None:
    """The column ``since`` filters on: the dataset's first TIMESTAMP or DATE column."""
    return next((c for c in dataset.columns if c.type in ("TIMESTAMP", "DATE")), None)


def _select(dataset: Dataset, fmt: str) -> str:
    if fmt != "csv":
        return "*"
    # CSV has no nested values: lists and structs go out as JSON text.
    return ", ".join(
        f"CAST(to_json({c.name}) AS VARCHAR) AS {c.name}"
        if c.type.endswith("]") or c.type.startswith("STRUCT")
        else c.name
        for c in dataset.columns
    )


def _json_value(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class _JsonLines:
    def __init__(self, output: BinaryIO) -> None:
        self.output = output

    def write_batch(self, batch: pa.RecordBatch) -> None:
        lines = (json.dumps(row, default=_json_value) for row in batch.to_pylist())
        self.output.write("".join(f"{line}\n" for line in lines).encode())

    def close(self) -> None:
        pass


def _writer(fmt: str, output: BinaryIO, schema: pa.Schema):
    if fmt == "csv":
        return pa_csv.CSVWriter(output, schema)
    if fmt == "parquet":
        return pq.ParquetWriter(output, schema, compression="zstd")
    return _JsonLines(output)


def export_dataset(
    store: RollupStore,
    name: str,
    fmt: str,
    output: BinaryIO,
    *,
    since: timedelta | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write dataset ``name``'s rows (those since ``now() - since``) to ``output`` as ``fmt``.

    Returns the rows written. Raises ExportError (unknown dataset or format, ``since`` on a
    dataset without a time column or reaching before the year 1), NotPublished / PublishError (nothing published to read).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    dataset = find_dataset(name)
    where, parameters = "", {}
    if since is not None:
        column = time_column(dataset)
        if column is None:
            raise ExportError(f"--since: dataset {name} has no time column to filter on")
        try:
            cutoff = (now() - since).astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ExportError(
                f"--since: {since.days:,} days back is before the year 1 (leave --since out "
                "for every row)"
            ) from None
        where = f" WHERE {column.name} >= CAST($cutoff AS {column.type})"
        parameters["cutoff"] = cutoff
    rows = 0
    with open_rollups(store, timezone="UTC") as connection:
        try:
            relation = connection.sql(
                f"SELECT {_select(dataset, fmt)} FROM {dataset.name}{where}",
                params=parameters or None,
            )
            reader = relation.to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise ExportError(f"cannot read {dataset.name}: {first_line(exc)}") from None
        writer = _writer(fmt, output, reader.schema)
        try:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
        finally:
            writer.close()
    return rows


def export_to_file(store: RollupStore, name: str, fmt: str, path: Path, **options) -> int:
    """``export_dataset`` into ``path``, written beside it and renamed when complete.

    Raises ExportError when the file cannot be written (its folder missing, say); a failed
    export leaves neither ``path`` nor a partial file. A ``path`` that is a device or a pipe
    (``/dev/stdout``, a FIFO) is written directly: there is nothing to rename over it.
    """
    path = Path(path)
    if path.exists() and not path.resolve().is_file():
        # A device or a pipe (/dev/stdout, /dev/null, a FIFO): written into as it is, since
        # renaming a file over it would replace the device itself.
        try:
            handle = open(path, "wb")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            raise ExportError(f"--output: cannot write {path}: {exc.strerror}") from None
        with handle:
            return export_dataset(store, name, fmt, handle, **options)
    partial = path.with_name(f".{path.name}.partial")
    try:
        handle = open(partial, "wb")  # noqa: SIM115 (closed below, before the rename)
    except OSError as exc:
        raise ExportError(f"--output: cannot write {path}: {exc.strerror}") from None
    try:
        with handle:
            rows = export_dataset(store, name, fmt, handle, **options)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return rows
