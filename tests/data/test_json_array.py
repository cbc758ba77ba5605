"""The streaming JSON array reader: bounded reads, and json.loads's values and failures."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain_mlflow.data.json_array import JSONArrayProblem, NotAJSONArray, iter_json_array

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _chunks(text: str, size: int, taken: list[int] | None = None) -> Iterator[str]:
    """``text`` in pieces of ``size``; ``taken`` counts the characters handed out."""
    for start in range(0, len(text), size):
        piece = text[start : start + size]
        if taken is not None:
            taken[0] += len(piece)
        yield piece


def test_a_json_array_is_decoded_before_the_rest_is_read():
    record = {"prompt": "p" * 50, "completion": "c" * 50}
    text = json.dumps([record] * 10_000)
    taken = [0]
    elements = iter_json_array(_chunks(text, 64, taken))
    first_three = [next(elements) for _ in range(3)]
    assert first_three == [record] * 3
    # Three records and at most two chunks beyond them, of a text of about a megabyte.
    assert taken[0] <= 3 * len(json.dumps(record)) + 2 + 2 * 64
    assert len(text) > 1_000_000


@pytest.mark.parametrize("text", ['{"prompt": "p"}', "1", "", "  \n"])
def test_text_that_does_not_start_an_array_is_not_a_json_array(text):
    with pytest.raises(NotAJSONArray, match="expected a JSON array"):
        list(iter_json_array([text]))


def test_an_element_over_many_chunks_is_decoded_whole():
    record = {"prompt": "x" * 10_000, "completion": ["a", {"b": [1.25e-3, None]}] * 50}
    text = json.dumps([record, record], indent=1)
    assert list(iter_json_array(_chunks(text, 3))) == [record, record]


def test_a_problem_names_the_element_and_the_line():
    text = '[\n  {"a": 1},\n  {"a": 2}\n  {"a": 3}\n]'
    with pytest.raises(JSONArrayProblem) as caught:
        list(iter_json_array(_chunks(text, 4)))
    assert caught.value.location == "index 1, line 4"
    assert caught.value.message == "invalid JSON: Expecting ',' delimiter (column 3)"


_formats = st.sampled_from([{}, {"indent": 2}, {"indent": 0}, {"separators": (",", ":")},
                            {"separators": (" , ", " :  ")}])


def _streamed(text: str, chunk_size: int) -> list[object]:
    return list(iter_json_array(_chunks(text, chunk_size)))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_json_values, max_size=8), chunk_size=st.integers(1, 40),
       layout=_formats)
def test_the_streaming_reader_yields_what_json_loads_returns(values, chunk_size, layout):
    text = json.dumps(values, **layout)
    assert _streamed(text, chunk_size) == json.loads(text)


@settings(max_examples=500, deadline=None)
@given(values=st.lists(_json_values, min_size=1, max_size=5), chunk_size=st.integers(1, 24),
       data=st.data())
def test_the_streaming_reader_fails_where_json_loads_fails(values, chunk_size, data):
    text = json.dumps(values)
    # One edit: a character dropped or one of JSON's own characters put in.
    at = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.sampled_from(["", "[", "]", ",", '"', "\\", "1", "e", " ", "x"]))
    edited = text[:at] + insert + text[at + (not insert):]
    assert _streamed_or_error(edited, chunk_size) == _loaded_as_array_or_error(edited)


def _streamed_or_error(text: str, chunk_size: int) -> object:
    try:
        return _streamed(text, chunk_size)
    except JSONArrayProblem:
        return "error"


def _loaded_as_array_or_error(text: str) -> object:
    try:
        value = json.loads(text)
    except ValueError:
        return "error"
    return value if isinstance(value, list) else "error"
