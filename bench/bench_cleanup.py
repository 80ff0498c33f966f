"""Token cleanup speed on PostgreSQL, as ratios against a single DELETE measured in the same run.

    make bench-cleanup            # or: .venv/bin/python bench/bench_cleanup.py [--naive] [...]

The target (issue 16): on ``revoked_tokens`` with 2,000,000 rows of which 1,500,000 expired (expiry
uncorrelated with insertion order, indexes on expires_at and user_id), ``run_policy`` with
``batch.workers`` workers cleans up in at most the time of one
``DELETE FROM revoked_tokens WHERE expires_at < now()`` on a fresh copy of the same data (2x with
the archive on), while the application keeps inserting tokens (``--insert-every``) and no write
transaction lasts over 250 ms as the database sees it (a watcher polls ``pg_stat_activity``), and
the cleanup's peak memory does not grow with the table size. ``--scale`` adds a 20,000,000-row run:
time per deleted row, peak memory and longest transaction against the 2,000,000-row run.

Every contender runs on a fresh copy of one template table (same rows, same physical order, same
indexes, vacuumed and checkpointed), ``--repeat`` times, interleaved so that a noisy neighbour hurts
all contenders alike; the median counts. This is a report, not a test: it exits 0 on FAIL too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from housekeeping.config import DEFAULT_WORKERS, HousekeepingConfig, parse_config  # noqa: E402
from housekeeping.database import AppDatabase  # noqa: E402
from housekeeping.policies import RunOptions, run_policy  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "revoked_tokens"
TEMPLATE = "bench_revoked_tokens_template"
BATCH_LIMIT_MS = 250.0
# Peak RSS may wobble by allocator noise; "does not grow with table size" means within this.
MEMORY_GROWTH_TOLERANCE = 1.20
NAIVE_BATCH = 5000
# The sessions a run uses carry this application_name, so the watcher sees only them.
APPLICATION_NAME = "hk-bench-cleanup"
WATCH_INTERVAL_S = 0.01
SCALE_ROWS = 20_000_000
# "Flat" at scale: time per deleted row and peak memory within this of the 2 M run.
SCALE_TOLERANCE = 1.20


def with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return (
        f"{url}{separator}options={quote(f'-csearch_path={schema}')}"
        f"&application_name={APPLICATION_NAME}"
    )


class TransactionWatcher:
    """Polls ``pg_stat_activity`` every WATCH_INTERVAL_S for the bench's sessions: the longest
    transaction that had written (holds an xid, so row locks), as the server measures it
    (``now() - xact_start``), and the longest read-only one (the counts). Under-reads by at most
    one poll interval."""

    QUERY = """
        SELECT coalesce(max(extract(epoch FROM now() - xact_start))
                        FILTER (WHERE backend_xid IS NOT NULL), 0),
               coalesce(max(extract(epoch FROM now() - xact_start))
                        FILTER (WHERE backend_xid IS NULL), 0),
               count(*) FILTER (WHERE xact_start IS NOT NULL)
        FROM pg_stat_activity
        WHERE application_name = %s AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.longest_write_ms = 0.0
        self.longest_read_ms = 0.0
        self.most_sessions = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            while not self.stop.is_set():
                write_s, read_s, sessions = conn.execute(self.QUERY, (APPLICATION_NAME,)).fetchone()
                self.longest_write_ms = max(self.longest_write_ms, float(write_s) * 1000)
                self.longest_read_ms = max(self.longest_read_ms, float(read_s) * 1000)
                self.most_sessions = max(self.most_sessions, int(sessions))
                time.sleep(WATCH_INTERVAL_S)


@contextlib.contextmanager
def watched(base_url: str) -> Iterator[TransactionWatcher]:
    watcher = TransactionWatcher(base_url)
    thread = threading.Thread(target=watcher.run, name="bench-watcher", daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        watcher.stop.set()
        thread.join()


@contextlib.contextmanager
def app_inserting(url: str, every_s: float) -> Iterator[list[float]]:
    """The application: inserts one token (not expired) every ``every_s`` seconds, each in its
    own transaction, until the block ends; yields the insert latencies (s) as they come."""
    latencies: list[float] = []
    stop = threading.Event()

    def insert() -> None:
        with psycopg.connect(url.replace(APPLICATION_NAME, "hk-bench-app"), autocommit=True) as c:
            while not stop.is_set():
                started = time.perf_counter()
                c.execute(
                    f"INSERT INTO {TABLE} (id, user_id, token_hash, revoked_at, expires_at) "
                    "VALUES (-nextval('bench_app_ids'), 1, 'app', now(), now() + interval '7 days')"
                )
                latencies.append(time.perf_counter() - started)
                stop.wait(every_s)

    thread = None
    if every_s > 0:
        thread = threading.Thread(target=insert, name="bench-app", daemon=True)
        thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        if thread is not None:
            thread.join()


# The template is built in SQL rather than by housekeeping.demo.seed.seed_database: the issue fixes
# an exact count of expired rows (1,500,000 of 2,000,000) with expiry uncorrelated with insertion
# order, while the generator draws expiry as revoked_at + a realistic lifetime, so its expired share
# is whatever the lifetimes give and old (early-inserted) tokens are the expired ones. Here each row
# is expired or not by a random permutation, at least an hour away from now either way, so the set
# of expired rows stays the same for the whole benchmark.
TEMPLATE_SQL = f"""
CREATE TABLE {TEMPLATE} AS
SELECT s.id,
       (1 + floor(random() * 50000))::bigint AS user_id,
       md5(s.id::text || ':' || random()::text) AS token_hash,
       now() - interval '31 days' + s.id * (interval '30 days' / %(rows)s) AS revoked_at,
       CASE WHEN s.position <= %(expired)s
            THEN now() - interval '1 hour' - random() * interval '29 days'
            ELSE now() + interval '1 hour' + random() * interval '29 days'
       END AS expires_at
FROM (
    SELECT g::bigint AS id, row_number() OVER (ORDER BY random()) AS position
    FROM generate_series(1, %(rows)s) AS g
) AS s
ORDER BY s.id
"""


class BenchDatabase:
    """One throwaway schema holding the template and, in turn, each fresh copy."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.schema = f"hk_bench_{uuid.uuid4().hex[:10]}"
        self.url = with_search_path(base_url, self.schema)
        self.conn = psycopg.connect(self.url, autocommit=True)

    def create_schema(self) -> None:
        with psycopg.connect(self.base_url, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{self.schema}"')

    def drop_schema(self) -> None:
        self.conn.close()
        with psycopg.connect(self.base_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def build_template(self, rows: int, expired: int) -> None:
        self.conn.execute("SELECT setseed(0.42)")
        # One process only, so the rows are generated (and stored) in id order.
        self.conn.execute("SET max_parallel_workers_per_gather = 0")
        self.conn.execute(TEMPLATE_SQL, {"rows": rows, "expired": expired})

    def fresh_copy(self, rows: int | None = None) -> int:
        """A new ``revoked_tokens`` from the template (its first ``rows``); returns expired rows."""
        self.conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        where = f"WHERE id <= {int(rows)}" if rows is not None else ""
        # A serial plan keeps the template's physical order.
        self.conn.execute("SET max_parallel_workers_per_gather = 0")
        self.conn.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM {TEMPLATE} {where}")
        self.conn.execute("RESET max_parallel_workers_per_gather")
        self.conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
        self.conn.execute(f"CREATE INDEX {TABLE}_expires_at_idx ON {TABLE} (expires_at)")
        self.conn.execute(f"CREATE INDEX {TABLE}_user_id_idx ON {TABLE} (user_id)")
        self.conn.execute(f"VACUUM ANALYZE {TABLE}")
        self.conn.execute("CREATE SEQUENCE IF NOT EXISTS bench_app_ids")
        # Start every contender without someone else's dirty buffers to write back.
        self.conn.execute("CHECKPOINT")
        return self.conn.execute(
            f"SELECT count(*) FROM {TABLE} WHERE expires_at < now()"
        ).fetchone()[0]

    def count(self) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]


@dataclass
class Run:
    seconds: float
    max_batch_ms: float
    batches: int
    peak_memory_mib: float | None = None
    problem: str | None = None
    # measured by the server (pg_stat_activity), not the client
    longest_write_ms: float = 0.0
    longest_read_ms: float = 0.0
    sessions: int = 0
    app_inserts: int = 0
    app_insert_max_ms: float = 0.0


@dataclass
class Contender:
    name: str
    limit: float | None
    rows: int
    measure: Callable[[BenchDatabase, int], Run]
    workers: int = 1
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(run.seconds for run in self.runs)


def single_delete(bench: BenchDatabase, expired: int) -> Run:
    started = time.perf_counter()
    deleted = bench.conn.execute(f"DELETE FROM {TABLE} WHERE expires_at < now()").rowcount
    seconds = time.perf_counter() - started
    problem = None if deleted == expired else f"deleted {deleted:,}, expected {expired:,}"
    return Run(seconds, seconds * 1000, 1, problem=problem)


def naive_limit_subselect(bench: BenchDatabase, expired: int) -> Run:
    """The familiar pattern: each batch re-reads the dead rows all earlier batches left behind."""
    deleted = batches = 0
    longest = 0.0
    started = time.perf_counter()
    while True:
        batch_started = time.perf_counter()
        count = bench.conn.execute(
            f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} "
            f"WHERE expires_at < now() LIMIT {NAIVE_BATCH})"
        ).rowcount
        longest = max(longest, (time.perf_counter() - batch_started) * 1000)
        batches += 1
        deleted += count
        if count < NAIVE_BATCH:
            break
    seconds = time.perf_counter() - started
    problem = None if deleted == expired else f"deleted {deleted:,}, expected {expired:,}"
    return Run(seconds, longest, batches, problem=problem)


def cleanup_config(archive_root: str, *, archive: bool, workers: int) -> HousekeepingConfig:
    return parse_config(
        {
            "archive": {"root": archive_root},
            "batch": {"workers": workers},
            "policies": {
                TABLE: {
                    "kind": "expired",
                    "table": TABLE,
                    "cutoff_column": "expires_at",
                    "archive": archive,
                }
            },
        },
        "bench",
    )


def run_cleanup(url: str, archive_root: str, *, archive: bool, workers: int) -> dict:
    """One token cleanup exactly as the Dagster asset runs it (75% expire: allow_large_delete)."""
    db = AppDatabase(url)
    try:
        started = time.perf_counter()
        result = run_policy(
            db,
            cleanup_config(archive_root, archive=archive, workers=workers),
            TABLE,
            options=RunOptions(allow_large_delete=True),
        )
        seconds = time.perf_counter() - started
    finally:
        db.dispose()
    return {
        "seconds": seconds,
        "deleted": result.deleted,
        "remaining_expired": result.remaining_expired,
        "archived_rows": result.archived_rows,
        "max_batch_ms": result.max_batch_ms,
        "batches": result.batches,
        "strategies": result.strategies,
    }


def check_cleanup(outcome: dict, expired: int, *, archive: bool) -> str | None:
    if outcome["deleted"] != expired:
        return f"deleted {outcome['deleted']:,}, expected {expired:,}"
    if outcome["remaining_expired"]:
        return f"{outcome['remaining_expired']:,} expired rows remain"
    if archive and outcome["archived_rows"] != expired:
        return f"archived {outcome['archived_rows']:,} of {expired:,} rows"
    return None


def policy_cleanup(*, archive: bool, workers: int) -> Callable[[BenchDatabase, int], Run]:
    def measure(bench: BenchDatabase, expired: int) -> Run:
        root = tempfile.mkdtemp(prefix="hk-bench-archive-")
        try:
            outcome = run_cleanup(bench.url, root, archive=archive, workers=workers)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return Run(
            outcome["seconds"],
            outcome["max_batch_ms"],
            outcome["batches"],
            problem=check_cleanup(outcome, expired, archive=archive),
        )

    return measure


def peak_memory_child(url: str, archive: bool, workers: int) -> dict:
    """Runs in a fresh interpreter, so its high-water mark is the cleanup's alone."""
    before = _vm_hwm_mib()
    root = tempfile.mkdtemp(prefix="hk-bench-archive-")
    try:
        outcome = run_cleanup(url, root, archive=archive, workers=workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    outcome["rss_before_mib"] = before
    outcome["peak_rss_mib"] = _vm_hwm_mib()
    return outcome


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_peak_memory(
    bench: BenchDatabase, rows: int | None, *, archive: bool, workers: int, insert_every: float
) -> dict:
    expired = bench.fresh_copy(rows)
    command = [sys.executable, __file__, "--memory-child", bench.url, "--workers", str(workers)]
    with app_inserting(bench.url, insert_every), watched(bench.base_url) as watcher:
        child = subprocess.run(
            command + (["--archive"] if archive else []),
            capture_output=True,
            text=True,
            check=False,
        )
    if child.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{child.stderr}")
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    outcome["rows"] = rows if rows is not None else bench.count() + outcome["deleted"]
    outcome["expired"] = expired
    outcome["longest_write_ms"] = watcher.longest_write_ms
    outcome["problem"] = check_cleanup(outcome, expired, archive=archive)
    return outcome


# What --profile times: (module, owner or None, attribute, label). Thread-summed: the workers'
# phases overlap, so the column adds up to more than the run's wall time.
PROFILED = [
    ("policies", None, "check_policy", "schema check (reflection)"),
    ("policies", None, "check_clock_skew", "clock check"),
    ("policies", None, "table_lock", "table lock (advisory)"),
    ("archive", "TableArchive", "recover", "archive recovery"),
    ("policies", None, "planned_counts", "counts before (estimate or exact)"),
    ("deletion", None, "_open_sessions", "open every worker's connections"),
    ("deletion", "_PostgresSession", "export_snapshot", "export snapshot (reader)"),
    ("deletion", "_PostgresSession", "stream", "COPY read -> Arrow (reader)"),
    ("archive", "TableArchive", "stage", "Parquet write + fsync (stage)"),
    ("deletion", "_PostgresSession", "import_snapshot", "import snapshot (deleter)"),
    ("deletion", "_PostgresSession", "apply_settings", "batch settings (set_config)"),
    ("deletion", "_PostgresSession", "execute", "DELETE (deleter)"),
    ("deletion", "_PostgresSession", "commit", "COMMIT"),
    ("archive", "TableArchive", "commit", "publish (rename + fsync dir)"),
    ("archive", "TableArchive", "list_in_manifests", "manifest rewrite (group)"),
    ("policies", None, "_remaining_expired", "counts after"),
]


def profile_run(bench: BenchDatabase, workers: int) -> None:
    """One archived cleanup with its phases timed (wrapped in this process), printed as a table."""
    import housekeeping.archive as archive_module
    import housekeeping.deletion as deletion_module
    import housekeeping.policies as policies_module

    modules = {
        "policies": policies_module,
        "deletion": deletion_module,
        "archive": archive_module,
    }
    totals: dict[str, list[float]] = {}
    lock = threading.Lock()
    restore = []

    def wrap(label: str, real: Callable) -> Callable:
        def timed_call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                name = label
                if label == "COMMIT":
                    thread = threading.current_thread().name
                    name = "COMMIT (deleter)" if "archive" in thread else "COMMIT (reader)"
                with lock:
                    entry = totals.setdefault(name, [0.0, 0])
                    entry[0] += elapsed
                    entry[1] += 1

        return timed_call

    for module_name, owner_name, attribute, label in PROFILED:
        owner = modules[module_name]
        if owner_name is not None:
            owner = getattr(owner, owner_name)
        real = getattr(owner, attribute)
        restore.append((owner, attribute, real))
        setattr(owner, attribute, wrap(label, real))
    expired = bench.fresh_copy()
    root = tempfile.mkdtemp(prefix="hk-bench-archive-")
    try:
        with app_inserting(bench.url, 0.01):
            outcome = run_cleanup(bench.url, root, archive=True, workers=workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for owner, attribute, real in restore:
            setattr(owner, attribute, real)
    print()
    print(
        f"profile: one archived run_policy, {workers} workers, {outcome['deleted']:,} of "
        f"{expired:,} expired rows deleted in {outcome['batches']} batches, "
        f"{outcome['seconds']:.2f} s wall (phases summed over threads)"
    )
    print(f"{'phase':<40} {'seconds':>8} {'calls':>6} {'of wall':>8}")
    for name, (seconds, calls) in totals.items():
        print(f"{name:<40} {seconds:>8.2f} {calls:>6} {seconds / outcome['seconds']:>7.0%}")


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def print_speed_table(contenders: list[Contender], baselines: dict[int, float]) -> list[str]:
    """One line per contender: median time, its ratio to the single DELETE of the same size, the
    longest write transaction the server saw (and the client's longest batch), the app's inserts."""
    failures = []
    header = (
        f"{'contender':<30} {'workers':>7} {'rows':>10} {'median s':>9}  {'runs s':<18} "
        f"{'ratio':>6} {'limit':>6} {'longest txn ms':>15} {'batches':>7} {'app inserts':>17}"
        "  result"
    )
    print(header)
    print("-" * len(header))
    for contender in contenders:
        ratio = contender.median / baselines[contender.rows]
        runs = " ".join(f"{run.seconds:.2f}" for run in contender.runs)
        # The server's view (pg_stat_activity) and the client's clock: the larger counts.
        longest = max(max(run.longest_write_ms, run.max_batch_ms) for run in contender.runs)
        batches = round(statistics.median(run.batches for run in contender.runs))
        inserts = sum(run.app_inserts for run in contender.runs)
        insert_max = max(run.app_insert_max_ms for run in contender.runs)
        problems = [run.problem for run in contender.runs if run.problem]
        if contender.limit is None:
            verdict = "baseline" if contender.name.startswith("single") else "info"
            limit = "-"
        else:
            limit = f"{contender.limit:g}x"
            reasons = []
            if ratio > contender.limit:
                reasons.append(f"ratio {ratio:.2f}x > {limit}")
            if longest > BATCH_LIMIT_MS:
                reasons.append(f"a transaction took {longest:.0f} ms > {BATCH_LIMIT_MS:.0f} ms")
            verdict = "PASS" if not reasons and not problems else "FAIL"
            if reasons or problems:
                failures.append(f"{contender.name}: " + "; ".join(reasons + problems))
        if problems and contender.limit is None:
            verdict = "WRONG"
            failures.append(f"{contender.name}: " + "; ".join(problems))
        app = f"{inserts} (max {insert_max:.0f} ms)" if inserts else "-"
        print(
            f"{contender.name:<30} {contender.workers:>7} {contender.rows:>10,} "
            f"{contender.median:>9.2f}  {runs:<18} {_fmt_ratio(ratio):>6} {limit:>6} "
            f"{longest:>15.0f} {batches:>7} {app:>17}  {verdict}"
        )
    return failures


def print_memory_table(results: list[dict]) -> list[str]:
    failures = []
    print()
    print("peak memory of the cleanup process (a fresh child interpreter per run, VmHWM)")
    header = (
        f"{'contender':<34} {'rows':>10} {'expired':>10} {'RSS before':>11} {'peak RSS':>9} "
        f"{'batches':>8}"
    )
    print(header)
    print("-" * len(header))
    for item in results:
        name = "run_policy, archive" if item["archive"] else "run_policy, no archive"
        print(
            f"{name:<34} {item['rows']:>10,} {item['expired']:>10,} "
            f"{item['rss_before_mib']:>8.0f} MiB {item['peak_rss_mib']:>5.0f} MiB "
            f"{item['batches']:>8}"
        )
        if item["problem"]:
            failures.append(f"memory run {name} at {item['rows']:,} rows: {item['problem']}")
    for archive in (False, True):
        series = sorted((r for r in results if r["archive"] == archive), key=lambda r: r["rows"])
        if len(series) < 2:
            continue
        small, large = series[0], series[-1]
        growth = large["peak_rss_mib"] / small["peak_rss_mib"]
        name = "archive" if archive else "no archive"
        verdict = "PASS" if growth <= MEMORY_GROWTH_TOLERANCE else "FAIL"
        print(
            f"  {name}: {large['rows'] / small['rows']:.0f}x the rows -> peak RSS x{growth:.2f} "
            f"(limit x{MEMORY_GROWTH_TOLERANCE:.2f}: does not grow with table size)  {verdict}"
        )
        if verdict == "FAIL":
            failures.append(f"peak memory ({name}) grew x{growth:.2f} with the table size")
    return failures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("HK_BENCH_POSTGRES_URL", DEFAULT_URL),
        help="PostgreSQL server (default: $HK_BENCH_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--rows", type=int, default=2_000_000, help="tokens in the table")
    parser.add_argument("--expired", type=int, default=1_500_000, help="of which expired")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (median)")
    parser.add_argument(
        "--naive",
        action="store_true",
        help="also time DELETE ... WHERE id IN (SELECT ... LIMIT n) on a smaller copy",
    )
    parser.add_argument(
        "--naive-rows",
        type=int,
        default=200_000,
        help="table size for --naive (it is quadratic; default %(default)s)",
    )
    parser.add_argument(
        "--memory-rows",
        type=int,
        default=500_000,
        help="the smaller table of the peak-memory comparison (default %(default)s)",
    )
    parser.add_argument(
        "--keep-schema",
        action="store_true",
        help="keep the throwaway schema (and the last copy) for inspection",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="batch.workers of the cleanups (default: the config default, %(default)s)",
    )
    parser.add_argument(
        "--compare-workers",
        action="store_true",
        help="also time the cleanups with one worker",
    )
    parser.add_argument(
        "--insert-every",
        type=float,
        default=0.01,
        help="the application inserts a token every this many seconds during every timed run "
        "(0: no insert load; default %(default)s)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help=f"also clean up {SCALE_ROWS:,} rows (75%% expired) and compare per-row time, peak "
        "memory and longest transaction with the --rows run (builds a large template: slow)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also time the phases of one archived cleanup (COPY read, Parquet, DELETE, ...)",
    )
    parser.add_argument("--profile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--archive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.expired <= args.rows:
        parser.error("--expired must be between 1 and --rows")
    return args


def timed(bench: BenchDatabase, contender: Contender, expired: int, insert_every: float) -> Run:
    """One run of ``contender`` under the application's insert load, watched from the server."""
    with (
        app_inserting(bench.url, insert_every) as latencies,
        watched(bench.base_url) as watcher,
    ):
        run = contender.measure(bench, expired)
    run.longest_write_ms = watcher.longest_write_ms
    run.longest_read_ms = watcher.longest_read_ms
    run.sessions = watcher.most_sessions
    run.app_inserts = len(latencies)
    run.app_insert_max_ms = max(latencies, default=0.0) * 1000
    return run


def memory_run(
    bench: BenchDatabase, rows: int | None, archive: bool, workers: int, insert_every: float
) -> dict:
    outcome = measure_peak_memory(
        bench, rows, archive=archive, workers=workers, insert_every=insert_every
    )
    outcome["archive"] = archive
    print(
        f"  memory: {outcome['rows']:>10,} rows, archive {archive}: {outcome['seconds']:.2f} s, "
        f"peak {outcome['peak_rss_mib']:.0f} MiB, longest write txn "
        f"{outcome['longest_write_ms']:.0f} ms",
        flush=True,
    )
    return outcome


def print_scale_line(small: dict, large: dict) -> list[str]:
    """The --scale comparison: the large run against the --rows run, both fresh children."""
    per_row_small = small["seconds"] / small["deleted"]
    per_row_large = large["seconds"] / large["deleted"]
    time_ratio = per_row_large / per_row_small
    memory_ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    print()
    print(
        f"scale: {large['rows']:,} rows ({large['deleted']:,} deleted) in {large['seconds']:.1f} s"
        f" = {per_row_large * 1e6:.2f} us/row vs {per_row_small * 1e6:.2f} us/row at "
        f"{small['rows']:,} (x{time_ratio:.2f}, limit x{SCALE_TOLERANCE:.2f}); peak memory "
        f"{large['peak_rss_mib']:.0f} vs {small['peak_rss_mib']:.0f} MiB (x{memory_ratio:.2f}, "
        f"limit x{SCALE_TOLERANCE:.2f}); longest write transaction "
        f"{large['longest_write_ms']:.0f} ms vs {small['longest_write_ms']:.0f} ms "
        f"(<= {BATCH_LIMIT_MS:.0f})"
    )
    failures = []
    if time_ratio > SCALE_TOLERANCE:
        failures.append(f"time per row grew x{time_ratio:.2f} at scale")
    if memory_ratio > SCALE_TOLERANCE:
        failures.append(f"peak memory grew x{memory_ratio:.2f} at scale")
    if large["longest_write_ms"] > BATCH_LIMIT_MS:
        failures.append(f"a transaction took {large['longest_write_ms']:.0f} ms at scale")
    if large["problem"]:
        failures.append(f"scale run: {large['problem']}")
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(peak_memory_child(args.memory_child, args.archive, args.workers)))
        return 0

    template_rows = SCALE_ROWS if args.scale else args.rows
    template_expired = round(template_rows * args.expired / args.rows)
    # With --scale the --rows copies are the template's first rows: about the same share expires.
    rows_copy = args.rows if args.scale else None
    fraction = args.expired / args.rows
    bench = BenchDatabase(args.url)
    bench.create_schema()
    try:
        started = time.perf_counter()
        bench.build_template(template_rows, template_expired)
        print(
            f"template: {template_rows:,} tokens, {template_expired:,} expired ({fraction:.0%}), "
            f"expiry shuffled against insertion order; schema {bench.schema} "
            f"({time.perf_counter() - started:.0f}s); load average "
            + " ".join(f"{value:.1f}" for value in os.getloadavg())
            + f" on {os.cpu_count()} cores; app inserts every {args.insert_every:g} s"
        )
        workers = args.workers
        if args.profile_only:
            profile_run(bench, workers)
            return 0
        contenders = [
            Contender("single DELETE", None, args.rows, single_delete),
            Contender(
                "run_policy, no archive",
                1.0,
                args.rows,
                policy_cleanup(archive=False, workers=workers),
                workers,
            ),
            Contender(
                "run_policy, archive",
                2.0,
                args.rows,
                policy_cleanup(archive=True, workers=workers),
                workers,
            ),
        ]
        if args.compare_workers and workers != 1:
            contenders += [
                Contender(
                    "run_policy, no archive",
                    None,
                    args.rows,
                    policy_cleanup(archive=False, workers=1),
                    1,
                ),
                Contender(
                    "run_policy, archive",
                    None,
                    args.rows,
                    policy_cleanup(archive=True, workers=1),
                    1,
                ),
            ]
        if args.naive:
            contenders += [
                Contender("single DELETE", None, args.naive_rows, single_delete),
                Contender(
                    f"naive LIMIT {NAIVE_BATCH} subselect",
                    None,
                    args.naive_rows,
                    naive_limit_subselect,
                ),
            ]
        # Interleaved rounds: a slow minute on the shared machine hits every contender.
        for round_number in range(1, args.repeat + 1):
            for contender in contenders:
                rows = rows_copy if contender.rows == args.rows else contender.rows
                expired = bench.fresh_copy(rows)
                run = timed(bench, contender, expired, args.insert_every)
                contender.runs.append(run)
                print(
                    f"  round {round_number}: {contender.name:<26} x{contender.workers} "
                    f"{contender.rows:>10,} rows {run.seconds:7.2f} s  longest write txn "
                    f"{run.longest_write_ms:5.0f} ms (client {run.max_batch_ms:4.0f}), read "
                    f"{run.longest_read_ms:5.0f} ms, {run.sessions} sessions, "
                    f"{run.batches:>4} batches, {run.app_inserts} app inserts"
                    + (f"  PROBLEM: {run.problem}" if run.problem else ""),
                    flush=True,
                )
        memory = []
        for rows in sorted({min(args.memory_rows, args.rows), args.rows}):
            for archive in (False, True):
                copy = rows_copy if rows == args.rows else rows
                memory.append(memory_run(bench, copy, archive, workers, args.insert_every))
        scale = None
        if args.scale:
            scale = memory_run(bench, None, False, workers, args.insert_every)

        print()
        baselines = {c.rows: c.median for c in contenders if c.name == "single DELETE"}
        failures = print_speed_table(contenders, baselines)
        failures += print_memory_table(memory)
        if scale is not None:
            small = next(m for m in memory if not m["archive"] and m["rows"] == args.rows)
            failures += print_scale_line(small, scale)
        if args.profile:
            profile_run(bench, workers)
        print()
        if failures:
            print("SUMMARY: FAIL: " + " | ".join(failures))
        else:
            print(
                f"SUMMARY: PASS: cleanup with {workers} workers "
                f"{contenders[1].median / baselines[args.rows]:.2f}x and with archive "
                f"{contenders[2].median / baselines[args.rows]:.2f}x a single DELETE, every "
                f"transaction under {BATCH_LIMIT_MS:.0f} ms, peak memory flat across table sizes"
            )
    finally:
        if args.keep_schema:
            print(f"kept schema {bench.schema} ({bench.url})")
            bench.conn.close()
        else:
            bench.drop_schema()
    return 0


if __name__ == "__main__":
    sys.exit(main())
