"""Log files that share a first line (a repeated start-up banner) and truncated .gz files:
every line counted exactly once (issue 14), real files and a real DuckDB.

Every file here starts with the same banner line, so a file cannot be told by its first line:
copytruncate whose restarted file begins with the old first line, a rename with a new file
beginning the same way, a copy taken before the truncation, a .gz of such a file. The .gz tests
cut real gzip files short (inside the first block, after many lines) or damage one in the
middle; the complete lines before the damage are read once, the rest is ``damaged_gzip``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import zlib
from datetime import UTC, datetime
from pathlib import Path

from analytics.logs.generate import other_line
from analytics.logs.ingest import ingest_log_files, publish_line_counts, source_directory
from analytics.logs.manifest import WINDOW_BYTES, gunzip
from tests.analytics.test_log_files import append, lines_of, make_requests, settings_for
from tests.support.analytics_data import make_store, publish, query

START = datetime(2026, 11, 19, 10, tzinfo=UTC)
BANNER = (other_line("pino", START) + "\n").encode()  # byte-identical in every file


class Logs:
    """A log directory, its source and the request lines counted over every tick."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = settings_for(tmp_path, "pino")
        self.store = make_store(self.settings)
        self.dir = tmp_path / "logs"
        self.dir.mkdir()
        self.live = self.dir / "access.log"
        self.requests = make_requests(400, seed=41)
        self.used = 0
        self.counted = 0
        self.lines: dict[str, int] = {}

    def take(self, count: int) -> bytes:
        """The next ``count`` request lines."""
        data = lines_of("pino", self.requests[self.used : self.used + count])
        self.used += count
        return data

    def tick(self) -> None:
        result = ingest_log_files(
            source_directory(self.store.root), self.settings.sources.request_logs
        )
        self.counted += result.lines.get("request", 0)
        for reason, count in result.lines.items():
            self.lines[reason] = self.lines.get(reason, 0) + count

    def copytruncate(self, copy: str = "access.log.1") -> Path:
        shutil.copyfile(self.live, self.dir / copy)
        with open(self.live, "r+b") as handle:
            handle.truncate(0)
        return self.dir / copy


def compress(path: Path, keep: bool = False) -> Path:
    target = path.with_name(path.name + ".gz")
    with open(path, "rb") as plain, gzip.open(target, "wb") as gz:
        shutil.copyfileobj(plain, gz)
    if not keep:
        path.unlink()
    return target


def test_copytruncate_restarting_with_the_same_first_line_counts_every_line(tmp_path):
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(10))
    logs.tick()
    logs.copytruncate()
    append(logs.live, BANNER + logs.take(5))
    logs.tick()
    append(logs.live, logs.take(20))
    logs.tick()
    logs.tick()
    assert logs.counted == 35
    assert logs.lines["other"] == 2  # each banner once


def test_a_truncated_file_grown_past_the_old_offset_with_the_same_first_line(tmp_path):
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(10))
    logs.tick()
    logs.copytruncate()
    append(logs.live, BANNER + logs.take(30))  # longer than the old file before the tick
    logs.tick()
    logs.tick()
    assert logs.counted == 40


def test_truncated_without_a_copy_and_restarted_with_the_same_first_line(tmp_path):
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(10))
    logs.tick()
    with open(logs.live, "r+b") as handle:
        handle.truncate(0)
    append(logs.live, BANNER + logs.take(4))
    logs.tick()
    append(logs.live, logs.take(3))
    logs.tick()
    assert logs.counted == 17


def test_rename_and_a_new_file_with_the_same_first_line(tmp_path):
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(10))
    logs.tick()
    append(logs.live, logs.take(3))  # written before the rename, after the tick
    os.rename(logs.live, logs.dir / "access.log.1")
    append(logs.live, BANNER + logs.take(5))
    logs.tick()
    append(logs.live, logs.take(20))
    logs.tick()
    # the rotated file compressed, then the live file rotated again the same way
    compress(logs.dir / "access.log.1")
    logs.tick()
    os.rename(logs.dir / "access.log.1.gz", logs.dir / "access.log.2.gz")
    os.rename(logs.live, logs.dir / "access.log.1")
    append(logs.live, BANNER + logs.take(2))
    logs.tick()
    logs.tick()
    assert logs.counted == 40


def test_a_copy_seen_before_the_truncation_is_not_read_again(tmp_path):
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(10))
    logs.tick()
    append(logs.live, logs.take(4))
    shutil.copyfile(logs.live, logs.dir / "access.log.1")
    logs.tick()  # the copy and the live file, the same content
    append(logs.live, logs.take(2))  # the live file grows before its truncation
    logs.copytruncate()  # the copy written again over the first one, then the truncation
    append(logs.live, BANNER + logs.take(5))
    logs.tick()
    logs.tick()
    assert logs.counted == 21


def test_a_gz_of_a_same_first_line_file_is_read_once(tmp_path):
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(10))
    logs.tick()
    rotated = logs.copytruncate()
    append(logs.live, BANNER + logs.take(5))
    logs.tick()
    # compressed while the plain copy is still there, then the plain copy removed
    compress(rotated, keep=True)
    logs.tick()
    rotated.unlink()
    logs.tick()
    # the live file again: a tail after the last tick, copytruncate, compressed at once
    append(logs.live, logs.take(7))
    rotated = logs.copytruncate("access.log.2")
    append(logs.live, BANNER + logs.take(1))
    compress(rotated)
    logs.tick()
    logs.tick()
    assert logs.counted == 23


def truncated_gzip_cases(logs: Logs) -> dict[str, tuple[bytes, bytes]]:
    """Per case the lines written and the damaged .gz of them (different lines per case)."""
    cases = {}
    for name in ("first_block", "after_lines", "middle"):
        data = logs.take(100)
        whole = gzip.compress(data, compresslevel=6)
        if name == "first_block":
            damaged = whole[:400]  # cut inside the first deflate block
        elif name == "after_lines":
            damaged = whole[: len(whole) * 3 // 5]
        else:
            middle = bytearray(whole)
            for at in range(len(whole) // 2, len(whole) // 2 + 16):
                middle[at] ^= 0x5A
            damaged = bytes(middle)
        cases[name] = (data, damaged)
    return cases


def readable_requests(original: bytes, damaged: bytes) -> int:
    """The lines of ``original`` wholly within what ``damaged`` still decompresses to."""
    decoder = zlib.decompressobj(31)
    out = b""
    for at in range(0, len(damaged), 64):  # what decodes before the damage, 64 bytes a step
        try:
            out += decoder.decompress(damaged[at : at + 64])
        except zlib.error:
            break
    same = 0
    while same < min(len(out), len(original)) and out[same] == original[same]:
        same += 1
    return original[:same].count(b"\n")


def test_a_truncated_gz_reads_its_complete_lines_once(tmp_path):
    logs = Logs(tmp_path)
    expected = 0
    for name, (data, content) in truncated_gzip_cases(logs).items():
        (logs.dir / f"access.log.{name}.gz").write_bytes(content)
        readable = readable_requests(data, content)
        assert 0 < readable < 100, name
        expected += readable
    logs.tick()
    logs.tick()
    assert logs.counted == expected
    # each damaged file counted under damaged_gzip (the line cut off), once though ticked twice
    assert logs.lines["damaged_gzip"] == 3
    publish_line_counts(logs.store, datetime.now(UTC))
    publish(logs.store, logs.settings)
    damaged = query(
        logs.settings,
        "SELECT file, sum(lines)::BIGINT AS n FROM log_ingest_errors "
        "WHERE bad AND reason = 'damaged_gzip' GROUP BY 1 ORDER BY 1",
    )
    names = sorted(f"access.log.{name}.gz" for name in ("first_block", "after_lines", "middle"))
    assert list(damaged.file) == [str(logs.dir / name) for name in names]
    assert list(damaged.n) == [1, 1, 1]


def test_a_truncated_gz_completed_later_is_not_counted_twice(tmp_path):
    logs = Logs(tmp_path)
    data = BANNER + logs.take(200)
    whole = gzip.compress(data)
    in_place = logs.dir / "access.log.1.gz"
    in_place.write_bytes(whole[: len(whole) // 2])
    renamed = logs.dir / "access.log.2.gz"
    other = BANNER + logs.take(150)
    other_whole = gzip.compress(other)
    renamed.write_bytes(other_whole[: len(other_whole) // 3])
    logs.tick()
    first = logs.counted
    assert 0 < first < 350
    # the first rewritten whole in place, the second replaced by a complete copy (a new inode)
    with open(in_place, "r+b") as handle:
        handle.write(whole)
    draft = logs.dir / "draft"
    draft.write_bytes(other_whole)
    os.replace(draft, renamed)
    logs.tick()
    logs.tick()
    assert logs.counted == 350


def test_a_gz_cut_short_beside_its_plain_file_then_completed_adds_nothing(tmp_path):
    """Compression that crashed: the plain file stays, its .gz is cut short; compressed again,
    the plain file removed: every line once."""
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(120))
    os.rename(logs.live, logs.dir / "access.log.1")
    append(logs.live, BANNER + logs.take(3))
    logs.tick()
    whole = gzip.compress((logs.dir / "access.log.1").read_bytes())
    (logs.dir / "access.log.1.gz").write_bytes(whole[: len(whole) // 2])
    logs.tick()
    (logs.dir / "access.log.1.gz").write_bytes(whole)
    (logs.dir / "access.log.1").unlink()
    logs.tick()
    logs.tick()
    assert logs.counted == 123
    assert logs.lines.get("damaged_gzip", 0) == 0  # its content is the plain file's


def test_a_manifest_written_before_marks_were_kept_goes_on_without_double_counting(tmp_path):
    """Version 1 keyed the streams by their first line's fingerprint, without marks."""
    logs = Logs(tmp_path)
    append(logs.live, BANNER + logs.take(10))
    logs.tick()
    path = source_directory(logs.store.root) / "manifest.json"
    data = json.loads(path.read_text())
    data["version"] = 1
    data["streams"] = {
        state.pop("head"): {k: v for k, v in state.items() if k not in ("mark", "prefix")}
        for state in data["streams"].values()
    }
    path.write_text(json.dumps(data))
    append(logs.live, logs.take(4))
    logs.tick()
    os.rename(logs.live, logs.dir / "access.log.1")
    append(logs.live, BANNER + logs.take(2))
    logs.tick()
    assert logs.counted == 16


def test_gunzip_reads_every_member_and_what_decodes_before_a_cut(tmp_path):
    data = b"".join(b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * (n % 97)) for n in range(3000))
    half = data.index(b"\n", len(data) // 2) + 1
    whole = gzip.compress(data[:half]) + gzip.compress(data[half:]) + b"\0" * 8
    path, out = tmp_path / "a.gz", tmp_path / "a.out"
    path.write_bytes(whole)
    content = gunzip(path, out, skip=100, at=(0, 5000, half + 7, len(data)))
    assert content.complete and content.size == content.lines_end == len(data)
    assert out.read_bytes() == data[100:]
    assert content.windows == {
        0: b"",
        5000: data[5000 - WINDOW_BYTES : 5000],
        half + 7: data[half + 7 - WINDOW_BYTES : half + 7],
        len(data): data[-WINDOW_BYTES:],
    }
    assert content.prefix == data[:WINDOW_BYTES] and content.last == data[-WINDOW_BYTES:]
    path.write_bytes(whole[: len(whole) - 3000])  # cut inside the second member
    content = gunzip(path, out)
    end = data[: content.size].rfind(b"\n") + 1
    assert not content.complete and half < end == content.lines_end < len(data)
    assert out.read_bytes() == data[:end] and content.last == data[end - WINDOW_BYTES : end]
