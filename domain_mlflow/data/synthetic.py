"""Deterministic synthetic corpora for the bundled example domains.

The example files under ``examples/data/`` and the pretraining corpus of the
built-in tiny base model both come from here, so an installed package can
rebuild its base model without the repository's ``examples/`` folder.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from domain_mlflow.data.records import Example, to_example

SQL_DOMAIN = "0x5678-SQLAgent"
VECTOR_DOMAIN = "0x3579-VectorProcessingAgent"

# Seeds of the shipped example files; the pretraining corpus uses other seeds and
# leaves out every prompt that the example files contain.
EXAMPLE_SEED = 20241104
SQL_EXAMPLE_SIZE = 600
VECTOR_EXAMPLE_SIZE = 400

_TABLES: dict[str, dict[str, list[str]]] = {
    "customers": {
        "text": ["name", "city", "country", "segment"],
        "number": ["age", "credit_limit", "signup_year"],
    },
    "orders": {
        "text": ["status", "channel", "region"],
        "number": ["amount", "quantity", "order_year"],
    },
    "products": {
        "text": ["category", "brand", "color"],
        "number": ["price", "stock", "rating"],
    },
    "employees": {
        "text": ["department", "title", "office"],
        "number": ["salary", "hire_year", "bonus"],
    },
}

_VALUES: dict[str, list[str]] = {
    "name": ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"],
    "city": ["paris", "berlin", "madrid", "rome", "oslo", "lisbon", "vienna", "dublin"],
    "country": ["france", "germany", "spain", "italy", "norway", "portugal"],
    "segment": ["retail", "enterprise", "startup", "public"],
    "status": ["shipped", "pending", "cancelled", "returned", "delivered"],
    "channel": ["web", "mobile", "store", "phone"],
    "region": ["north", "south", "east", "west"],
    "category": ["books", "garden", "toys", "audio", "kitchen", "sports"],
    "brand": ["acme", "globex", "initech", "umbrella", "hooli"],
    "color": ["red", "blue", "green", "black", "white"],
    "department": ["sales", "finance", "legal", "support", "research"],
    "title": ["analyst", "manager", "engineer", "director"],
    "office": ["london", "tokyo", "toronto", "sydney"],
}

_SQL_TEMPLATES: list[tuple[list[str], str]] = [
    (
        ["How many {table} are there?", "Count all {table}.", "What is the number of {table}?"],
        "SELECT COUNT(*) FROM {table};",
    ),
    (
        ["List the {col} of every row in {table}.", "Show all {col} values from {table}."],
        "SELECT {col} FROM {table};",
    ),
    (
        ["Show {table} whose {col} is {val}.", "Find all {table} with {col} {val}."],
        "SELECT * FROM {table} WHERE {col} = '{val}';",
    ),
    (
        ["What is the average {num} of {table}?", "Compute the mean {num} across {table}."],
        "SELECT AVG({num}) FROM {table};",
    ),
    (
        ["Find {table} with {num} above {n}.", "Which {table} have {num} greater than {n}?"],
        "SELECT * FROM {table} WHERE {num} > {n};",
    ),
    (
        ["Find {table} with {num} below {n}.", "Which {table} have {num} less than {n}?"],
        "SELECT * FROM {table} WHERE {num} < {n};",
    ),
    (
        ["Count {table} per {col}.", "How many {table} are there for each {col}?"],
        "SELECT {col}, COUNT(*) FROM {table} GROUP BY {col};",
    ),
    (
        ["Show the top {k} {table} by {num}.", "List the {k} {table} with the highest {num}."],
        "SELECT * FROM {table} ORDER BY {num} DESC LIMIT {k};",
    ),
    (
        ["What is the total {num} of {table} whose {col} is {val}?",
         "Sum the {num} of {table} where {col} is {val}."],
        "SELECT SUM({num}) FROM {table} WHERE {col} = '{val}';",
    ),
    (
        ["What is the highest {num} in {table}?", "Give the maximum {num} of {table}."],
        "SELECT MAX({num}) FROM {table};",
    ),
]


def _sql_record(rng: random.Random) -> dict[str, str]:
    phrasings, sql = rng.choice(_SQL_TEMPLATES)
    table = rng.choice(sorted(_TABLES))
    col = rng.choice(_TABLES[table]["text"])
    slots = {
        "table": table,
        "col": col,
        "val": rng.choice(_VALUES[col]),
        "num": rng.choice(_TABLES[table]["number"]),
        "n": str(rng.randint(1, 999)),
        "k": str(rng.randint(2, 20)),
    }
    return {
        "domain_id": SQL_DOMAIN,
        "question": rng.choice(phrasings).format(**slots),
        "sql": sql.format(**slots),
    }


def _vector(rng: random.Random, size: int) -> list[int]:
    return [rng.randint(-9, 9) for _ in range(size)]


def _fmt(vector: list[int]) -> str:
    return "[" + ", ".join(str(x) for x in vector) + "]"


def _vector_record(rng: random.Random) -> dict[str, str]:
    size = rng.randint(2, 4)
    a, b = _vector(rng, size), _vector(rng, size)
    k = rng.randint(2, 5)
    operations: list[tuple[str, str]] = [
        ("Add the two vectors.", _fmt([x + y for x, y in zip(a, b, strict=True)])),
        ("Subtract the second vector from the first.",
         _fmt([x - y for x, y in zip(a, b, strict=True)])),
        ("Compute the dot product.", str(sum(x * y for x, y in zip(a, b, strict=True)))),
        (f"Scale the first vector by {k}.", _fmt([k * x for x in a])),
        ("Return the index of the largest element of the first vector.", str(a.index(max(a)))),
        ("Compute the L1 norm of the first vector.", str(sum(abs(x) for x in a))),
    ]
    instruction, output = rng.choice(operations)
    return {
        "domain_id": VECTOR_DOMAIN,
        "instruction": instruction,
        "input": f"{_fmt(a)} {_fmt(b)}",
        "output": output,
    }


_GENERATORS: dict[str, Callable[[random.Random], dict[str, str]]] = {
    SQL_DOMAIN: _sql_record,
    VECTOR_DOMAIN: _vector_record,
}


def _key(record: dict[str, str]) -> str:
    return record.get("question") or f"{record.get('instruction')}\n{record.get('input')}"


def generate_records(
    domain_id: str, count: int, seed: int, exclude: frozenset[str] = frozenset()
) -> list[dict[str, str]]:
    """Return ``count`` distinct records of a bundled domain, reproducible from ``seed``."""
    make = _GENERATORS[domain_id]
    rng = random.Random(f"{domain_id}:{seed}")
    records: list[dict[str, str]] = []
    seen = set(exclude)
    attempts = 0
    while len(records) < count:
        attempts += 1
        if attempts > count * 50:
            raise ValueError(f"cannot draw {count} distinct records for {domain_id}")
        record = make(rng)
        if _key(record) in seen:
            continue
        seen.add(_key(record))
        records.append(record)
    return records


def example_records() -> dict[str, list[dict[str, str]]]:
    """The records of the shipped example files, by domain."""
    return {
        SQL_DOMAIN: generate_records(SQL_DOMAIN, SQL_EXAMPLE_SIZE, EXAMPLE_SEED),
        VECTOR_DOMAIN: generate_records(VECTOR_DOMAIN, VECTOR_EXAMPLE_SIZE, EXAMPLE_SEED),
    }


def pretraining_examples(seed: int, per_domain: int) -> Iterator[Example]:
    """Examples for the tiny base's pretraining, disjoint from the example files' prompts."""
    for domain_id, shipped in example_records().items():
        exclude = frozenset(_key(record) for record in shipped)
        for record in generate_records(domain_id, per_domain, seed, exclude):
            yield to_example(record)
