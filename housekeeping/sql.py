"""Quoting for SQL text we build ourselves: every identifier and string literal goes through here.

Values from users are bound as parameters wherever the driver allows; these helpers cover what
cannot be bound: table and column names, and (in DuckDB statements) file paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# One part of a dotted name: in double quotes (a doubled quote inside), or plain (no dot, no quote).
_PART = r'(?:"((?:[^"]|"")+)"|([^."]+))'
_TABLE_NAME = re.compile(rf"{_PART}(?:\.{_PART})?")


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


@dataclass(frozen=True)
class TableName:
    """A table (or view) as the config names it: ``name`` in ``schema``.

    ``schema`` None means the first schema of the search path holding ``name`` (SQLite: the main
    database). Both parts are exact: quoted, so case matters (``AuditTrail`` is not
    ``audittrail``). Written ``schema.name`` (one dot) or bare, each part optionally in SQL's
    double quotes (``"App"."Audit.Trail"``); ``str`` gives the plain spelling back, and so does
    ``repr``, so messages read ``'app.sessions'``.
    """

    name: str
    schema: str | None = None

    @classmethod
    def parse(cls, text: str) -> TableName:
        """``'app.sessions'`` -> schema ``app``, table ``sessions``; ``'sessions'`` -> no schema;
        ``'"App"."Audit.Trail"'`` -> schema ``App``, table ``Audit.Trail`` (quotes as in SQL, a
        doubled quote for a quote; unquoted parts are taken as written, not lowercased).

        Raises ValueError for an empty part, more than two parts, or an unclosed quote.
        """
        match = _TABLE_NAME.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a table name: write 'table' or 'schema.table' (a part holding "
                "a dot goes in double quotes: 'app.\"v1.sessions\"')"
            )
        quoted_first, first, quoted_second, second = match.groups()
        first = first if quoted_first is None else quoted_first.replace('""', '"')
        if quoted_second is None and second is None:
            return cls(first)
        second = second if quoted_second is None else quoted_second.replace('""', '"')
        return cls(second, first)

    @classmethod
    def of(cls, table: TableName | str) -> TableName:
        """``table`` itself, or a spelled name parsed (``'app.sessions'``)."""
        return table if isinstance(table, TableName) else cls.parse(table)

    @property
    def sql(self) -> str:
        """The name as SQL text: each part quoted, ``"app"."sessions"``."""
        if self.schema is None:
            return quote_identifier(self.name)
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.name)}"

    def __str__(self) -> str:
        parts = [self.name] if self.schema is None else [self.schema, self.name]
        # A part that holds a dot or a quote is shown quoted, so the spelling parses back.
        return ".".join(
            quote_identifier(part) if "." in part or '"' in part else part for part in parts
        )

    def __repr__(self) -> str:
        return repr(str(self))


def unquote_identifier(text: str) -> str:
    """``'"AuditTrail"'`` -> ``'AuditTrail'`` (a name copied from SQL); anything else as is."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text
