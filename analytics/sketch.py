"""The mergeable latency sketch: a DDSketch-style log-bucketed histogram, 1 % relative accuracy.

A latency ``x > 0`` (ms) falls in bucket ``i = ceil(ln(x) / ln(gamma))`` with
``gamma = (1 + a) / (1 - a)``, so bucket ``i`` holds ``(gamma^(i-1), gamma^i]``; the bucket's
representative value ``2 gamma^i / (gamma + 1)`` is within ``a`` of every value in it. Sketches
merge by adding counts per bucket, so a percentile over any window (an hour, a day, one route or
all) is exact up to ``a``: sum the minute sketches' counts per bucket, walk the cumulative counts
to the value's rank. Averaging per-minute percentiles is never done.

The same definitions exist twice, here in numpy (tests, the CLI) and as DuckDB SQL (the rollups
and the published views). They are checked against each other by
``tests/test_alert_evaluate.py`` (minutes bucketed here, the p95 read back through the SQL) and
against exact percentiles by ``tests/test_analytics_requests.py``.
"""

from __future__ import annotations

import math

import numpy as np

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LN_GAMMA = math.log(GAMMA)
# Values at or below zero go to their own bucket, whose value is 0.
ZERO_BUCKET = -32768
# Smaller positive values share the lowest bucket (1 ns); the range stays inside SMALLINT.
MIN_TRACKED_MS = 1e-6

# The percentile of rank floor(q * (n - 1)) (0-based), as numpy's method="lower".
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def bucket_sql(value: str) -> str:
    """DuckDB expression: the bucket of a latency expression."""
    return (
        f"CASE WHEN {value} <= 0 THEN CAST({ZERO_BUCKET} AS SMALLINT) "
        f"ELSE CAST(ceil(ln(greatest({value}, {MIN_TRACKED_MS!r})) / {LN_GAMMA!r}) AS SMALLINT) END"
    )


def bucket_value_sql(bucket: str) -> str:
    """DuckDB expression: the representative latency (ms) of a bucket."""
    return (
        f"CASE WHEN {bucket} = {ZERO_BUCKET} THEN 0.0 "
        f"ELSE 2.0 * pow({GAMMA!r}, {bucket}) / ({GAMMA!r} + 1.0) END"
    )


def buckets_of(values: np.ndarray) -> np.ndarray:
    """The bucket of each latency, as ``bucket_sql`` computes it."""
    values = np.asarray(values, dtype=np.float64)
    safe = np.maximum(values, MIN_TRACKED_MS)
    buckets = np.ceil(np.log(safe) / LN_GAMMA).astype(np.int64)
    return np.where(values <= 0, ZERO_BUCKET, buckets)


def bucket_values(buckets: np.ndarray) -> np.ndarray:
    buckets = np.asarray(buckets, dtype=np.float64)
    values = 2.0 * np.power(GAMMA, buckets) / (GAMMA + 1.0)
    return np.where(buckets == ZERO_BUCKET, 0.0, values)


def sketch_of(values: np.ndarray) -> dict[int, int]:
    """A sketch as {bucket: count}."""
    buckets, counts = np.unique(buckets_of(values), return_counts=True)
    return dict(zip(buckets.tolist(), counts.tolist(), strict=True))


def merge(*sketches: dict[int, int]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for sketch in sketches:
        for bucket, count in sketch.items():
            merged[bucket] = merged.get(bucket, 0) + count
    return merged


def quantile(sketch: dict[int, int], q: float) -> float | None:
    """The value of rank floor(q * (n - 1)), within RELATIVE_ACCURACY; None for an empty sketch."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be between 0 and 1, got {q}")
    total = sum(sketch.values())
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    cumulative = 0
    for bucket in sorted(sketch):
        cumulative += sketch[bucket]
        if cumulative > rank:
            return float(bucket_values(np.array([bucket]))[0])
    raise AssertionError("unreachable: the cumulative count reaches the total")


def exact_quantile(values: np.ndarray, q: float) -> float:
    """The reference the sketch is tested against: numpy's 'lower' quantile."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), q, method="lower"))
