"""Column values drawn vectorised (numpy) and returned as Arrow arrays, without Python loops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """An Arrow string array over an (n, width) uint8 matrix of ASCII, without a Python loop."""
    rows, width = chars.shape
    chars = np.ascontiguousarray(chars)
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(chars)]
    )


def _hex_matrix(rng: np.random.Generator, rows: int, nbytes: int) -> np.ndarray:
    raw = np.frombuffer(rng.bytes(rows * nbytes), dtype=np.uint8).reshape(rows, nbytes)
    chars = np.empty((rows, nbytes * 2), dtype=np.uint8)
    chars[:, 0::2] = _HEX_DIGITS[raw >> 4]
    chars[:, 1::2] = _HEX_DIGITS[raw & 15]
    return chars


def sha256_hex(rng: np.random.Generator, rows: int) -> pa.Array:
    """``rows`` random 64-character hex strings (token hashes)."""
    return _fixed_width_strings(_hex_matrix(rng, rows, 32))


def uuid4_strings(rng: np.random.Generator, rows: int) -> pa.Array:
    """``rows`` random version-4 UUIDs as text."""
    digits = _hex_matrix(rng, rows, 16)
    digits[:, 12] = ord("4")
    digits[:, 16] = _HEX_DIGITS[8 + (digits[:, 16] & 3)]
    chars = np.full((rows, 36), ord("-"), dtype=np.uint8)
    for source, target in ((0, 0), (8, 9), (12, 14), (16, 19), (20, 24)):
        width = {0: 8, 20: 12}.get(source, 4)
        chars[:, target : target + width] = digits[:, source : source + width]
    return _fixed_width_strings(chars)


def timestamps(values_us: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    """Microsecond UTC timestamps as an Arrow array, null where ``null_mask`` is set."""
    # Naive but UTC: Arrow renders zone-aware timestamps as text thirty times slower, and both
    # loaders read these as UTC (SQLite stores UTC text, PostgreSQL loads with TimeZone=UTC).
    return pa.array(values_us, type=pa.timestamp("us"), mask=null_mask)


def pick(pool: pa.Array, indices: np.ndarray) -> pa.Array:
    """``pool[indices]`` as an Arrow array."""
    return pool.take(pa.array(indices))


def ids(first_row: int, rows: int) -> pa.Array:
    """Row ids ``first_row + 1 .. first_row + rows``."""
    return pa.array(np.arange(first_row + 1, first_row + rows + 1, dtype=np.int64))


def skewed_user_ids(rng: np.random.Generator, rows: int, users: int) -> np.ndarray:
    """``rows`` user ids in 1..users: a few heavy users and a long tail."""
    # A few heavy users and a long tail of occasional ones.
    return (users * rng.random(rows) ** 2.5).astype(np.int64) + 1


def _ip_pool() -> pa.Array:
    """Private (10/8) and documentation (RFC 5737) addresses only: nothing real-looking."""
    rng = np.random.default_rng(5737)
    private = [f"10.{a}.{b}.{c}" for a, b, c in rng.integers(0, 256, size=(1792, 3))]
    documentation = [
        f"{prefix}.{host}"
        for prefix in ("192.0.2", "198.51.100", "203.0.113")
        for host in range(1, 86)
    ]
    return pa.array(private + documentation)


_IPS = _ip_pool()


def ips_for(rng: np.random.Generator, user_ids: np.ndarray, anonymous: np.ndarray) -> pa.Array:
    """One address per row: stable per signed-in user, random for ``anonymous`` rows."""
    # A signed-in user keeps one address; anonymous traffic comes from anywhere in the pool.
    hashed = (user_ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(len(_IPS))
    random = rng.integers(0, len(_IPS), len(user_ids))
    return pick(_IPS, np.where(anonymous, random, hashed.astype(np.int64)))


def choice(rng: np.random.Generator, weights: Sequence[float], rows: int) -> np.ndarray:
    """``rows`` indices drawn with the given (unnormalised) weights."""
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(p), size=rows, p=p / p.sum())
