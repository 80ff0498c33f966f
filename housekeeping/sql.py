"""Quoting for SQL text we build ourselves: every identifier and string literal goes through here.

Values from users are bound as parameters wherever the driver allows; these helpers cover what
cannot be bound: table and column names, and (in DuckDB statements) file paths.
"""


def quote_identifier(name: str) -> str:
    """Double-quote an identifier (valid in PostgreSQL, SQLite and DuckDB).

    Embedded double quotes are doubled, so any name is safe; names come from the live schema or
    the config file.
    """
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A SQL string literal: single-quoted, embedded single quotes doubled (e.g. a file path in a
    DuckDB ``read_parquet(...)`` or ``COPY ... TO``)."""
    return "'" + value.replace("'", "''") + "'"
