"""Turns a terminate request (SIGINT/SIGTERM) into 'stop after the batch in flight'."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StopRequest:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


@contextmanager
def stop_on_terminate() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM only set a flag that the deleter checks between batches.

    Dagster delivers "Terminate" from the UI to the step process as SIGINT; without this the
    interrupt would land mid-statement and roll the batch in flight back.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return

    def request_stop(signum, frame) -> None:
        stop.requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
