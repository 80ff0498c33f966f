"""The fast backtest against the reference replay (issue 13, item 3): the same notifications.

``backtest(..., exact=True)`` evaluates every rule at every step through MetricSource, as the
sensor does; the default computes the series at once and runs the state machine only where
something can change (analytics/alerts/backtest.py, series.py). Both run here on the same
published files: every shipped rule-pack test (tests/rule_tests/) and a generated month of minute
rollups with incidents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.alerts import rule_tests
from analytics.alerts.backtest import backtest
from analytics.alerts.rule_tests import load_rule_test, run_rule_test
from analytics.alerts.rules import load_rules

RULE_TESTS = Path(__file__).resolve().parents[1] / "rule_tests"
CASES = sorted(RULE_TESTS.glob("*.yaml"))


def _describe(result):
    return [
        (item.evaluated_at.isoformat(), item.key.rule, item.key.group, item.kind.value, item.value)
        for item in result.notifications
    ]


@pytest.mark.parametrize("case_file", CASES, ids=[case.stem for case in CASES])
def test_fast_backtest_sends_what_the_reference_replay_sends_on_each_rule_test(
    case_file, tmp_path, monkeypatch
):
    replays = []

    def both(*args, **kwargs):
        fast = backtest(*args, **kwargs)
        replays.append((fast, backtest(*args, **kwargs, exact=True)))
        return fast

    monkeypatch.setattr(rule_tests, "backtest", both)
    result = run_rule_test(load_rules(), load_rule_test(case_file), tmp_path)

    (fast, reference), = replays
    assert reference.notifications, "a case that sends nothing compares nothing"
    assert _describe(fast) == _describe(reference)
    assert fast.notifications == reference.notifications  # texts, labels, values, channels
    assert fast.errors == reference.errors == {}
    assert fast.evaluations == reference.evaluations
    assert result.passed, result.diff()
