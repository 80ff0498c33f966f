"""The default rule pack, tested the promtool way: input series in, expected alerts out.

Each file in tests/rule_tests/ publishes per-minute request series (``"100x20 0x5"`` is 100 for 20
minutes, then 0 for 5) and housekeeping runs, replays the whole default pack over them through the
backtest (the sensor's own code), and lists every notification expected: no more, no fewer. They
run through analytics/alerts/rule_tests.py, the core of ``hk rules test``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from analytics.alerts.rule_tests import load_rule_test, run_rule_test
from analytics.alerts.rules import default_rules_path, load_rules
from housekeeping.cli import main

RULE_TESTS = Path(__file__).resolve().parents[1] / "rule_tests"
CASES = sorted(RULE_TESTS.glob("*.yaml"))


@pytest.mark.parametrize("case_file", CASES, ids=[case.stem for case in CASES])
def test_default_rule_pack(case_file, tmp_path):
    case = load_rule_test(case_file)

    result = run_rule_test(load_rules(), case, tmp_path)

    assert result.errors == {}
    assert result.got == result.expected, case.description


def test_the_example_in_docs_alerts_md_passes(tmp_path):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    example = docs.split("A test file is one case:\n\n```yaml\n")[1].split("```")[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)

    result = run_rule_test(load_rules(), load_rule_test(path), tmp_path)

    assert result.passed, result.diff()


def rules_test(*args):
    return CliRunner().invoke(
        main, ["rules", "test", "--rules", str(default_rules_path()), *map(str, args)]
    )


def test_hk_rules_test_exits_1_with_a_diff_of_expected_and_sent_alerts(tmp_path):
    case = yaml.safe_load((RULE_TESTS / "rate_limited.yaml").read_text())
    case["expected"][0]["at"] = "30m"  # the rule really fires at 35m
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(case))

    result = rules_test(wrong)

    assert result.exit_code == 1
    assert f"FAIL  {wrong}: 429s above 20 % for 10 minutes fire high" in result.output
    assert "-{at: 30m, rule: http_rate_limited, kind: firing, severity: high}" in result.output
    assert "+{at: 35m, rule: http_rate_limited, kind: firing, severity: high}" in result.output
    assert "1 test files: 0 passed, 1 failed" in result.output


def test_hk_rules_test_exits_0_when_every_case_passes(tmp_path):
    shutil.copy(RULE_TESTS / "traffic_stop.yaml", tmp_path / "ok.yaml")

    result = rules_test(tmp_path / "ok.yaml")

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"ok    {tmp_path / 'ok.yaml'}: no request logs")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "rule test file {path} not found"),
        ("start: [unclosed", "{path}: not valid YAML: "),
        ("- a list", "{path}: expected a mapping with start, evaluate and expected"),
        (
            "start: 2026-11-20T12:00:00Z\nevaluate: {from: 1m, to: 5m}\n"
            "requests: [{route: /a, requests: 100x5xx}]",
            "{path}: requests.0.requests: '100x5xx' is not a series segment",
        ),
        (
            "start: 2026-11-20T12:00:00Z\nevaluate: {from: 1m, to: 5m}\n"
            "expected: [{at: 2m, rule: r, kind: burning, severity: high}]",
            "{path}: expected.0.kind: Input should be",
        ),
    ],
    ids=["missing", "not-yaml", "not-a-mapping", "bad-series", "bad-kind"],
)
def test_hk_rules_test_names_what_is_wrong_with_a_test_file_in_one_line(tmp_path, content, message):
    path = tmp_path / "case.yaml"
    if content is not None:
        path.write_text(content)

    result = rules_test(path)

    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: " + message.format(path=path))
