"""Loading a training data file (JSON array or JSON Lines) into validated examples."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from domain_mlflow.data.records import Example, RecordProblem, to_example
from domain_mlflow.exceptions import (
    DataEncodingError,
    DataFileNotFoundError,
    DataTooLargeError,
    EmptyDataError,
    MalformedJSONError,
    NoUsableRecordsError,
    RecordFormatError,
)

DEFAULT_MAX_BYTES = 1 << 30


@dataclass
class LoadedData:
    """The usable examples of one file and what was left out of it."""

    path: str
    examples: list[Example]
    total_records: int
    duplicates_dropped: int = 0
    other_domain_records: int = 0
    digest: str = field(default="")


def _read_text(path: str, max_bytes: int) -> str:
    if not os.path.isfile(path):
        raise DataFileNotFoundError(path, "no such file")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise DataTooLargeError(
            path, f"file is {size} bytes, over the limit of {max_bytes} bytes; split it"
        )
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataEncodingError(
            path,
            f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start}); "
            "re-save the file as UTF-8",
            f"line {line}",
        ) from None


def _decode(text: str, path: str, location: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedJSONError(
            path, f"invalid JSON: {error.msg} (column {error.colno})", location
        ) from None
    except RecursionError:
        raise MalformedJSONError(path, "JSON nested too deeply", location) from None


def _json_array(text: str, path: str) -> Iterator[tuple[str, Any]]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedJSONError(
            path, f"invalid JSON: {error.msg} (column {error.colno})", f"line {error.lineno}"
        ) from None
    except RecursionError:
        raise MalformedJSONError(path, "JSON nested too deeply") from None
    if not isinstance(values, list):
        raise RecordFormatError(path, "expected a JSON array of records or JSON Lines")
    for index, value in enumerate(values):
        yield f"index {index}", value


def _json_lines(text: str, path: str) -> Iterator[tuple[str, Any]]:
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield f"line {number}", _decode(line, path, f"line {number}")


def iter_raw_records(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[str, Any]]:
    """Yield ``(location, decoded JSON value)`` for every record in the file."""
    text = _read_text(path, max_bytes)
    stripped = text.lstrip()
    if not stripped:
        raise EmptyDataError(path, "file is empty")
    records = _json_array(text, path) if stripped.startswith("[") else _json_lines(text, path)
    return records


def digest_examples(examples: list[Example]) -> str:
    """A SHA-256 over the examples' content, independent of the file's formatting."""
    payload = json.dumps(
        [[e.prompt, e.completion, e.domain_id] for e in examples], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def load_training_data(
    path: str | os.PathLike[str],
    domain_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> LoadedData:
    """Read, validate, filter by domain and de-duplicate a data file.

    Records carrying another ``domain_id`` are left out when ``domain_id`` is given;
    records without one are kept. Every problem raises a :class:`DataError` naming
    the file and the line or index.
    """
    path = os.fspath(path)
    examples: list[Example] = []
    seen: set[tuple[str, str]] = set()
    total = duplicates = other_domain = 0
    for location, value in iter_raw_records(path, max_bytes):
        total += 1
        try:
            example = to_example(value)
        except RecordProblem as problem:
            raise RecordFormatError(path, str(problem), location) from None
        if domain_id is not None and example.domain_id not in (None, domain_id):
            other_domain += 1
            continue
        key = (example.prompt, example.completion)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        examples.append(example)
    if total == 0:
        raise EmptyDataError(path, "file holds no records")
    if not examples:
        raise NoUsableRecordsError(
            path, f"no record of domain '{domain_id}' ({other_domain} of other domains)"
        )
    return LoadedData(
        path=path,
        examples=examples,
        total_records=total,
        duplicates_dropped=duplicates,
        other_domain_records=other_domain,
        digest=digest_examples(examples),
    )
