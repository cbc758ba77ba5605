"""Turning one raw record of any supported format into a (prompt, completion) example."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMATS = (
    "{prompt, completion}",
    "{instruction, input?, output}",
    "{question, sql}",
    "{messages: [{role, content}, ...]}",
)


@dataclass(frozen=True)
class Example:
    """One training example: the text the model sees and the text it must produce."""

    prompt: str
    completion: str
    domain_id: str | None = None
    # (role, content) turns before the answer, for a `messages` record with more than
    # one user turn; the prompt then holds them joined as plain text.
    context: tuple[tuple[str, str], ...] = ()


class RecordProblem(ValueError):
    """Why one record cannot be used; the loader adds the file and location."""


def _text(record: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise RecordProblem(f"field '{key}' must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RecordProblem(f"field '{key}' is empty")
    return value.strip()


def _require(record: dict[str, Any], present: str, needed: str) -> None:
    if needed not in record:
        raise RecordProblem(f"record has '{present}' but no '{needed}'")


def _from_messages(messages: Any) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    if not isinstance(messages, list) or len(messages) < 2:
        raise RecordProblem("'messages' must be a list of at least two {role, content} objects")
    turns: list[tuple[str, str]] = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RecordProblem(f"messages[{position}] must be an object with 'role' and 'content'")
        try:
            turns.append((_text(message, "role"), _text(message, "content")))
        except RecordProblem as problem:
            raise RecordProblem(f"messages[{position}]: {problem}") from None
    if turns[-1][0] != "assistant":
        raise RecordProblem("the last message must have role 'assistant' (it is the target)")
    context = tuple(turns[:-1])
    if len(context) == 1 and context[0][0] == "user":
        return context[0][1], turns[-1][1], ()
    prompt = "\n".join(f"{role}: {content}" for role, content in context)
    return prompt, turns[-1][1], context


def _prompt_and_completion(record: dict[str, Any]) -> tuple[str, str]:
    if "question" in record or "sql" in record:
        _require(record, "question", "sql")
        _require(record, "sql", "question")
        return _text(record, "question"), _text(record, "sql")
    if "instruction" in record or "output" in record:
        _require(record, "instruction", "output")
        _require(record, "output", "instruction")
        instruction = _text(record, "instruction")
        extra = _text(record, "input", allow_empty=True) if "input" in record else ""
        return (f"{instruction}\n{extra}" if extra else instruction), _text(record, "output")
    if "prompt" in record or "completion" in record:
        _require(record, "prompt", "completion")
        _require(record, "completion", "prompt")
        return _text(record, "prompt"), _text(record, "completion")
    keys = ", ".join(sorted(map(str, record))) or "none"
    raise RecordProblem(
        f"record matches no supported format ({'; '.join(FORMATS)}); its keys: {keys}"
    )


def to_example(record: Any) -> Example:
    """Normalise one decoded JSON value into an :class:`Example` or raise :class:`RecordProblem`."""
    if not isinstance(record, dict):
        raise RecordProblem(f"a record must be a JSON object, got {_json_type(record)}")
    domain_id = record.get("domain_id")
    if domain_id is not None and (not isinstance(domain_id, str) or not domain_id.strip()):
        raise RecordProblem("field 'domain_id' must be a non-empty string when present")
    if "messages" in record:
        prompt, completion, context = _from_messages(record["messages"])
        return Example(prompt, completion, domain_id, context)
    prompt, completion = _prompt_and_completion(record)
    return Example(prompt=prompt, completion=completion, domain_id=domain_id)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number"
