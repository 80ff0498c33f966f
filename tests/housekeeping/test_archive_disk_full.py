"""A table policy whose archive.root fills up mid-run: one line naming archive.root, and the
archive plus the table still hold every row exactly once (rows whose batch did not fit are not
deleted; no partial Parquet file or manifest is left behind).

The child process sees a tiny tmpfs mounted on archive.root in its own user and mount namespace
(``on_tiny_disk``); the application database is a SQLite file outside it.
"""

from __future__ import annotations

from tests.housekeeping.test_file_retention_faults import on_tiny_disk

ROWS = 3000

FULL_TABLE_ARCHIVE = """
import json, os, sqlite3, sys
from pathlib import Path
import pyarrow.parquet as pq
from housekeeping.atomic import DiskFull
from housekeeping.database import AppDatabase
from housekeeping.policies import run_policy
from tests.housekeeping.test_token_cleanup import token_config

tmp = Path(sys.argv[1])
rows = int(sys.argv[2])
app = tmp / "app.db"
with sqlite3.connect(app) as conn:
    conn.execute(
        "CREATE TABLE revoked_tokens (id INTEGER PRIMARY KEY, user_id INTEGER, "
        "token_hash TEXT, revoked_at TIMESTAMP, expires_at TIMESTAMP)"
    )
    conn.executemany(
        "INSERT INTO revoked_tokens VALUES (?, ?, ?, '2026-01-01 00:00:00', ?)",
        [
            (i, i % 50, os.urandom(48).hex(), "2026-01-02 00:00:00" if i % 4 else "2999-01-01 00:00:00")
            for i in range(1, rows + 1)
        ],
    )
db = AppDatabase(f"sqlite:///{app}")
try:
    run_policy(db, token_config(tmp, max_delete_fraction=1.0, archive=True), "revoked_tokens")
    error = None
except DiskFull as exc:
    error = str(exc)
finally:
    db.dispose()
archived = []
names = []
for path in sorted((tmp / "archive").rglob("*")):
    if path.is_file():
        names.append(str(path.relative_to(tmp / "archive")))
        if path.suffix == ".parquet":
            archived += pq.read_table(path, columns=["id"]).column("id").to_pylist()
with sqlite3.connect(app) as conn:
    left = [row[0] for row in conn.execute("SELECT id FROM revoked_tokens")]
print(json.dumps({"error": error, "archived": archived, "left": left, "files": names}))
"""


def test_a_full_archive_root_mid_run_is_one_line_and_loses_no_row(tmp_path):
    child = on_tiny_disk(
        tmp_path / "archive", FULL_TABLE_ARCHIVE, str(tmp_path), str(ROWS), size="96k"
    )

    assert child["error"] is not None, child
    assert child["error"].startswith(f"archive.root: {tmp_path / 'archive'} is full")
    assert "\n" not in child["error"]
    # Some batches fit before the disk filled: archived, then deleted; the rest is untouched.
    archived, left = child["archived"], child["left"]
    assert archived, child["files"]
    assert len(archived) == len(set(archived))
    assert sorted(archived + left) == list(range(1, ROWS + 1))
    assert not [name for name in child["files"] if name.endswith((".pending", ".tmp"))]
