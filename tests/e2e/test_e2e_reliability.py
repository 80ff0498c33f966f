"""End to end: the live daemon survives what production throws at it.

One deployment (webserver + daemon on the shipped dagster.yaml, PostgreSQL storage reached
through a TCP proxy the tests can cut) with a test config: the error_logs policy scheduled every
minute, and batches of 10 rows so a request_logs cleanup lasts long enough to be interrupted.

- The daemon's whole process group (daemon, code server, run worker) is killed in the middle of a
  housekeeping run: the run is marked failed by run monitoring, its table's pool slot is freed,
  the next run finishes the work and archive plus table still hold every row exactly once.
- The daemon is stopped with SIGTERM (a graceful restart) in the middle of a cleanup: the run
  finishes once, in the code server the old daemon started, and is recorded as a success.
- The daemon is killed in the middle of a schedule tick (held while writing its run): after the
  restart the tick is resumed with exactly one run, and the next tick happens.
- Dagster's storage is unreachable for 30 s: the daemon keeps running and its sensors, schedules
  and runs carry on once the database is back.

Only one value of the shipped dagster.yaml is changed: run_monitoring.max_runtime_seconds (6 h)
becomes 300 s, so that the runs every kill takes down with the daemon (the minute schedule's, a
health check's) are failed and free their pools within the test, as they would be in production
after 6 h.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from psycopg.conninfo import conninfo_to_dict

from housekeeping.defs.assets import policy_asset_key
from tests.support.e2e_support import ROOT, Deployment
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]
LOCATION = "housekeeping"
# A run the test expects to finish (a cleanup in 10-row batches) may take minutes on a busy
# machine: its own maximum runtime (a per-run tag) keeps run monitoring from terminating it.
EXPECTED_TO_FINISH = {"dagster/max_runtime": "1800"}
SCHEDULE = "error_logs_schedule"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def reliability_config(path: Path) -> Path:
    config = yaml.safe_load((ROOT / "hk.yaml").read_text())
    for name, policy in config["policies"].items():
        policy.pop("schedule", None)
        if name == "error_logs":
            policy["schedule"] = "* * * * *"  # a tick every minute, at a known time
    config["dagster_runs"]["schedule"] = None
    # Tiny batches: a request_logs cleanup takes long enough to be interrupted mid-run.
    config["batch"] = {
        "target_duration": "120ms",
        "initial_size": 10,
        "min_size": 5,
        "max_size": 10,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def proxy(postgres_server):
    server = conninfo_to_dict(postgres_server)
    tcp = TcpProxy(server["host"], int(server.get("port") or 5432)).start()
    yield tcp
    tcp.stop()


@pytest.fixture(scope="module")
def deployment(postgres_server, proxy, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reliability")
    live = Deployment(
        postgres_server,
        workdir,
        storage_port=proxy.port,
        hk_config=reliability_config(workdir / "hk.yaml"),
        seed_args=("--tokens", "6000", "--requests", "20000", "--days", "40"),
    )
    try:
        live.prepare()
        instance = yaml.safe_load((live.home / "dagster.yaml").read_text())
        instance["run_monitoring"]["max_runtime_seconds"] = 300
        (live.home / "dagster.yaml").write_text(yaml.safe_dump(instance))
        live.start_webserver()
        live.start_daemon()
        yield live
    finally:
        leftovers = live.stop()
        assert leftovers == [], f"process groups still alive after shutdown: {leftovers}"


@pytest.fixture(scope="module")
def client(deployment):
    return DagsterGraphQLClient("127.0.0.1", port_number=deployment.port, timeout=60)


def wait_until(what: str, check: Callable[[], Any], deployment: Deployment, timeout: float = 300):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` with the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}\n--- daemon ---\n{deployment.log('daemon')}")


def run_status(deployment: Deployment, run_id: str) -> str | None:
    rows = deployment.storage("SELECT status FROM runs WHERE run_id = %s", run_id)
    return rows[0][0] if rows else None


def daemon_is_up(deployment: Deployment) -> bool:
    """The daemon wrote a heartbeat after it (re)started: its threads are working."""
    started = deployment.processes["daemon"]
    rows = deployment.storage("SELECT max(timestamp) FROM daemon_heartbeats")
    return bool(rows and rows[0][0]) and started.poll() is None


def scheduled_runs(deployment: Deployment) -> dict[str, int]:
    """Runs of the minute schedule, counted per scheduled execution time."""
    rows = deployment.storage(
        "SELECT t.value, count(*) FROM run_tags s JOIN run_tags t ON t.run_id = s.run_id "
        "WHERE s.key = 'dagster/schedule_name' AND s.value = %s "
        "AND t.key = '.dagster/scheduled_execution_time' GROUP BY t.value",
        SCHEDULE,
    )
    return {when: count for when, count in rows}


def ticks(deployment: Deployment, name: str, since: datetime | None = None) -> list[tuple]:
    """(status, timestamp) of the ticks of a schedule or sensor, oldest first."""
    return deployment.storage(
        "SELECT t.status, t.timestamp FROM job_ticks t JOIN jobs j "
        "ON j.job_origin_id = t.job_origin_id WHERE j.job_body LIKE %s "
        "AND t.timestamp >= %s ORDER BY t.timestamp",
        f'%"{name}"%',
        (since or datetime(2000, 1, 1, tzinfo=UTC)).replace(tzinfo=None),
    )


def table_ids(deployment: Deployment, table: str) -> set[int]:
    with sqlite3.connect(deployment.workdir / "var" / "app.db") as conn:
        return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}


def archived_ids(deployment: Deployment, table: str) -> list[int]:
    root = deployment.workdir / "var" / "archive" / table
    ids: list[int] = []
    for file in sorted(root.rglob("*.parquet")):
        ids.extend(pq.read_table(file, columns=["id"]).column("id").to_pylist())
    return ids


def restart_daemon(deployment: Deployment) -> None:
    deployment.start_daemon()
    restarted = datetime.now(UTC).replace(tzinfo=None)
    wait_until(
        "the restarted daemon's heartbeat",
        lambda: deployment.storage(
            "SELECT 1 FROM daemon_heartbeats WHERE timestamp > %s", restarted
        ),
        deployment,
        timeout=240,
    )


def test_a_run_whose_worker_died_with_the_daemon_is_failed_and_the_next_run_finishes_the_work(
    deployment, client
):
    original = table_ids(deployment, "request_logs")
    run_config = {
        "ops": {
            policy_asset_key("request_logs").to_python_identifier(): {
                "config": {"allow_large_delete": True}
            }
        }
    }
    run_id = client.submit_job_execution(
        "request_logs_job",
        repository_location_name=LOCATION,
        run_config=run_config,
        # Run monitoring fails a dead run after its maximum runtime: here 60 s (a per-run
        # tag), not the instance's 6 h.
        tags={"dagster/max_runtime": "60"},
    )
    archive = deployment.workdir / "var" / "archive" / "request_logs"
    wait_until(
        "the cleanup to commit a few batches",
        lambda: len(list(archive.rglob("*.parquet"))) >= 3,
        deployment,
    )

    # The machine dies: daemon, code server and run worker at once.
    deployment.kill("daemon", signal.SIGKILL)
    assert run_status(deployment, run_id) == "STARTED", "the run ended before the kill"
    restart_daemon(deployment)

    wait_until(
        "run monitoring to mark the dead run failed",
        lambda: run_status(deployment, run_id) in FINISHED,
        deployment,
    )
    assert run_status(deployment, run_id) == "FAILURE"
    recovery_id = client.submit_job_execution(
        "request_logs_job",
        repository_location_name=LOCATION,
        run_config=run_config,
        tags=EXPECTED_TO_FINISH,
    )
    wait_until(
        "the next cleanup (its table's pool slot freed)",
        lambda: run_status(deployment, recovery_id) in FINISHED,
        deployment,
        timeout=900,
    )

    assert run_status(deployment, recovery_id) == "SUCCESS", deployment.log("daemon")
    jobs = deployment.storage(
        "SELECT run_id FROM runs WHERE pipeline_name = 'request_logs_job' ORDER BY create_timestamp"
    )
    assert [row[0] for row in jobs] == [run_id, recovery_id], "the dead run was not re-run"
    remaining = table_ids(deployment, "request_logs")
    archived = archived_ids(deployment, "request_logs")
    assert len(archived) == len(set(archived)), "a row was archived twice"
    assert set(archived) | remaining == original, "a row was lost"
    assert not set(archived) & remaining, "an archived row is still in the table"
    assert not list(archive.rglob("*.pending")), "a crashed batch was left unresolved"


def test_a_daemon_stopped_with_sigterm_mid_run_lets_the_run_finish_once(deployment, client):
    original = table_ids(deployment, "revoked_tokens")
    run_config = {
        "ops": {
            policy_asset_key("revoked_tokens").to_python_identifier(): {
                "config": {"allow_large_delete": True}
            }
        }
    }
    run_id = client.submit_job_execution(
        "revoked_tokens_job",
        repository_location_name=LOCATION,
        run_config=run_config,
        tags=EXPECTED_TO_FINISH,
    )
    archive = deployment.workdir / "var" / "archive" / "revoked_tokens"
    wait_until(
        "the cleanup to commit a few batches",
        lambda: len(list(archive.rglob("*.parquet"))) >= 3,
        deployment,
    )

    # A graceful restart (systemctl restart, a rolling update): SIGTERM to the daemon alone. Its
    # code server finishes the runs it started before it exits.
    deployment.kill("daemon", signal.SIGTERM, group=False)
    assert run_status(deployment, run_id) == "STARTED", "the run ended before the restart"
    restart_daemon(deployment)
    wait_until(
        "the run to finish",
        lambda: run_status(deployment, run_id) in FINISHED,
        deployment,
        timeout=900,
    )

    assert run_status(deployment, run_id) == "SUCCESS", deployment.log("daemon")
    runs = deployment.storage("SELECT run_id FROM runs WHERE pipeline_name = 'revoked_tokens_job'")
    assert runs == [(run_id,)], "the run was launched again"
    remaining = table_ids(deployment, "revoked_tokens")
    archived = archived_ids(deployment, "revoked_tokens")
    assert len(archived) == len(set(archived)), "a row was archived twice"
    assert set(archived) | remaining == original, "a row was lost"
    assert not set(archived) & remaining


def test_a_daemon_killed_mid_tick_resumes_the_tick_with_one_run_and_ticks_again(deployment):
    wait_until("the minute schedule's first tick", lambda: ticks(deployment, SCHEDULE), deployment)

    # Hold the tick half-way: the scheduler has recorded the tick and writes its run, but the
    # run's tags wait for this lock. Other writers can be caught by the lock too (the freshness
    # sensor finalising the last hour a few minutes past it, a run's own tags); if the scheduler
    # is not the one held within a while, let go and try again at a later minute.
    interrupted_at = None
    for _attempt in range(4):
        holder = psycopg.connect(deployment.storage_url)
        try:
            holder.execute("LOCK TABLE run_tags IN EXCLUSIVE MODE")
            try:
                waiting = wait_until(
                    "the scheduler to block while writing its run",
                    lambda: (
                        deployment.storage(
                            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query ILIKE '%%INSERT INTO run_tags%%'"
                        )
                        and [tick for tick in ticks(deployment, SCHEDULE) if tick[0] == "STARTED"]
                    ),
                    deployment,
                    timeout=75,
                )
            except AssertionError:
                continue
            interrupted_at = waiting[-1][1]
            deployment.kill("daemon", signal.SIGKILL)
            break
        finally:
            holder.rollback()
            holder.close()
    assert interrupted_at is not None, (
        f"the scheduler never blocked on the held lock\n{deployment.log('daemon')}"
    )
    restart_daemon(deployment)

    wait_until(
        "a tick after the interrupted one",
        lambda: [tick for tick in ticks(deployment, SCHEDULE) if tick[1] > interrupted_at],
        deployment,
        timeout=150,
    )
    wait_until(
        "the interrupted tick to be resolved",
        lambda: all(status != "STARTED" for status, at in ticks(deployment, SCHEDULE)),
        deployment,
    )

    per_time = scheduled_runs(deployment)
    interrupted_key = interrupted_at.replace(tzinfo=UTC).isoformat()
    assert per_time.get(interrupted_key) == 1, per_time
    assert all(count == 1 for count in per_time.values()), f"duplicated scheduled runs: {per_time}"
    assert daemon_is_up(deployment)


def set_schedule_running(client: DagsterGraphQLClient, name: str, running: bool) -> None:
    """Start or stop a schedule through the webserver's GraphQL API, as the UI's toggle does."""
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": "__repository__",
        "scheduleName": name,
    }
    if running:
        result = client._execute(
            "mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) "
            "{ __typename ... on PythonError { message } } }",
            {"s": selector},
        )["startSchedule"]
    else:
        state = client._execute(
            "query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) "
            "{ __typename ... on Schedule { scheduleState { id } } } }",
            {"s": selector},
        )["scheduleOrError"]
        result = client._execute(
            "mutation($id: String!) { stopRunningSchedule(id: $id) "
            "{ __typename ... on PythonError { message } } }",
            {"id": state["scheduleState"]["id"]},
        )["stopRunningSchedule"]
    assert result["__typename"] == "ScheduleStateResult", result


def try_set_schedule_running(client: DagsterGraphQLClient, name: str, running: bool) -> bool:
    """``set_schedule_running``, False while the webserver cannot reach its storage yet."""
    try:
        set_schedule_running(client, name, running)
    except (DagsterGraphQLClientError, AssertionError):  # unreachable, or a PythonError result
        return False
    return True


def test_the_daemon_rides_out_30_seconds_without_its_storage_database(deployment, proxy, client):
    # A running daemon: one still starting gives up on its storage after a few quick retries and
    # exits ("too many retries for DB connection"); its supervisor restarts it (see the README).
    wait_until(
        "a completed alert sensor tick before the outage",
        lambda: [t for t in ticks(deployment, "alert_rules_sensor") if t[0] != "STARTED"],
        deployment,
    )
    # Cut when no minute-schedule run is in flight (a run caught mid-way by the outage fails and
    # is cleaned up by run monitoring only after its maximum runtime). On a busy machine a minute's
    # run can take a whole minute, so there may be no gap between runs: stop the schedule (as an
    # operator would from the UI), let its runs drain, and start it again once storage is back.
    set_schedule_running(client, SCHEDULE, False)
    wait_until(
        "the minute schedule's runs to finish",
        lambda: (
            not deployment.storage(
                "SELECT 1 FROM runs WHERE pipeline_name = 'error_logs_job' AND status = ANY(%s)",
                ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"],
            )
        ),
        deployment,
        timeout=600,
    )
    daemon = deployment.processes["daemon"]

    proxy.cut()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1",
            port=proxy.port,
            dbname=deployment.database,
            user="postgres",
            connect_timeout=3,
        )
    time.sleep(30)
    proxy.restore()
    restored = datetime.now(UTC)
    wait_until(
        "the webserver to start the minute schedule again",
        lambda: try_set_schedule_running(client, SCHEDULE, True),
        deployment,
        timeout=120,
    )

    assert daemon.poll() is None, "the daemon exited during the outage"
    # The alert sensor skips when nothing is to be sent, so a completed tick is SKIPPED or SUCCESS.
    wait_until(
        "an alert sensor tick completed after the outage",
        lambda: [
            tick
            for tick in ticks(deployment, "alert_rules_sensor", since=restored)
            if tick[0] in ("SUCCESS", "SKIPPED")
        ],
        deployment,
        timeout=240,
    )
    wait_until(
        "a scheduled run created after the outage to succeed",
        lambda: deployment.storage(
            "SELECT 1 FROM runs r JOIN run_tags s ON s.run_id = r.run_id "
            "AND s.key = 'dagster/schedule_name' AND s.value = %s "
            "WHERE r.create_timestamp > %s AND r.status = 'SUCCESS'",
            SCHEDULE,
            restored.replace(tzinfo=None),
        ),
        deployment,
        timeout=360,
    )
    assert daemon.poll() is None and deployment.processes["daemon"] is daemon
    assert all(count == 1 for count in scheduled_runs(deployment).values())
