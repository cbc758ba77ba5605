"""JSON tables of mixed domains: read, checked record by record, grouped by ``domain_id``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain_mlflow.data.loader import iter_raw_records
from domain_mlflow.data.records import RecordProblem, to_example
from domain_mlflow.exceptions import ConfigError
from domain_mlflow.naming import validate_domain_id

# How many problems are quoted in full; the rest are only counted.
_QUOTED_PROBLEMS = 20


@dataclass
class DomainTables:
    """The usable records of some tables, per domain, and what was left out and why."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    total: int = 0
    unassigned: int = 0
    unusable: int = 0
    problems: list[str] = field(default_factory=list)

    def _problem(self, path: str, location: str, text: str) -> None:
        self.unusable += 1
        if len(self.problems) < _QUOTED_PROBLEMS:
            self.problems.append(f"{path}: {location}: {text}")


def group_by_domain(paths: list[str | os.PathLike[str]],
                    single_domain: str | None = None) -> DomainTables:
    """Read every table and group its records by their ``domain_id``.

    With ``single_domain`` every record belongs to that domain whatever it carries
    (domain filtering off). Otherwise a record without ``domain_id`` is counted as
    unassigned and left out. A record that is not a usable training record, or
    whose ``domain_id`` is not a valid id, is counted and quoted in ``problems``;
    a missing or unreadable file raises.
    """
    tables = DomainTables()
    for raw_path in paths:
        path = os.fspath(raw_path)
        for location, value in iter_raw_records(path):
            tables.total += 1
            try:
                example = to_example(value)
            except RecordProblem as problem:
                tables._problem(path, location, str(problem))
                continue
            domain_id = single_domain or example.domain_id
            if domain_id is None:
                tables.unassigned += 1
                continue
            try:
                validate_domain_id(domain_id)
            except ConfigError as error:
                tables._problem(path, location, str(error))
                continue
            tables.records.setdefault(domain_id, []).append({**value, "domain_id": domain_id})
    return tables


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` as JSON Lines, atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(path)
    return path
