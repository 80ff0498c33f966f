"""The mergeable latency sketch: a DDSketch-style log-bucketed histogram, 1 % relative accuracy.

A latency ``x > 0`` (ms) falls in bucket ``i = ceil(ln(x) / ln(gamma))`` with
``gamma = (1 + a) / (1 - a)``, so bucket ``i`` holds ``(gamma^(i-1), gamma^i]``; the bucket's
representative value ``2 gamma^i / (gamma + 1)`` is within ``a`` of every value in it. Sketches
merge by adding counts per bucket, so a percentile over any window (an hour, a day, one route or
all) is computed from the merged counts; averaging per-minute percentiles is never done.

Percentiles are PostgreSQL's ``percentile_cont`` (DuckDB's ``quantile_cont``, numpy's
``method="linear"``), the numbers analysts check ours against: with ``n`` values and
``h = q (n - 1)``, the value ``x[k] + (h - k) (x[k+1] - x[k])`` where ``k = floor(h)`` and
``x[k]`` is the k-th smallest value (0-based). The sketch estimates ``x[k]`` and ``x[k+1]``
each within ``a`` (walking the merged cumulative counts to the bucket holding that rank) and
interpolates between them, so the result is within ``a`` of ``percentile_cont`` too (a convex
combination of two estimates within ``a`` is within ``a`` of the same combination of the exact
values).

A NULL value is no value: it goes in no bucket (``bucket_sql`` is NULL, which DuckDB's histogram
skips), so a sketch's total count is the number of values it holds.

The rollups and the published views use the DuckDB SQL below; ``buckets_of``,
``sketch_quantile`` and ``exact_quantile`` are their numpy references for the tests. The minute
rollup read in pieces counts each piece's bucket lists with ``sketches_of_buckets`` (numpy, on
the worker that read the piece) and adds the pieces' sketches of a group with ``sum_sketches``:
the counts are integers, so the result is bit-identical to ``sketch_sql`` over all the rows.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics.datasets import SKETCH_TYPE

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LN_GAMMA = math.log(GAMMA)
# Values at or below zero go to their own bucket, whose value is 0.
ZERO_BUCKET = -32768
# Smaller positive values share the lowest bucket (1 ns); the range stays inside SMALLINT.
MIN_TRACKED_MS = 1e-6

PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
# SKETCH_TYPE in Arrow terms.
SKETCH_ARROW_TYPE = pa.list_(pa.struct([("bucket", pa.int16()), ("count", pa.int32())]))
_COUNT_LIMIT = np.iinfo(np.int32).max


def bucket_sql(value: str) -> str:
    """DuckDB expression: the bucket of a latency expression; NULL for a NULL latency."""
    return (
        f"CASE WHEN {value} IS NULL THEN NULL "
        f"WHEN {value} <= 0 THEN CAST({ZERO_BUCKET} AS SMALLINT) "
        f"ELSE CAST(ceil(ln(greatest({value}, {MIN_TRACKED_MS!r})) / {LN_GAMMA!r}) AS SMALLINT) END"
    )


def bucket_value_sql(bucket: str) -> str:
    """DuckDB expression: the representative latency (ms) of a bucket."""
    return (
        f"CASE WHEN {bucket} = {ZERO_BUCKET} THEN 0.0 "
        f"ELSE 2.0 * pow({GAMMA!r}, {bucket}) / ({GAMMA!r} + 1.0) END"
    )


def sketch_sql(buckets: str) -> str:
    """DuckDB expression: a list of bucket numbers as a sketch, sorted (bucket, count) pairs.

    NULL buckets (NULL values) are not counted; a list without any other is the empty sketch.
    """
    return (
        "coalesce(list_sort(list_transform("
        f"map_entries(list_aggregate({buckets}, 'histogram')), "
        "lambda e: {'bucket': e.key, 'count': CAST(e.value AS INTEGER)})), "
        f"CAST([] AS {SKETCH_TYPE}))"
    )


def rank_position_sql(q: float, total: str) -> str:
    """DuckDB expression: ``h = q (n - 1)``, the 0-based rank position percentile_cont reads."""
    return f"({q!r} * ({total} - 1))"


def rank_buckets_sql(q: float, cumulative: str, total: str, bucket: str) -> tuple[str, str]:
    """Two aggregates over a bucket table: the buckets holding ranks ``floor(h)`` and the next.

    ``cumulative`` is the running count up to and including ``bucket`` (ordered by bucket),
    ``total`` the count of the whole group. Rank ``r`` (0-based) is in the first bucket whose
    cumulative count exceeds ``r``; the next rank stops at the last one.
    """
    low = f"floor({rank_position_sql(q, total)})"
    return (
        f"min({bucket}) FILTER (WHERE {cumulative} > {low})",
        f"min({bucket}) FILTER (WHERE {cumulative} > least({low} + 1, {total} - 1))",
    )


def interpolated_sql(q: float, total: str, low_bucket: str, high_bucket: str) -> str:
    """DuckDB expression: percentile_cont's interpolation between the two ranks' buckets."""
    position = rank_position_sql(q, total)
    low = bucket_value_sql(low_bucket)
    high = bucket_value_sql(high_bucket)
    return f"({low} + ({position} - floor({position})) * (({high}) - ({low})))"


def buckets_of(values: np.ndarray) -> np.ndarray:
    """The bucket of each latency, as ``bucket_sql`` computes it (no NULLs here)."""
    values = np.asarray(values, dtype=np.float64)
    safe = np.maximum(values, MIN_TRACKED_MS)
    buckets = np.ceil(np.log(safe) / LN_GAMMA).astype(np.int64)
    return np.where(values <= 0, ZERO_BUCKET, buckets)


def bucket_values(buckets: np.ndarray) -> np.ndarray:
    """The representative latency of each bucket, as ``bucket_value_sql`` computes it."""
    buckets = np.asarray(buckets, dtype=np.int64)
    values = 2.0 * np.power(GAMMA, buckets.astype(np.float64)) / (GAMMA + 1.0)
    return np.where(buckets == ZERO_BUCKET, 0.0, values)


def sketch_quantile(values: np.ndarray, q: float) -> float:
    """What the views publish for ``values``: the interpolated sketch percentile, clamped to
    the exact min and max (the views' algorithm, in numpy)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    ranked = bucket_values(np.sort(buckets_of(values)))
    position = q * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    estimate = ranked[low] + (position - low) * (ranked[high] - ranked[low])
    return float(min(max(estimate, values[0]), values[-1]))


def exact_quantile(values: np.ndarray, q: float) -> float:
    """The reference the sketch is tested against: percentile_cont (numpy's 'linear')."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), q, method="linear"))


def sketches_of_buckets(lists: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Per list of bucket numbers (``bucket_sql``'s SMALLINT; NULLs skipped), its sketch: the
    sorted (bucket, count) pairs ``sketch_sql`` makes of it, as an Arrow array of
    SKETCH_ARROW_TYPE, one per list and in their order (a NULL or empty list: the empty sketch).

    Numpy with the GIL released for the sort: fit for a worker thread. TypeError when ``lists``
    is not a list array of integers.
    """
    lists = _one_chunk(lists, "lists of bucket numbers")
    if not pa.types.is_integer(lists.type.value_type):
        raise TypeError(f"lists of bucket numbers expected, got {lists.type}")
    groups, values = _flat(lists)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    buckets = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return _counted(len(lists), groups[valid], buckets[valid], None)


def sum_sketches(sketches: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Per list of (bucket, count) pairs (SKETCH_ARROW_TYPE; a bucket may repeat, as in several
    sketches concatenated), one sketch: the counts summed per bucket, sorted by bucket; the
    sum of sketches is the sketch of all their values. A NULL or empty list: the empty sketch.

    TypeError when ``sketches`` is not of SKETCH_ARROW_TYPE; ValueError when a summed count
    does not fit the sketch's INTEGER.
    """
    sketches = _one_chunk(sketches, "sketches")
    if sketches.type.value_type != SKETCH_ARROW_TYPE.value_type:
        raise TypeError(f"sketches of type {SKETCH_ARROW_TYPE} expected, got {sketches.type}")
    groups, pairs = _flat(sketches)
    buckets = pairs.field("bucket").to_numpy(zero_copy_only=False).astype(np.int64)
    counts = pairs.field("count").to_numpy(zero_copy_only=False).astype(np.int64)
    return _counted(len(sketches), groups, buckets, counts)


def _one_chunk(array: pa.Array | pa.ChunkedArray, what: str) -> pa.ListArray:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], type=array.type)
    if not isinstance(array, pa.ListArray):
        raise TypeError(f"{what}: a list array expected, got {type(array).__name__}")
    return array


def _flat(lists: pa.ListArray) -> tuple[np.ndarray, pa.Array]:
    """The values of ``lists`` (none for a NULL list), and the number of the list of each."""
    groups = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    return groups, pc.list_flatten(lists)


def _counted(
    lists: int, groups: np.ndarray, buckets: np.ndarray, counts: np.ndarray | None
) -> pa.ListArray:
    """``lists`` sketches: per group number, the ``counts`` (1 each when None) of its buckets
    summed per bucket, sorted by bucket."""
    keys = (groups << 16) | (buckets - ZERO_BUCKET)  # SMALLINT buckets: 16 bits above the group
    if counts is None:
        keys, summed = np.unique(keys, return_counts=True)
    elif len(keys):
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        summed = np.add.reduceat(counts[order], starts)
        keys = keys[starts]
    else:
        summed = counts
    if len(summed) and summed.max() > _COUNT_LIMIT:
        raise ValueError(f"a summed sketch count ({summed.max()}) does not fit INTEGER")
    offsets = np.searchsorted(keys >> 16, np.arange(lists + 1)).astype(np.int32)
    pairs = pa.StructArray.from_arrays(
        [
            pa.array(((keys & 0xFFFF) + ZERO_BUCKET).astype(np.int16)),
            pa.array(summed.astype(np.int32)),
        ],
        names=["bucket", "count"],
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pairs, type=SKETCH_ARROW_TYPE)
