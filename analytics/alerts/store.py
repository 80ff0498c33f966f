"""Where alerts live between evaluations: states, the notification outbox, silences, heartbeats.

SQLAlchemy on a SQLite file by default (``alerts.database_url``), PostgreSQL in production. An
evaluation saves its new states and enqueues its notifications in ONE transaction, so a crash
either keeps both or neither: a transition is never notified twice nor lost. Delivery then sends
outbox rows in id order and marks each one sent only after Slack accepted it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from analytics.alerts.catalog import Unit
from analytics.alerts.model import (
    AlertKey,
    AlertRecord,
    AlertState,
    Notification,
    NotificationKind,
    OutboxStatus,
    Severity,
)
from housekeeping.database import add_missing_columns, open_own_database, redact_url
from housekeeping.errors import HkError

metadata = sa.MetaData()
TS = sa.DateTime(timezone=True)

alert_states = sa.Table(
    "hk_alert_states",
    metadata,
    sa.Column("rule", sa.String(200), primary_key=True),
    sa.Column("group_key", sa.String(500), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(20)),
    sa.Column("pending_since", TS),
    sa.Column("firing_since", TS),
    sa.Column("last_value", sa.Float),
    sa.Column("last_notified_at", TS),
    sa.Column("updated_at", TS),
    sa.Column("breach_since", sa.Text, nullable=False, default="{}"),
    # Added after the first release (add_missing_columns adds them to older alert databases).
    sa.Column("no_data_since", TS),
    sa.Column("unannounced", sa.String(20)),  # a NotificationKind a silence held back
)
# Columns added to hk_alert_states since it was first created; existing rows get NULL.
_ADDED_STATE_COLUMNS = ("no_data_since", "unannounced")

outbox = sa.Table(
    "hk_alert_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("group_key", sa.String(500), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(20)),
    sa.Column("channel", sa.String(200), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("evaluated_at", TS, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    # pending -> sent, or failed (a permanent error such as invalid_auth; see delivery.py)
    sa.Column("status", sa.String(20), nullable=False, default=OutboxStatus.PENDING.value),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", TS, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("sent_at", TS),
    sa.Column("slack_channel", sa.String(200)),
    sa.Column("slack_ts", sa.String(64)),
    # Once per fact: a failed Dagster run is notified once, however often a sensor sees it.
    sa.Column("dedupe_key", sa.String(300), unique=True),
    sa.Index("hk_alert_outbox_pending", "status", "next_attempt_at"),
)

silences = sa.Table(
    "hk_alert_silences",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("group_key", sa.String(500)),  # NULL: every group of the rule
    sa.Column("starts_at", TS, nullable=False),
    sa.Column("ends_at", TS, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

heartbeats = sa.Table(
    "hk_alert_heartbeats",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("at", TS, nullable=False),
    sa.Column("detail", sa.Text),
)


class AlertStoreError(HkError):
    """The alert database cannot be opened or written; the message names it (password hidden)."""


def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored here is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Silence:
    id: int
    rule: str
    group: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str

    def matches(self, key: AlertKey, now: datetime) -> bool:
        return (
            self.rule == key.rule
            and (self.group is None or self.group == key.group)
            and self.starts_at <= now < self.ends_at
        )


@dataclass(frozen=True)
class OutboxRow:
    id: int
    notification: Notification
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    sent_at: datetime | None
    slack_channel: str | None
    slack_ts: str | None
    created_at: datetime | None = None
    payload_digest: str = ""

    @property
    def notification_id(self) -> str:
        """The id Slack posts carry in their metadata: the row id and a digest of its content
        (so two alert databases posting to one channel never share one)."""
        return f"{self.id}-{self.payload_digest}"


@dataclass(frozen=True)
class Episode:
    """What was sent of one alert since it last started firing (store.episode)."""

    since: datetime | None  # the FIRING notification's evaluation (None: none stored)
    # (Slack channel id, ts of the latest message there), one per channel, first posted first
    posts: list[tuple[str, str]]


def notification_to_json(notification: Notification) -> str:
    return json.dumps(
        {
            "rule": notification.key.rule,
            "group": notification.key.group,
            "kind": notification.kind.value,
            "severity": notification.severity.value if notification.severity else None,
            "channel": notification.channel,
            "title": notification.title,
            "text": notification.text,
            "evaluated_at": notification.evaluated_at.isoformat(),
            "value": notification.value,
            "threshold": notification.threshold,
            "comparator": notification.comparator,
            "window_seconds": (
                notification.window.total_seconds() if notification.window is not None else None
            ),
            "labels": notification.labels,
            "run_id": notification.run_id,
            "unit": notification.unit.value if notification.unit is not None else None,
        },
        sort_keys=True,
    )


def notification_from_json(text: str) -> Notification:
    data = json.loads(text)
    return Notification(
        key=AlertKey(data["rule"], data["group"]),
        kind=NotificationKind(data["kind"]),
        severity=Severity(data["severity"]) if data["severity"] else None,
        channel=data["channel"],
        title=data["title"],
        text=data["text"],
        evaluated_at=datetime.fromisoformat(data["evaluated_at"]),
        value=data["value"],
        threshold=data["threshold"],
        comparator=data["comparator"],
        window=(
            timedelta(seconds=data["window_seconds"])
            if data["window_seconds"] is not None
            else None
        ),
        labels=data["labels"],
        run_id=data["run_id"],
        # Rows stored before notifications carried their unit show plain numbers.
        unit=Unit(data["unit"]) if data.get("unit") else None,
    )


def _is_idle(record: AlertRecord) -> bool:
    """An OK record with nothing pending carries no information: it is not stored."""
    return record.state is AlertState.OK and not record.breach_since


class AlertStore:
    def __init__(self, url: str) -> None:
        self.engine = open_own_database(
            url,
            metadata,
            key="alerts.database_url",
            what="alert database",
            error=AlertStoreError,
            sqlite_connect_args={"timeout": 30},
            on_sqlite_connect=_sqlite_pragmas,
        )
        self.description = redact_url(self.engine.url)
        add_missing_columns(self.engine, alert_states, _ADDED_STATE_COLUMNS)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    # --- states -------------------------------------------------------------------------
    def load_states(
        self, conn: sa.Connection, rules: Sequence[str] | None = None
    ) -> dict[AlertKey, AlertRecord]:
        query = sa.select(alert_states)
        if rules is not None:
            query = query.where(alert_states.c.rule.in_(list(rules)))
        records = {}
        for row in conn.execute(query).mappings():
            key = AlertKey(row["rule"], row["group_key"])
            records[key] = AlertRecord(
                key=key,
                state=AlertState(row["state"]),
                severity=Severity(row["severity"]) if row["severity"] else None,
                pending_since=utc(row["pending_since"]),
                firing_since=utc(row["firing_since"]),
                last_value=row["last_value"],
                last_notified_at=utc(row["last_notified_at"]),
                updated_at=utc(row["updated_at"]),
                breach_since={
                    Severity(name): datetime.fromisoformat(at)
                    for name, at in json.loads(row["breach_since"] or "{}").items()
                },
                no_data_since=utc(row["no_data_since"]),
                unannounced=NotificationKind(row["unannounced"]) if row["unannounced"] else None,
            )
        return records

    def save_states(
        self, conn: sa.Connection, records: Iterable[AlertRecord], rules: Sequence[str]
    ) -> None:
        """Replace the stored states of ``rules`` with ``records`` (idle ones are dropped)."""
        conn.execute(alert_states.delete().where(alert_states.c.rule.in_(list(rules))))
        rows = [
            {
                "rule": record.key.rule,
                "group_key": record.key.group,
                "state": record.state.value,
                "severity": record.severity.value if record.severity else None,
                "pending_since": record.pending_since,
                "firing_since": record.firing_since,
                "last_value": record.last_value,
                "last_notified_at": record.last_notified_at,
                "updated_at": record.updated_at,
                "breach_since": json.dumps(
                    {severity.value: at.isoformat() for severity, at in record.breach_since.items()}
                ),
                "no_data_since": record.no_data_since,
                "unannounced": record.unannounced.value if record.unannounced else None,
            }
            for record in records
            if not _is_idle(record)
        ]
        if rows:
            conn.execute(alert_states.insert(), rows)

    # --- outbox -------------------------------------------------------------------------
    def enqueue(
        self,
        conn: sa.Connection,
        notifications: Iterable[Notification],
        now: datetime | None = None,
        dedupe_key: str | None = None,
    ) -> int:
        """Store notifications to send; with ``dedupe_key``, at most once per key ever."""
        now = now or datetime.now(UTC)
        rows = [
            {
                "rule": item.key.rule,
                "group_key": item.key.group,
                "kind": item.kind.value,
                "severity": item.severity.value if item.severity else None,
                "channel": item.channel,
                "payload": notification_to_json(item),
                "evaluated_at": item.evaluated_at,
                "created_at": now,
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "dedupe_key": dedupe_key,
            }
            for item in notifications
        ]
        if not rows:
            return 0
        if dedupe_key is not None:
            exists = conn.execute(
                sa.select(outbox.c.id).where(outbox.c.dedupe_key == dedupe_key)
            ).first()
            if exists is not None:
                return 0
        conn.execute(outbox.insert(), rows)
        return len(rows)

    def _row(self, row: Any) -> OutboxRow:
        return OutboxRow(
            id=row["id"],
            notification=notification_from_json(row["payload"]),
            status=OutboxStatus(row["status"]),
            attempts=row["attempts"],
            next_attempt_at=utc(row["next_attempt_at"]),
            last_error=row["last_error"],
            sent_at=utc(row["sent_at"]),
            slack_channel=row["slack_channel"],
            slack_ts=row["slack_ts"],
            created_at=utc(row["created_at"]),
            payload_digest=hashlib.sha256(row["payload"].encode()).hexdigest()[:12],
        )

    def pending(self, limit: int = 500) -> list[OutboxRow]:
        """Unsent rows in the order they were stored (due or not: delivery keeps the order)."""
        query = (
            sa.select(outbox)
            .where(outbox.c.status == OutboxStatus.PENDING.value)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._row(row) for row in conn.execute(query).mappings()]

    def rows(self, status: OutboxStatus | None = None, limit: int = 1000) -> list[OutboxRow]:
        """The first ``limit`` outbox rows in id order, only those in ``status`` when given."""
        query = sa.select(outbox).order_by(outbox.c.id).limit(limit)
        if status is not None:
            query = query.where(outbox.c.status == status.value)
        with self.engine.connect() as conn:
            return [self._row(row) for row in conn.execute(query).mappings()]

    def mark_attempt(self, ids: Sequence[int]) -> None:
        """Count an attempt BEFORE it is made: a row with attempts > 0 that is still pending may
        have reached Slack (an unknown outcome, or a crash right after the post), so its next
        attempt first looks for it (delivery.py)."""
        with self.transaction() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.id.in_(list(ids)))
                .values(attempts=outbox.c.attempts + 1)
            )

    def mark_sent(
        self,
        ids: Sequence[int],
        now: datetime,
        slack_channel: str | None,
        slack_ts: str | None,
        note: str | None = None,
    ) -> None:
        """Sent at ``now`` as (channel id, ts); ``note`` says how, when not as rendered (a
        plain-text fallback, a post found in Slack's history)."""
        with self.transaction() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.id.in_(list(ids)))
                .values(
                    status=OutboxStatus.SENT.value,
                    sent_at=now,
                    slack_channel=slack_channel,
                    slack_ts=slack_ts,
                    last_error=note[:2000] if note else None,
                )
            )

    def mark_retry(self, ids: Sequence[int], error: str, next_attempt_at: datetime) -> None:
        with self.transaction() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.id.in_(list(ids)))
                .values(last_error=error[:2000], next_attempt_at=next_attempt_at)
            )

    def mark_failed(self, ids: Sequence[int], error: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.id.in_(list(ids)))
                .values(status=OutboxStatus.FAILED.value, last_error=error[:2000])
            )

    def channel_id(self, channel: str) -> str | None:
        """The Slack id of ``channel`` (a #name) as an earlier answer gave it, or None."""
        query = (
            sa.select(outbox.c.slack_channel)
            .where(
                outbox.c.channel == channel,
                outbox.c.status == OutboxStatus.SENT.value,
                outbox.c.slack_channel.is_not(None),
                # a threaded reply was sent to the thread's channel, not necessarily this one
                outbox.c.kind != NotificationKind.RESOLVED.value,
            )
            .order_by(outbox.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return row[0] if row is not None else None

    def episode(self, key: AlertKey, before_id: int) -> Episode:
        """Since when ``key`` fires and where it was posted, as of outbox row ``before_id``:
        from its latest FIRING row before that one, every sent FIRING / ESCALATED / STILL
        FIRING message, the latest per Slack channel (a RESOLVED replies in each)."""
        alerting = [
            NotificationKind.FIRING.value,
            NotificationKind.ESCALATED.value,
            NotificationKind.RENOTIFY.value,
        ]
        with self.engine.connect() as conn:
            start = conn.execute(
                sa.select(outbox.c.id, outbox.c.evaluated_at)
                .where(
                    outbox.c.rule == key.rule,
                    outbox.c.group_key == key.group,
                    outbox.c.kind == NotificationKind.FIRING.value,
                    outbox.c.id < before_id,
                )
                .order_by(outbox.c.id.desc())
                .limit(1)
            ).first()
            if start is None:
                return Episode(None, [])
            rows = conn.execute(
                sa.select(outbox.c.slack_channel, outbox.c.slack_ts)
                .where(
                    outbox.c.rule == key.rule,
                    outbox.c.group_key == key.group,
                    outbox.c.kind.in_(alerting),
                    outbox.c.status == OutboxStatus.SENT.value,
                    outbox.c.slack_channel.is_not(None),
                    outbox.c.slack_ts.is_not(None),
                    outbox.c.id >= start[0],
                    outbox.c.id < before_id,
                )
                .order_by(outbox.c.id)
            ).all()
        latest: dict[str, str] = {}
        for channel, ts in rows:
            latest[channel] = ts  # dicts keep the first-seen order, values the latest
        return Episode(utc(start[1]), list(latest.items()))

    # --- silences -----------------------------------------------------------------------
    def add_silence(
        self,
        rule: str,
        group: str | None,
        starts_at: datetime,
        ends_at: datetime,
        reason: str,
        created_by: str,
    ) -> int:
        with self.transaction() as conn:
            result = conn.execute(
                silences.insert().values(
                    rule=rule,
                    group_key=group,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    reason=reason,
                    created_by=created_by,
                )
            )
            return int(result.inserted_primary_key[0])

    def remove_silence(self, silence_id: int) -> bool:
        with self.transaction() as conn:
            return conn.execute(silences.delete().where(silences.c.id == silence_id)).rowcount > 0

    def list_silences(self, now: datetime, include_expired: bool = False) -> list[Silence]:
        query = sa.select(silences).order_by(silences.c.id)
        if not include_expired:
            query = query.where(silences.c.ends_at > now)
        with self.engine.connect() as conn:
            return [_silence(row) for row in conn.execute(query).mappings()]

    def active_silences(self, conn: sa.Connection, now: datetime) -> list[Silence]:
        query = sa.select(silences).where(silences.c.starts_at <= now, silences.c.ends_at > now)
        return [_silence(row) for row in conn.execute(query).mappings()]

    # --- heartbeats and retention -------------------------------------------------------
    def beat(self, name: str, at: datetime, detail: str = "") -> None:
        with self.transaction() as conn:
            conn.execute(heartbeats.delete().where(heartbeats.c.name == name))
            conn.execute(heartbeats.insert().values(name=name, at=at, detail=detail))

    def last_beat(self, name: str) -> datetime | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(heartbeats.c.at).where(heartbeats.c.name == name)).first()
        return utc(row[0]) if row is not None else None

    def purge(self, before: datetime) -> dict[str, int]:
        """Sent (or permanently failed) outbox rows and expired silences older than ``before``."""
        with self.transaction() as conn:
            sent = conn.execute(
                outbox.delete().where(
                    outbox.c.status.in_([OutboxStatus.SENT.value, OutboxStatus.FAILED.value]),
                    outbox.c.created_at < before,
                )
            ).rowcount
            expired = conn.execute(silences.delete().where(silences.c.ends_at < before)).rowcount
        return {"outbox_rows": sent, "silences": expired}


def _silence(row: Any) -> Silence:
    return Silence(
        id=row["id"],
        rule=row["rule"],
        group=row["group_key"],
        starts_at=utc(row["starts_at"]),
        ends_at=utc(row["ends_at"]),
        reason=row["reason"],
        created_by=row["created_by"],
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
