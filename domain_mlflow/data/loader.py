"""Loading a training data file (JSON array or JSON Lines) into validated examples.

The file is read incrementally: JSON Lines line by line, a JSON array one element at
a time (:mod:`domain_mlflow.data.json_array`). Memory holds the examples kept, not
the file's text nor every decoded record.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from domain_mlflow.data.json_array import JSONArrayProblem, NotAJSONArray, iter_json_array
from domain_mlflow.data.records import Example, RecordProblem, to_example
from domain_mlflow.exceptions import (
    DataEncodingError,
    DataFileNotFoundError,
    DataNotAFileError,
    DataTooLargeError,
    EmptyDataError,
    MalformedJSONError,
    NoUsableRecordsError,
    RecordFormatError,
)

DEFAULT_MAX_BYTES = 1 << 30
CHUNK_BYTES = 1 << 20  # how much of a JSON array is read at a time
MAX_DOMAINS_NAMED = 10  # in the error for a domain the file does not hold
_BOM = codecs.BOM_UTF8


@dataclass
class LoadedData:
    """The usable examples of one file and what was left out of it."""

    path: str
    examples: list[Example]
    total_records: int
    duplicates_dropped: int = 0
    other_domain_records: int = 0
    digest: str = field(default="")


def check_data_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """The size of ``path`` once it is known to be a regular file of at most ``max_bytes``.

    Only ``os.stat`` is used, so a FIFO or a device is refused without being opened.
    """
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise DataFileNotFoundError(path, "no such file") from None
    except OSError as error:
        raise DataFileNotFoundError(path, f"cannot be read: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataNotAFileError(path, "is a directory; give the JSON or JSON Lines file in it")
    if not stat.S_ISREG(info.st_mode):
        raise DataNotAFileError(
            path, f"not a regular file: {_file_kind(info.st_mode)}; give a JSON or JSON "
            "Lines file")
    if info.st_size > max_bytes:
        raise DataTooLargeError(
            path, f"file is {info.st_size} bytes, over the limit of {max_bytes} bytes; split it"
        )
    return info.st_size


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def _open(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")  # the caller's with-block closes it
    except OSError as error:
        raise DataFileNotFoundError(path, f"cannot be read: {error.strerror}") from None


def _encoding_error(path: str, data: bytes, error: UnicodeDecodeError, offset: int,
                    line: int) -> DataEncodingError:
    """``data`` starts at byte ``offset`` of the file; the bad byte is on ``line``."""
    return DataEncodingError(
        path,
        f"not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {offset + error.start}); "
        "re-save the file as UTF-8",
        f"line {line}",
    )


def _decoded_chunks(handle: IO[bytes], path: str) -> Iterator[str]:
    """The file's text, ``CHUNK_BYTES`` at a time, without a leading byte order mark."""
    pending, offset, lines_before, first = b"", 0, 0, True
    while True:
        chunk = handle.read(CHUNK_BYTES)
        data = pending + chunk
        try:
            # final=False keeps a character cut by the chunk's end for the next round.
            text, used = codecs.utf_8_decode(data, "strict", not chunk)
        except UnicodeDecodeError as error:
            line = lines_before + data.count(b"\n", 0, error.start) + 1
            raise _encoding_error(path, data, error, offset, line) from None
        lines_before += data.count(b"\n", 0, used)
        offset += used
        pending = data[used:]
        if first and text:
            text, first = text.removeprefix("\ufeff"), False
        if text:
            yield text
        if not chunk:
            return


def _first_character(path: str) -> str:
    """The file's first character that is not whitespace, "" when there is none."""
    with _open(path) as handle:
        for text in _decoded_chunks(handle, path):
            stripped = text.lstrip()
            if stripped:
                return stripped[0]
    return ""


def _decode(text: str, path: str, location: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedJSONError(
            path, f"invalid JSON: {error.msg} (column {error.colno})", location
        ) from None
    except RecursionError:
        raise MalformedJSONError(path, "JSON nested too deeply", location) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise MalformedJSONError(path, f"invalid JSON: {error}", location) from None


def _json_array(path: str) -> Iterator[tuple[str, Any]]:
    with _open(path) as handle:
        elements = iter_json_array(_decoded_chunks(handle, path))
        try:
            for index, value in enumerate(elements):
                yield f"index {index}", value
        except NotAJSONArray:
            raise RecordFormatError(
                path, "expected a JSON array of records or JSON Lines") from None
        except JSONArrayProblem as problem:
            raise MalformedJSONError(path, problem.message, problem.location) from None


def _json_lines(path: str) -> Iterator[tuple[str, Any]]:
    # Lines end at b"\n" only, like split("\n"): JSON strings may hold U+2028 and friends.
    with _open(path) as handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            start = len(_BOM) if number == 1 and raw.startswith(_BOM) else 0
            try:
                line = raw[start:].decode("utf-8")
            except UnicodeDecodeError as error:
                raise _encoding_error(path, raw[start:], error, offset + start, number) from None
            offset += len(raw)
            if line.strip():
                yield f"line {number}", _decode(line, path, f"line {number}")


def iter_raw_records(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[str, Any]]:
    """Yield ``(location, decoded JSON value)`` for every record in the file.

    The file itself is checked on the call (it exists, is a regular file within
    ``max_bytes``, is not blank); records are read and decoded as they are taken.
    """
    check_data_file(path, max_bytes)
    first = _first_character(path)
    if not first:
        raise EmptyDataError(path, "file is empty")
    return _json_array(path) if first == "[" else _json_lines(path)


def digest_examples(examples: list[Example]) -> str:
    """A SHA-256 over the examples' content, independent of the file's formatting."""
    # The hash of json.dumps(all examples) fed piece by piece: the same digest as ever
    # (checkpoints record it), without the whole text in memory.
    digest = hashlib.sha256(b"[")
    for number, example in enumerate(examples):
        piece = json.dumps([example.prompt, example.completion, example.domain_id],
                           ensure_ascii=False)
        digest.update((", " + piece if number else piece).encode("utf-8"))
    digest.update(b"]")
    return digest.hexdigest()


def _no_record_of(domain_id: str | None, other_domains: Counter[str]) -> str:
    """What a file holding only other domains holds instead, and what to pass."""
    shown = [f"{name[:40]!r} ({count})"
             for name, count in other_domains.most_common(MAX_DOMAINS_NAMED)]
    more = len(other_domains) - len(shown)
    listing = ", ".join(shown) + (f" and {more} more" if more else "")
    return (f"no record of domain '{domain_id}'; its {other_domains.total()} records are of "
            f"{len(other_domains)} other domain(s): {listing}. Train one of those: "
            "-P domain_id=ID with mlflow run, --domain-id ID with domain-mlflow train")


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
    other_domains: Counter[str] = Counter()
    total = duplicates = 0
    for location, value in iter_raw_records(path, max_bytes):
        total += 1
        try:
            example = to_example(value)
        except RecordProblem as problem:
            raise RecordFormatError(path, str(problem), location) from None
        if domain_id is not None and example.domain_id not in (None, domain_id):
            other_domains[example.domain_id] += 1
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
        raise NoUsableRecordsError(path, _no_record_of(domain_id, other_domains))
    return LoadedData(
        path=path,
        examples=examples,
        total_records=total,
        duplicates_dropped=duplicates,
        other_domain_records=other_domains.total(),
        digest=digest_examples(examples),
    )
