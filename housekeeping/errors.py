"""The one base of every error the product raises on purpose, and how errors read in one line.

Each error names what is wrong and what to do; the `hk` command turns any `HkError` into that
message and exit status 1 (`housekeeping/cli.py`), and Dagster shows the same text in the run's
failure. Anything that is not an `HkError` is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib


class HkError(Exception):
    """An error the product explains: bad config or rules, a refusal, an unreachable database."""


def first_line(error: BaseException | None) -> str:
    """The first line of an error's message (a driver's error is often many lines), else its
    class name; '' for None."""
    if error is None:
        return ""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def closest_names(wanted: str, known: list[str]) -> list[str]:
    """The known names equal to ``wanted`` but for case, else the closest spellings (at most 3)."""
    same = [name for name in known if name.lower() == wanted.lower() and name != wanted]
    return same or difflib.get_close_matches(wanted, known, n=3, cutoff=0.8)


def did_you_mean(names: list[str]) -> str:
    """`` (did you mean 'a' or 'b'?)``, or '' for no names."""
    if not names:
        return ""
    return " (did you mean " + " or ".join(repr(name) for name in names) + "?)"


def one_line(text: str) -> str:
    """``text`` on one line: its lines stripped and joined (a driver's hint, a YAML error's
    location and caret), so every error `hk` prints is one line."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
