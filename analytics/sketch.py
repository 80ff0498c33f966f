"""The mergeable latency sketch: a DDSketch-style log-bucketed histogram, 1 % relative accuracy.

A latency ``x > 0`` (ms) falls in bucket ``i = ceil(ln(x) / ln(gamma))`` with
``gamma = (1 + a) / (1 - a)``, so bucket ``i`` holds ``(gamma^(i-1), gamma^i]``; the bucket's
representative value ``2 gamma^i / (gamma + 1)`` is within ``a`` of every value in it. Sketches
merge by adding counts per bucket, so a percentile over any window (an hour, a day, one route or
all) is exact up to ``a``: sum the minute sketches' counts per bucket, walk the cumulative counts
to the value's rank. Averaging per-minute percentiles is never done.

The rollups and the published views use the DuckDB SQL below; ``buckets_of`` and
``exact_quantile`` are their numpy references for the tests (tests/analytics/test_analytics_requests.py
checks the sketch percentiles against the exact ones).
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


def sketch_sql(buckets: str) -> str:
    """DuckDB expression: a list of bucket numbers as a sketch, sorted (bucket, count) pairs."""
    return (
        "list_sort(list_transform("
        f"map_entries(list_aggregate({buckets}, 'histogram')), "
        "lambda e: {'bucket': e.key, 'count': CAST(e.value AS INTEGER)}))"
    )


def buckets_of(values: np.ndarray) -> np.ndarray:
    """The bucket of each latency, as ``bucket_sql`` computes it."""
    values = np.asarray(values, dtype=np.float64)
    safe = np.maximum(values, MIN_TRACKED_MS)
    buckets = np.ceil(np.log(safe) / LN_GAMMA).astype(np.int64)
    return np.where(values <= 0, ZERO_BUCKET, buckets)


def exact_quantile(values: np.ndarray, q: float) -> float:
    """The reference the sketch is tested against: numpy's 'lower' quantile."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), q, method="lower"))
