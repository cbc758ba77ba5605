"""SQL shared by the config store's queries: lock names, JSON columns, IN-lists, upserts."""

from __future__ import annotations

import json
from typing import Any


def domain_lock_name(domain_id: str) -> str:
    return f"domain:{domain_id}"


def encode(column: str, value: Any) -> Any:
    if column not in JSON_COLUMNS:
        return value
    return json.dumps(value.to_dict() if hasattr(value, "to_dict") else value)


def chunks(items: list[Any], size: int = 500) -> list[list[Any]]:
    """IN-lists of at most ``size`` values (SQLite allows 999 parameters per statement)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


JSON_COLUMNS = ("decision", "targets", "metrics")
UPSERT_CONFIG = (
    "INSERT INTO domain_configs (domain_id, model_version, registered_model, registry_version, "
    "previous_registry_version, model_uri, serving_name, training_run_id, metrics, "
    "version_number, updated_at, semver) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (domain_id) DO UPDATE SET model_version = excluded.model_version, "
    "registered_model = excluded.registered_model, "
    "registry_version = excluded.registry_version, "
    "previous_registry_version = excluded.previous_registry_version, "
    "model_uri = excluded.model_uri, serving_name = excluded.serving_name, "
    "training_run_id = excluded.training_run_id, metrics = excluded.metrics, "
    "version_number = excluded.version_number, updated_at = excluded.updated_at, "
    "semver = excluded.semver, split = NULL"  # a config write ends any traffic split
)
