"""What a job log line means: the job presets and the job field mapping.

A job source read from log files (``analytics.sources.jobs`` with ``kind: json_lines``) names a
``format`` preset or a ``fields`` mapping (or a preset with some fields overridden), as a request
source does (formats.py). A job line says that one job (``job_id``, with its ``name`` and
``queue``) reached a ``state``: queued, started, completed or failed, each state written as one
of the mapping's values for it (``started_states`` ...). A completion line may carry the run's
``duration`` (``"22.5s"``, or a number in ``duration_unit``) and the ``attempt`` number.
``select`` (a path, optionally ``select_value``) says which lines are job lines; other lines
(requests, start-up messages) are not counted and are not errors. A job line whose state is
none of the four (a progress line, ``"phase": "processing"``) is an ``other`` line too.

The presets (the job logs of ``observability-and-housekeeping.md`` and
``scheduler-monitoring.md``):

- ``pino``: ``{"level":30,"time":1700000000000,"queue":"email","jobId":"42",
  "jobName":"welcome","phase":"started","attempt":1,"msg":"..."}``; completion lines add
  ``"totalDuration":"22.5s"``; job lines are the lines with ``jobName``.
- ``winston``: ``{"level":"info","timestamp":"2026-...Z","category":"jobs","jobId":"42",
  "jobName":"welcome","queue":"email","status":"completed","attempt":1,"duration":22500,
  "message":"..."}``; job lines are the lines of ``"category": "jobs"``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from analytics.logs.formats import DottedPath, DurationUnit, TimestampFormat
from housekeeping.config_types import StrictModel

JOB_STATES = ("queued", "started", "completed", "failed")


class JobFieldMapping(StrictModel):
    """Where a job line keeps each value (dotted paths into the JSON object), and which values
    of ``state`` are which lifecycle event.

    Every key is optional so a preset can be adjusted key by key; a source without a preset must
    set ``timestamp``, ``job_id``, ``name``, ``state`` and ``select``
    (``settings.JobsJsonLinesSource`` checks).
    """

    timestamp: DottedPath | None = None
    timestamp_format: TimestampFormat | None = None
    job_id: DottedPath | None = None
    name: DottedPath | None = None
    queue: DottedPath | None = None
    state: DottedPath | None = None
    duration: DottedPath | None = None
    duration_unit: DurationUnit | None = None
    attempt: DottedPath | None = None
    select: DottedPath | None = None
    select_value: str | None = None
    queued_states: list[str] | None = Field(default=None)
    started_states: list[str] | None = Field(default=None)
    completed_states: list[str] | None = Field(default=None)
    failed_states: list[str] | None = Field(default=None)

    def states(self, state: str) -> list[str]:
        """The values of ``state`` that mean the lifecycle event ``state`` (JOB_STATES)."""
        return getattr(self, f"{state}_states") or []


JOB_PRESETS: dict[str, JobFieldMapping] = {
    "pino": JobFieldMapping(
        timestamp="time",
        timestamp_format="epoch_ms",
        job_id="jobId",
        name="jobName",
        queue="queue",
        state="phase",
        duration="totalDuration",
        duration_unit="ms",
        attempt="attempt",
        select="jobName",
        queued_states=["queued", "waiting"],
        started_states=["started"],
        completed_states=["completed"],
        failed_states=["failed"],
    ),
    "winston": JobFieldMapping(
        timestamp="timestamp",
        timestamp_format="iso",
        job_id="jobId",
        name="jobName",
        queue="queue",
        state="status",
        duration="duration",
        duration_unit="ms",
        attempt="attempt",
        select="category",
        select_value="jobs",
        queued_states=["queued", "waiting"],
        started_states=["started"],
        completed_states=["completed"],
        failed_states=["failed"],
    ),
}
JobPresetName = Literal["pino", "winston"]
REQUIRED_JOB_FIELDS = ("timestamp", "job_id", "name", "state", "select")


def resolved_job_mapping(preset: str | None, fields: JobFieldMapping | None) -> JobFieldMapping:
    """The preset's mapping with every key ``fields`` sets laid over it (either may be None);
    the timestamp format defaults to ``iso``, the duration unit to ``ms``, a state list to
    empty."""
    base = JOB_PRESETS[preset].model_dump() if preset else {}
    if fields is not None:
        base.update(fields.model_dump(exclude_none=True))
    mapping = JobFieldMapping(**base)
    return mapping.model_copy(
        update={
            "timestamp_format": mapping.timestamp_format or "iso",
            "duration_unit": mapping.duration_unit or "ms",
            **{f"{state}_states": mapping.states(state) for state in JOB_STATES},
        }
    )
