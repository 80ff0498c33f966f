"""The default rule pack, tested the promtool way: input series in, expected alerts out.

Each file in tests/rule_tests/ publishes per-minute request series (``"100x20 0x5"`` is 100 for 20
minutes, then 0 for 5) and housekeeping runs, replays the whole default pack over them through the
backtest (the sensor's own code), and lists every notification expected: no more, no fewer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from analytics.alerts.backtest import backtest
from analytics.alerts.rules import load_rules
from housekeeping.config_types import parse_duration
from housekeeping.history import PolicyRun, RunHistory, RunStatus
from tests.alert_support import Minute, analytics_settings_at, publish_minutes

CASES = sorted((Path(__file__).parent / "rule_tests").glob("*.yaml"))


def expand(series: str | int | float, length: int) -> list[float]:
    """promtool-style series: "a x n" segments; a bare number repeats for the whole input."""
    if isinstance(series, int | float):
        return [float(series)] * length
    values: list[float] = []
    for segment in str(series).split():
        value, _, count = segment.partition("x")
        values += [float(value)] * int(count or 1)
    return values


def publish_case(tmp_path, case, start):
    minutes = []
    for route in case.get("requests", []):
        requests = expand(route["requests"], 0)
        length = len(requests)
        errors = expand(route.get("errors", 0), length)
        limited = expand(route.get("rate_limited", 0), length)
        latency = expand(route.get("latency_ms", 50), length)
        for offset in range(length):
            if requests[offset]:
                minutes.append(
                    Minute(
                        start + timedelta(minutes=offset),
                        route=route["route"],
                        requests=int(requests[offset]),
                        errors=int(errors[offset]),
                        rate_limited=int(limited[offset]),
                        latency_ms=latency[offset],
                    )
                )
    settings = analytics_settings_at(tmp_path)
    publish_minutes(settings, minutes)
    return settings


def record_history(tmp_path, case, start):
    history = RunHistory(f"sqlite:///{tmp_path / 'state.db'}")
    for run in case.get("history", []):
        finished = start + parse_duration(run["at"])
        history.record(
            PolicyRun(
                policy=run["policy"],
                table_name=run["policy"],
                status=RunStatus(run["status"]),
                started_at=finished - timedelta(seconds=1),
                finished_at=finished,
                deleted=run.get("deleted", 0),
                duration_ms=run.get("duration_ms", 200.0),
                error="boom" if run["status"] == "failed" else None,
            )
        )
    return history


@pytest.mark.parametrize("case_file", CASES, ids=[case.stem for case in CASES])
def test_default_rule_pack(case_file, tmp_path):
    case = yaml.safe_load(case_file.read_text())
    start = datetime.fromisoformat(case["start"].replace("Z", "+00:00")).astimezone(UTC)
    settings = publish_case(tmp_path, case, start)
    history = record_history(tmp_path, case, start)
    window = case["evaluate"]

    result = backtest(
        load_rules(),
        settings.database_path,
        history,
        start + parse_duration(window["from"]),
        start + parse_duration(window["to"]),
        parse_duration(window.get("step", "1m")),
        rollup_root=settings.root_path,
    )

    assert result.errors == {}
    got = [
        {
            "at": item.evaluated_at - start,
            "rule": item.key.rule,
            "group": item.key.group,
            "kind": item.kind.value,
            "severity": item.severity.value,
        }
        for item in result.notifications
    ]
    expected = [
        {
            "at": parse_duration(item["at"]),
            "rule": item["rule"],
            "group": item.get("group", ""),
            "kind": item["kind"],
            "severity": item["severity"],
        }
        for item in case["expected"]
    ]
    assert got == expected, case["description"]
