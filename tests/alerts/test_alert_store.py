"""The alert store: states and outbox in one transaction, retention of its own tables."""

from __future__ import annotations

from datetime import timedelta

import pytest

from analytics.alerts.model import AlertKey, AlertRecord, AlertState, NotificationKind, Severity
from analytics.alerts.store import AlertStore, AlertStoreError
from tests.alerts.test_alert_delivery import note
from tests.support.alert_support import T0, store_at


def test_a_failed_transaction_keeps_neither_the_state_nor_the_notification(tmp_path):
    store = store_at(tmp_path)
    record = AlertRecord(AlertKey("r", "g"), AlertState.FIRING, Severity.HIGH, updated_at=T0)
    with pytest.raises(RuntimeError), store.transaction() as conn:
        store.save_states(conn, [record], ["r"])
        store.enqueue(conn, [note(rule="r", group="g")], now=T0)
        raise RuntimeError("the sensor process dies here")
    with store.transaction() as conn:
        assert store.load_states(conn) == {}
    assert store.pending() == []


def test_states_round_trip_and_idle_ones_are_not_stored(tmp_path):
    store = store_at(tmp_path)
    firing = AlertRecord(
        AlertKey("r", "g"),
        AlertState.FIRING,
        Severity.HIGH,
        firing_since=T0,
        last_value=0.5,
        last_notified_at=T0,
        updated_at=T0,
        breach_since={Severity.HIGH: T0 - timedelta(minutes=5)},
    )
    idle = AlertRecord(AlertKey("r", "quiet"), updated_at=T0)
    with store.transaction() as conn:
        store.save_states(conn, [firing, idle], ["r"])
    with store.transaction() as conn:
        assert store.load_states(conn) == {firing.key: firing}


def test_a_dedupe_key_stores_a_fact_once(tmp_path):
    store = store_at(tmp_path)
    for _ in range(3):
        with store.transaction() as conn:
            store.enqueue(
                conn, [note(kind=NotificationKind.RUN_FAILURE)], now=T0, dedupe_key="run:1"
            )
    assert len(store.pending()) == 1


def test_retention_deletes_old_sent_rows_and_expired_silences_only(tmp_path):
    store = store_at(tmp_path)
    with store.transaction() as conn:
        store.enqueue(conn, [note(group="old")], now=T0 - timedelta(days=40))
        store.enqueue(conn, [note(group="pending")], now=T0 - timedelta(days=40))
        store.enqueue(conn, [note(group="new")], now=T0)
    old, pending, new = store.rows()
    store.mark_sent([old.id, new.id], T0, "C1", "1.0")
    store.add_silence("r", None, T0 - timedelta(days=40), T0 - timedelta(days=39), "x", "ops")
    store.add_silence("r", None, T0, T0 + timedelta(days=1), "y", "ops")

    purged = store.purge(T0 - timedelta(days=30))

    assert purged == {"outbox_rows": 1, "silences": 1}
    assert [row.id for row in store.rows()] == [pending.id, new.id]  # unsent rows are kept
    assert [silence.reason for silence in store.list_silences(T0, include_expired=True)] == ["y"]


def test_a_bad_database_url_is_named_without_its_password(tmp_path):
    with pytest.raises(AlertStoreError, match="not a SQLAlchemy URL"):
        AlertStore("not a url")
    with pytest.raises(AlertStoreError) as error:
        AlertStore("postgresql://hk:s3cret@127.0.0.1:1/alerts")
    assert "s3cret" not in str(error.value) and "cannot open the alert database" in str(error.value)
