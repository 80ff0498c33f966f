"""An analyst's DuckDB session in a process of its own (no tests here).

DuckDB's lock on a database file is per process, so only a real second process shows what an
analyst's session does to the pipeline. The session is driven line by line over stdin: each
command answers one JSON line (``{"rows": [...]}`` or ``{"error": "..."}``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

_SESSION = textwrap.dedent(
    """
    import json, sys
    import duckdb

    path, read_only = sys.argv[1], sys.argv[2] == "read_only"
    connection = duckdb.connect(path, read_only=read_only)
    print(json.dumps({"rows": []}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["do"] == "reconnect":
                connection.close()
                connection = duckdb.connect(path, read_only=command["read_only"])
                rows = []
            else:
                rows = [list(row) for row in connection.execute(command["sql"]).fetchall()]
            print(json.dumps({"rows": rows}, default=str), flush=True)
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    connection.close()
    """
)


class DuckDBSession:
    """``duckdb.connect(path)`` in another process (``read_only`` as the analyst chose)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SESSION, str(path), "read_only" if read_only else "read_write"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._answer()  # connected (or the process failed, which _answer raises)

    def _answer(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the DuckDB session ended (exit code {self.process.wait()})")
        return json.loads(line)

    def _send(self, command: dict[str, Any]) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def query(self, sql: str) -> list[list[Any]]:
        """The rows of ``sql``; AssertionError with the session's error when it fails."""
        answer = self._send({"do": "query", "sql": sql})
        assert "error" not in answer, answer["error"]
        return answer["rows"]

    def reconnect(self, read_only: bool) -> None:
        answer = self._send({"do": "reconnect", "read_only": read_only})
        assert "error" not in answer, answer["error"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def __enter__(self) -> DuckDBSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
