"""A live Dagster deployment for end-to-end tests: webserver + daemon on PostgreSQL storage.

Everything a real operator runs: the shipped ``dagster.yaml`` in a fresh ``DAGSTER_HOME``, a
fresh PostgreSQL database for Dagster's storage, the shipped ``workspace.yaml``, a seeded demo
application database, 127.0.0.1 and a free port. Each process runs in its own process group and
is stopped (TERM, then KILL) whatever happens; ``stop`` checks nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Deployment:
    postgres_url: str  # the server, e.g. postgresql://postgres@127.0.0.1:5432/test
    workdir: Path
    port: int = field(default_factory=free_port)
    database: str = field(default_factory=lambda: f"hk_e2e_{uuid.uuid4().hex[:10]}")
    # Where Dagster reaches its storage: PostgreSQL itself, or a proxy in front of it.
    storage_port: int = 5432
    hk_config: Path = ROOT / "hk.yaml"
    seed_args: tuple[str, ...] = ("--tokens", "3000", "--requests", "20000", "--days", "40")
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Every process group ever started (also those killed on purpose): none may outlive stop().
    groups: list[int] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return self.postgres_url.rsplit("/", 1)[0] + "/postgres"

    @property
    def storage_url(self) -> str:
        return self.postgres_url.rsplit("/", 1)[0] + f"/{self.database}"

    @property
    def home(self) -> Path:
        return self.workdir / "dagster_home"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        var = self.workdir / "var"
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.storage_port),
            "DAGSTER_PG_DB": self.database,
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "",
            "DATABASE_URL": f"sqlite:///{var / 'app.db'}",
            "HK_CONFIG": str(self.hk_config),
            "HK_STATE_DATABASE_URL": f"sqlite:///{var / 'hk_state.db'}",
            "HK_ARCHIVE_ROOT": str(var / "archive"),
            "HK_ANALYTICS_ROOT": str(var / "analytics"),
            "HK_ANALYTICS_DATABASE": str(var / "analytics" / "rollups.duckdb"),
            "HK_ALERTS_DATABASE_URL": f"sqlite:///{var / 'hk_alerts.db'}",
            "DAGSTER_WEBSERVER_URL": self.base_url,
            "SLACK_BOT_TOKEN": "",
            "SLACK_WEBHOOK_URL": "",
            "PYTHONUNBUFFERED": "1",
        }

    def prepare(self) -> None:
        self.home.mkdir(parents=True)
        (self.workdir / "var").mkdir()
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        subprocess.run(
            [str(BIN / "hk"), "seed", *self.seed_args, "--quiet"],
            env=self.env(),
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=300,
        )

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        self.groups.append(process.pid)
        return process

    def start_webserver(self) -> None:
        self.start(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-w",
                "workspace.yaml",
            ],
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.processes["webserver"].poll() is not None:
                raise RuntimeError(f"dagster-webserver exited:\n{self.log('webserver')}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/server_info", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"dagster-webserver did not answer:\n{self.log('webserver')}")

    def start_daemon(self) -> None:
        self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])

    def stop_process(self, name: str, grace: float = 30.0) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        group = process.pid
        if process.poll() is None:
            os.killpg(group, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                process.wait(timeout=10)
        # The whole group: run workers and code servers the process started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, group: bool = True) -> None:
        """Kill a process (``group``: with its code server and run workers) and wait for it."""
        process = self.processes.pop(name)
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        process.wait(timeout=60)
        if group:
            deadline = time.monotonic() + 30
            while self.leftovers([process.pid]) and time.monotonic() < deadline:
                time.sleep(0.2)

    def leftovers(self, groups: list[int]) -> list[int]:
        """Live (not zombie) processes whose process group is one of ``groups``."""
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the ')'
            fields = stat.rsplit(")", 1)[1].split()
            state, group = fields[0], int(fields[2])
            if group in groups and state != "Z":
                alive.append(int(entry.name))
        return alive

    def stop(self) -> list[int]:
        """Stop everything; return the process groups still alive (should be none)."""
        groups = list(self.groups)
        for name in list(self.processes):
            self.stop_process(name)
        deadline = time.monotonic() + 15
        alive = self.leftovers(groups)
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = self.leftovers(groups)
        for group in groups:
            # Groups killed on purpose earlier may have left processes behind: end them too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        return alive

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def storage(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.storage_url) as conn:
            return conn.execute(sql, params).fetchall()
