"""The config store on both dialects: migrations, configs, history, promotions, locks."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain_mlflow.exceptions import ConfigStoreError, PromotionError
from domain_mlflow.gate import Thresholds, decide
from domain_mlflow.sinks.config_store import ConfigStore, ConfigWrite
from domain_mlflow.sinks.database import PostgresDatabase
from domain_mlflow.sinks.migrations import MIGRATIONS, apply_migrations
from domain_mlflow.sinks.rows import Target
from tests.helpers import lock_held_elsewhere, with_search_path


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        opened = ConfigStore.open(dsn, tmp_path / "unused.db")
    else:
        opened = ConfigStore.open(None, tmp_path / "configs.db")
    yield opened
    opened.close()


def _promotion(store, version=1, key=None, domain="d1", kind="promote"):
    promotion, _ = store.create_promotion(
        request_key=key or f"auto:{domain}:{version}", domain_id=domain,
        registry_version=version, kind=kind, actor="test", reason="because",
        metrics={"accuracy": 0.9}, model_version=f"{domain}-v2026010{version}_000000",
        model_uri=f"models:/domain.{domain}/{version}", run_id="r", targets={"redis": "pending"},
    )
    return promotion


def _promote(store, version, domain="d1"):
    promotion = store.advance(_promotion(store, version, domain=domain), "approved")
    promotion, _ = store.write_config(promotion, action="promote",
                                      registered_model=f"domain.{domain}", serving_name=domain,
                                      targets={})
    return promotion


def test_migrations_apply_once_and_again_change_nothing(store):
    assert apply_migrations(store.database) == []  # already applied by open()
    with store.database.transaction() as tx:
        rows = tx.execute("SELECT version FROM schema_migrations ORDER BY version")
    assert [row["version"] for row in rows] == [number for number, _, _ in MIGRATIONS]


def test_a_promotion_request_is_recorded_once_per_key(store):
    first, created = store.create_promotion(
        request_key="auto:d1:1", domain_id="d1", registry_version=1, kind="promote",
        actor="a", reason="r", metrics={}, model_version="m", model_uri="u", run_id=None,
        targets={},
    )
    again, created_again = store.create_promotion(
        request_key="auto:d1:1", domain_id="d1", registry_version=1, kind="promote",
        actor="b", reason="r", metrics={}, model_version="m", model_uri="u", run_id=None,
        targets={},
    )
    assert created and not created_again
    assert again.id == first.id
    assert again.actor == "a"
    assert store.known_request_keys(["auto:d1:1", "auto:d1:2"]) == {"auto:d1:1"}


def test_writing_configs_increments_the_version_number_and_keeps_history(store):
    _promote(store, 1)
    _promote(store, 2)
    config = store.get_config("d1")
    assert (config.registry_version, config.previous_registry_version,
            config.version_number) == (2, 1, 2)
    assert config.metrics == {"accuracy": 0.9}
    history = store.history("d1")
    assert [(h.action, h.registry_version, h.version_number) for h in history] == [
        ("promote", 2, 2), ("promote", 1, 1)]


def test_pointing_again_at_the_same_version_adds_no_row(store):
    _promote(store, 1)
    promotion = store.advance(_promotion(store, 1, key="manual:d1:1:x"), "approved")
    store.write_config(promotion, action="promote", registered_model="domain.d1",
                       serving_name="d1", targets={})
    assert store.get_config("d1").version_number == 1
    assert len(store.history("d1")) == 1


def test_a_rejection_is_history_and_a_terminal_state(store):
    rejected = store.reject(_promotion(store, 3), {"passed": False}, "accuracy too low", {})
    assert rejected.state == "rejected"
    assert not rejected.is_open
    [entry] = store.history("d1")
    assert (entry.action, entry.reason, entry.version_number) == ("reject", "accuracy too low",
                                                                  None)
    assert store.get_config("d1") is None


def test_a_stale_state_change_is_refused(store):
    promotion = _promotion(store, 1)
    store.advance(promotion, "approved")
    with pytest.raises(PromotionError, match="moved on concurrently"):
        store.advance(promotion, "approved")


def test_a_batch_with_one_promotion_moved_elsewhere_is_refused_whole_naming_it(store):
    batch = [_promotion(store, 1, domain=domain) for domain in ("d1", "d2", "d3")]
    store.advance(batch[1], "approved")  # another writer moved d2's meanwhile
    with pytest.raises(PromotionError, match=f"promotion {batch[1].id} of d2 moved on "
                                             "concurrently.*found 'approved'"):
        store.advance_many([(promotion, "approved", {"targets": {"redis": "done"}})
                            for promotion in batch])
    assert [p.state for p in store.open_promotions()] == ["pending", "approved", "pending"]


def test_a_moved_record_is_the_row_as_read_back(store):
    from domain_mlflow.sinks.rows import TargetStatus

    decision = decide({"accuracy": 0.9, "latency_ms": 10.0, "training_loss": 0.1,
                       "validation_loss": 0.2}, Thresholds())
    [moved] = store.advance_many([(_promotion(store, 1), "approved", {
        "decision": decision, "targets": {Target.REDIS: TargetStatus.DONE}})])
    assert moved == store.get_promotion(moved.id)


def test_configs_written_are_returned_as_they_read_back(store):
    _promote(store, 1)
    writes = [ConfigWrite(store.advance(_promotion(store, version, domain=domain), "approved"),
                          "promote", f"domain.{domain}", domain, {"redis": "pending"})
              for domain, version in (("d1", 2), ("d2", 1))]
    written = store.write_configs(writes)
    assert [config for _, config in written] == [store.get_config("d1"), store.get_config("d2")]
    assert [(c.registry_version, c.previous_registry_version, c.version_number)
            for _, c in written] == [(2, 1, 2), (1, None, 1)]


def test_failures_are_recorded_with_the_next_attempt(store):
    promotion = store.advance(_promotion(store, 1), "approved")
    failed = store.record_failure(promotion, "redis down", timedelta(seconds=60),
                                  {"redis": "failed"})
    assert (failed.attempts, failed.last_error, failed.state) == (1, "redis down", "approved")
    assert store.open_promotions("d1", due_only=True) == []
    assert [p.id for p in store.open_promotions("d1")] == [promotion.id]


def test_webhook_deliveries_are_remembered(store):
    assert store.remember_delivery("abc", "model_version.created")
    assert not store.remember_delivery("abc", "model_version.created")
    assert store.has_delivery("abc")


def test_a_named_lock_is_exclusive(store):
    with lock_held_elsewhere(store.database, "poller"):
        with store.database.lock("poller", blocking=False) as got:
            assert got is False
        with store.database.lock("another", blocking=False) as got:
            assert got is True
    with store.database.lock("poller", blocking=False) as got:
        assert got is True


def test_a_blocking_lock_waits_for_its_holder_and_gives_up_after_its_timeout(store):
    with lock_held_elsewhere(store.database, "poller"), \
            store.database.lock("poller", timeout=0.2) as got:
        assert got is False
    with lock_held_elsewhere(store.database, "poller", release_after=0.3), \
            store.database.lock("poller", timeout=30) as got:
        assert got is True


def test_a_postgres_lock_leaves_its_pooled_connection_without_a_lock_timeout(postgres_dsn):
    database = PostgresDatabase(postgres_dsn, max_size=1)  # the lock's connection, reused
    try:
        with database.lock("poller", timeout=5) as got:
            assert got is True
        with database.transaction() as tx:
            assert tx.execute("SHOW lock_timeout")[0]["lock_timeout"] == "0"
    finally:
        database.close()


def test_stores_in_two_schemas_of_one_database_lock_independently(postgres_dsn, tmp_path):
    import uuid

    import psycopg

    from tests.conftest import TEST_POSTGRES_DSN

    other_schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(TEST_POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {other_schema}")
    other_dsn = with_search_path(TEST_POSTGRES_DSN, other_schema)
    first = ConfigStore.open(postgres_dsn, tmp_path / "unused.db")
    second = ConfigStore.open(other_dsn, tmp_path / "unused.db")
    same = ConfigStore.open(postgres_dsn, tmp_path / "unused.db")
    try:
        with first.database.lock("poller", blocking=False) as got:
            assert got is True
            with second.database.lock("poller", blocking=False) as other:
                assert other is True
            with same.database.lock("poller", blocking=False) as again:
                assert again is False
    finally:
        for store in (first, second, same):
            store.close()
        with psycopg.connect(TEST_POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {other_schema} CASCADE")


def test_an_unreachable_postgres_is_a_clear_error_without_the_password():
    database = PostgresDatabase("postgresql://u:pw-secret@127.0.0.1:1/db", connect_timeout=1)
    with pytest.raises(ConfigStoreError) as caught, database.transaction():
        pass
    assert "unreachable" in str(caught.value)
    assert "pw-secret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_many_state_changes_are_one_transaction(store):
    first, second = _promotion(store, 1, domain="d1"), _promotion(store, 1, domain="d2")
    store.advance(second, "approved")  # our copy of `second` is now stale
    with pytest.raises(PromotionError, match=f"promotion {second.id} of d2 moved on"):
        store.advance_many([(first, "approved", {}), (second, "approved", {})])
    assert store.get_promotion(first.id).state == "pending"  # none of the batch applied
    moved = store.advance_many([(first, "approved", {"targets": {"redis": "x"}})])
    assert (moved[0].state, moved[0].targets) == ("approved", {"redis": "x"})


def test_requests_added_in_bulk_count_only_the_new_keys(store):
    existing = _promotion(store, 1, domain="d1")
    requests = [dict(request_key=key, domain_id=domain, registry_version=1, kind="promote",
                     actor="poller", reason="found", metrics={"accuracy": 0.9},
                     model_version="m", model_uri="u", run_id=None, targets={})
                for key, domain in ((existing.request_key, "d1"), ("auto:d2:1", "d2"),
                                    ("auto:d3:1", "d3"), ("auto:d2:1", "d2"))]
    assert store.add_requests(requests) == 2
    assert store.add_requests([]) == 0
    assert store.get_promotion(existing.id).actor == "test"  # the first request stays
    assert sorted((p.domain_id, p.state, p.actor) for p in store.open_promotions()) == [
        ("d1", "pending", "test"), ("d2", "pending", "poller"), ("d3", "pending", "poller")]


def test_a_registry_read_is_recorded_with_its_requests_and_an_earlier_one_never_replaces_it(
        store):
    from datetime import UTC, datetime, timedelta

    from domain_mlflow.sinks.rows import RegistryReads

    assert store.registry_reads() == RegistryReads(None, None)
    later = datetime(2026, 12, 2, 7, 30, 0, 250000, tzinfo=UTC)
    request = dict(request_key="auto:d1:1", domain_id="d1", registry_version=1,
                   kind="promote", actor="poller", reason="r", metrics={},
                   model_version="m", model_uri="u", run_id=None, targets={})
    assert store.add_requests([request], read_at=later, full_sweep=True) == 1
    assert store.registry_reads() == RegistryReads(later, later)
    assert store.add_requests([], read_at=later - timedelta(seconds=5), full_sweep=True) == 0
    assert store.registry_reads() == RegistryReads(later, later)
    newer = later + timedelta(microseconds=1)
    assert store.add_requests([], read_at=newer) == 0  # not a full sweep
    assert store.registry_reads() == RegistryReads(newer, later)
    assert [p.request_key for p in store.open_promotions()] == ["auto:d1:1"]


def test_moved_records_are_what_a_read_returns(store):
    first, second = _promotion(store, 1, domain="d1"), _promotion(store, 1, domain="d2")
    decision = decide({"accuracy": 0.9, "latency_ms": 10, "training_loss": 0.1,
                       "validation_loss": 0.1}, Thresholds())
    moved = store.advance_many([
        (first, "approved", {"decision": decision, "targets": {Target.SERVING: "done"}}),
        (second, "rejected", {"targets": {}, "approval_reason": "no"})])
    assert moved == [store.get_promotion(first.id), store.get_promotion(second.id)]
    assert moved[0].decision.passed and moved[0].targets == {"serving": "done"}


def test_configs_of_many_domains_are_written_in_one_call(store):
    _promote(store, 1, domain="d1")
    _promote(store, 1, domain="d3")
    approved = [store.advance(_promotion(store, version, domain=domain, key=key), "approved")
                for domain, version, key in (("d1", 2, None), ("d2", 1, None),
                                             ("d3", 1, "manual:d3:1:again"))]
    written = store.write_configs([
        ConfigWrite(p, "promote", f"domain.{p.domain_id}", p.domain_id, {"config_store": "done"})
        for p in approved])
    assert [(p.domain_id, p.state) for p, _ in written] == [
        ("d1", "config_written"), ("d2", "config_written"), ("d3", "config_written")]
    assert [(c.domain_id, c.registry_version, c.previous_registry_version, c.version_number)
            for _, c in written] == [("d1", 2, 1, 2), ("d2", 1, None, 1), ("d3", 1, None, 1)]
    assert store.get_config("d1").registry_version == 2
    assert [h.registry_version for h in store.history("d1")] == [2, 1]
    assert len(store.history("d3")) == 1  # pointing again at the same version adds no row
    with pytest.raises(ValueError, match="one promotion per domain"):
        store.write_configs([ConfigWrite(approved[0], "promote", "domain.d1", "d1", {})] * 2)


def test_many_locks_at_once_leave_out_the_ones_held_elsewhere(store):
    with lock_held_elsewhere(store.database, "domain:b"), \
            store.database.lock_many(["domain:a", "domain:b", "domain:c"]) as got:
        assert got == {"domain:a", "domain:c"}
        with store.database.lock("domain:a", blocking=False) as again:
            assert again is False
    with store.database.lock_many(["domain:a", "domain:b"]) as got:
        assert got == {"domain:a", "domain:b"}
