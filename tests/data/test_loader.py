"""Data loading: every supported format, every kind of bad input, dedupe and the split."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain_mlflow.data import Example, load_training_data, loader, split_examples
from domain_mlflow.data.loader import check_data_file, iter_raw_records
from domain_mlflow.exceptions import (
    DataEncodingError,
    DataError,
    DataFileNotFoundError,
    DataNotAFileError,
    DataTooLargeError,
    DomainMlflowError,
    EmptyDataError,
    MalformedJSONError,
    NoUsableRecordsError,
    RecordFormatError,
)
from tests.helpers import write_jsonl


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("record", "prompt", "completion"),
    [
        ({"prompt": "p", "completion": "c"}, "p", "c"),
        ({"instruction": "Add.", "input": "[1] [2]", "output": "[3]"}, "Add.\n[1] [2]", "[3]"),
        ({"instruction": "Say hi.", "output": "hi"}, "Say hi.", "hi"),
        ({"instruction": "Say hi.", "input": "", "output": "hi"}, "Say hi.", "hi"),
        ({"question": "How many?", "sql": "SELECT 1;"}, "How many?", "SELECT 1;"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
         "q", "a"),
        ({"messages": [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": "q"},
                       {"role": "assistant", "content": "a"}]},
         "system: be brief\nuser: q", "a"),
    ],
)
def test_each_format_becomes_a_prompt_and_a_completion(tmp_path, record, prompt, completion):
    loaded = load_training_data(write_jsonl(tmp_path / "d.jsonl", [record]))
    assert [(e.prompt, e.completion) for e in loaded.examples] == [(prompt, completion)]


def test_a_conversation_keeps_its_turns_for_a_chat_template(tmp_path):
    record = {"messages": [{"role": "system", "content": "be brief"},
                           {"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a"}]}
    single = {"messages": [{"role": "user", "content": "q2"},
                           {"role": "assistant", "content": "a2"}]}
    loaded = load_training_data(write_jsonl(tmp_path / "d.jsonl", [record, single]))
    assert loaded.examples == [
        Example("system: be brief\nuser: q", "a", None, (("system", "be brief"), ("user", "q"))),
        Example("q2", "a2"),
    ]


def test_json_array_and_jsonl_load_the_same_examples(tmp_path):
    records = [{"question": f"q{i}", "sql": f"s{i}"} for i in range(5)]
    array = _write(tmp_path / "a.json", json.dumps(records, indent=2))
    lines = write_jsonl(tmp_path / "b.jsonl", records)
    assert load_training_data(array).examples == load_training_data(lines).examples
    assert load_training_data(array).digest == load_training_data(lines).digest


def test_a_utf8_byte_order_mark_and_blank_lines_are_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "p", "completion": "c"}\n\n  \n')
    assert len(load_training_data(path).examples) == 1


def test_records_of_other_domains_are_left_out_and_unlabelled_ones_kept(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"domain_id": "A", "prompt": "a", "completion": "1"},
        {"domain_id": "B", "prompt": "b", "completion": "2"},
        {"prompt": "any", "completion": "3"},
    ])
    loaded = load_training_data(path, domain_id="A")
    assert [e.prompt for e in loaded.examples] == ["a", "any"]
    assert loaded.other_domain_records == 1
    assert loaded.total_records == 3


def test_duplicates_are_dropped_and_counted(tmp_path):
    record = {"prompt": "p", "completion": "c"}
    loaded = load_training_data(write_jsonl(tmp_path / "d.jsonl", [record, record, record]))
    assert len(loaded.examples) == 1
    assert loaded.duplicates_dropped == 2


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n'
                     b'{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(DataEncodingError) as caught:
        load_training_data(path)
    assert str(path) in str(caught.value)
    assert "line 2" in str(caught.value)
    assert "UTF-8" in str(caught.value)


@pytest.mark.parametrize("text", ["", "   \n\n"])
def test_an_empty_file_is_an_error(tmp_path, text):
    with pytest.raises(EmptyDataError, match="empty"):
        load_training_data(_write(tmp_path / "empty.jsonl", text))


def test_an_empty_json_array_is_an_error(tmp_path):
    with pytest.raises(EmptyDataError, match="no records"):
        load_training_data(_write(tmp_path / "empty.json", "[]"))


def test_a_file_with_only_other_domains_has_no_usable_record(tmp_path):
    path = write_jsonl(tmp_path / "other.jsonl", [{"domain_id": "B", "prompt": "b",
                                                    "completion": "c"}])
    with pytest.raises(NoUsableRecordsError, match="no record of domain 'A'"):
        load_training_data(path, domain_id="A")


def test_no_record_of_the_domain_names_at_most_ten_held_domains_and_what_to_pass(tmp_path):
    records = [{"domain_id": f"d{n:02d}", "prompt": f"p{n}-{i}", "completion": "c"}
               for n in range(12) for i in range(1 + (n == 3))]
    path = write_jsonl(tmp_path / "many.jsonl", records)
    with pytest.raises(NoUsableRecordsError) as caught:
        load_training_data(path, domain_id="A")
    message = str(caught.value)
    assert "its 13 records are of 12 other domain(s): 'd03' (2), 'd00' (1), 'd01' (1)" in message
    assert "'d09' (1) and 2 more." in message
    assert "d10" not in message and "d11" not in message
    assert "-P domain_id=ID with mlflow run, --domain-id ID with domain-mlflow train" in message


def test_malformed_json_names_the_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl",
                  '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": }\n')
    with pytest.raises(MalformedJSONError) as caught:
        load_training_data(path)
    assert f"{path}, line 2: invalid JSON" in str(caught.value)


def test_malformed_json_array_names_the_line(tmp_path):
    path = _write(tmp_path / "bad.json", '[\n{"prompt": "a", "completion": "b"},\n{"prompt": ]\n')
    with pytest.raises(MalformedJSONError, match="line 3"):
        load_training_data(path)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"question": "q"}, "has 'question' but no 'sql'"),
        ({"sql": "s"}, "has 'sql' but no 'question'"),
        ({"prompt": "p"}, "has 'prompt' but no 'completion'"),
        ({"instruction": "i", "input": "x"}, "has 'instruction' but no 'output'"),
        ({"messages": [{"role": "user", "content": "q"}]}, "at least two"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "r"}]},
         "last message must have role 'assistant'"),
        ({"text": "hello"}, "matches no supported format"),
        ({"prompt": "p", "completion": 3}, "'completion' must be a string"),
        ({"prompt": "p", "completion": "   "}, "'completion' is empty"),
        ({"domain_id": 7, "prompt": "p", "completion": "c"}, "'domain_id' must be"),
    ],
)
def test_a_record_missing_its_target_or_mistyped_names_the_line(tmp_path, record, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok", "completion": "ok"}, record])
    with pytest.raises(RecordFormatError) as caught:
        load_training_data(path)
    assert "line 2" in str(caught.value)
    assert message in str(caught.value)


def test_a_record_that_is_not_an_object_names_its_index(tmp_path):
    path = _write(tmp_path / "d.json", json.dumps([{"prompt": "p", "completion": "c"}, [1, 2]]))
    with pytest.raises(RecordFormatError, match=r"index 1: a record must be a JSON object, got an"):
        load_training_data(path)


def test_a_top_level_object_that_is_not_a_record_is_refused(tmp_path):
    path = _write(tmp_path / "d.json", json.dumps({"records": []}))
    with pytest.raises(RecordFormatError, match="line 1"):
        load_training_data(path)


def test_only_a_missing_path_is_no_such_file(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="no such file"):
        load_training_data(tmp_path / "nope.jsonl")
    with pytest.raises(DataFileNotFoundError, match="no such file"):
        load_training_data(write_jsonl(tmp_path / "f.jsonl", []) / "below-a-file.jsonl")


def test_a_directory_is_refused_as_a_directory(tmp_path):
    with pytest.raises(DataNotAFileError) as caught:
        load_training_data(tmp_path)
    assert str(caught.value) == (f"{tmp_path}: is a directory; give the JSON or JSON Lines "
                                 "file in it")


def test_a_character_device_is_not_a_regular_file():
    with pytest.raises(DataNotAFileError,
                       match=r"^/dev/null: not a regular file: a character device; "):
        load_training_data("/dev/null")


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    # Opening a FIFO nobody writes to would block; the check must not open it.
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataNotAFileError, match=r"not a regular file: a FIFO \(named pipe\)"):
        load_training_data(fifo)


def test_check_data_file_returns_the_size_of_a_regular_file(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}])
    assert check_data_file(path) == path.stat().st_size
    with pytest.raises(DataTooLargeError):
        check_data_file(path, max_bytes=path.stat().st_size - 1)


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p" * 100, "completion": "c"}])
    with pytest.raises(DataTooLargeError, match="over the limit of 50 bytes"):
        load_training_data(path, max_bytes=50)


def test_every_data_error_is_a_domain_mlflow_error():
    assert issubclass(DataError, DomainMlflowError)


# --- streaming -----------------------------------------------------------------


_TRICKY_ARRAY = (
    '\ufeff [ {"prompt": "a ] b, c", "completion": "say \\"]\\" then \\\\"} ,\n\n'
    '\t{"messages": [{"role": "user", "content": "[nested, [list]]"},\r\n'
    '   {"role": "assistant", "content": "caf\u00e9 \U0001f600 \\u00e9"}]}  ,'
    '{"question": "q", "sql": "SELECT \'[\' || \',\';", "n": [1.5e3, -0, [[]], {}]}\n]\n'
)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_a_json_array_split_anywhere_by_chunks_loads_the_same_records(
        tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(loader, "CHUNK_BYTES", chunk_bytes)
    path = tmp_path / "tricky.json"
    path.write_bytes(_TRICKY_ARRAY.encode("utf-8"))
    expected = json.loads(_TRICKY_ARRAY.removeprefix("\ufeff"))
    assert [value for _, value in iter_raw_records(str(path))] == expected
    examples = load_training_data(path).examples
    assert [e.prompt for e in examples] == ["a ] b, c", "[nested, [list]]", "q"]
    assert examples[1].completion == "caf\u00e9 \U0001f600 \u00e9"


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_records_before_a_later_problem_are_read_before_it_is_found(
        tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(loader, "CHUNK_BYTES", 16)
    record = {"prompt": "p", "completion": "c"}
    text = (f"[{json.dumps(record)},\n {{oops}}]" if suffix == "json"
            else f"{json.dumps(record)}\n{{oops}}\n")
    records = iter_raw_records(str(_write(tmp_path / f"d.{suffix}", text)))
    assert next(records)[1] == record
    with pytest.raises(MalformedJSONError, match="line 2: invalid JSON"):
        next(records)


def test_a_bad_array_element_names_its_index_line_and_column(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_BYTES", 4)
    path = _write(tmp_path / "d.json",
                  '[{"prompt": "a", "completion": "b"},\n {"prompt": "c", "completion": x}]')
    with pytest.raises(MalformedJSONError) as caught:
        load_training_data(path)
    assert str(caught.value) == (f"{path}, index 1, line 2: invalid JSON: Expecting value "
                                 "(column 32)")


def test_text_after_the_array_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_BYTES", 3)
    path = _write(tmp_path / "d.json", '[{"prompt": "a", "completion": "b"}]\n  ]x')
    with pytest.raises(MalformedJSONError) as caught:
        load_training_data(path)
    assert str(caught.value) == f"{path}, line 2: invalid JSON: Extra data (column 3)"


@pytest.mark.parametrize(("text", "index"), [
    ('[{"prompt": "a", "completion": "b"}', 0),
    ('[{"prompt": "a", "completion": "b"},\n', 1),
    ('[\n{"prompt": "a", "completion": "b"},\n{"prompt": "c", "completion": "d"', 1),
    ("[", 0),
])
def test_an_unterminated_array_names_the_index(tmp_path, monkeypatch, text, index):
    monkeypatch.setattr(loader, "CHUNK_BYTES", 5)
    with pytest.raises(MalformedJSONError, match=rf"index {index}, line \d+: invalid JSON"):
        load_training_data(_write(tmp_path / "d.json", text))


def test_an_unclosed_array_says_so(tmp_path):
    path = _write(tmp_path / "d.json", '[{"prompt": "a", "completion": "b"}  ')
    with pytest.raises(MalformedJSONError, match=r"index 0, line 1: invalid JSON: the array "
                                                 r"is not closed: expected ',' or '\]'"):
        load_training_data(path)


def test_invalid_utf8_in_a_chunked_array_names_its_line_and_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_BYTES", 4)
    path = tmp_path / "latin1.json"
    path.write_bytes(b'\xef\xbb\xbf[{"prompt": "a", "completion": "b"},\n'
                     b'{"prompt": "caf\xe9", "completion": "x"}]')
    with pytest.raises(DataEncodingError) as caught:
        load_training_data(path)
    assert str(caught.value) == (f"{path}, line 2: not valid UTF-8 (byte 0xe9 at offset 55); "
                                 "re-save the file as UTF-8")


def test_an_integer_too_long_to_convert_is_our_error(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"prompt": "p", "completion": "c", "n": '
                  + "9" * 5000 + "}\n")
    with pytest.raises(MalformedJSONError, match="line 1: invalid JSON: Exceeds the limit"):
        load_training_data(path)


# --- the split -----------------------------------------------------------------


def _examples(n: int) -> list[Example]:
    return [Example(prompt=f"p{i}", completion=f"c{i}") for i in range(n)]


def test_the_split_is_reproducible_and_ignores_file_order():
    examples = _examples(50)
    train, validation = split_examples(examples, 0.2, seed=7)
    again = split_examples(list(reversed(examples)), 0.2, seed=7)
    assert {e.prompt for e in validation} == {e.prompt for e in again[1]}
    assert len(validation) == 10
    assert len(train) == 40
    assert not {e.prompt for e in train} & {e.prompt for e in validation}


def test_another_seed_gives_another_split():
    examples = _examples(50)
    assert split_examples(examples, 0.2, 1)[1] != split_examples(examples, 0.2, 2)[1]


def test_two_examples_split_one_each_side():
    train, validation = split_examples(_examples(2), 0.1, 0)
    assert len(train) == 1
    assert len(validation) == 1


# --- properties ----------------------------------------------------------------

# Each example overwrites the same file in tmp_path, so sharing the fixture is safe.
_TMP_PATH_OK = [HealthCheck.function_scoped_fixture]

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["prompt", "completion", "question", "sql", "instruction",
                                       "input", "output", "messages", "role", "content",
                                       "domain_id"]) | st.text(max_size=5),
                      children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=_TMP_PATH_OK)
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_load_or_raise_our_error(tmp_path, raw):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(raw)
    try:
        loaded = load_training_data(path)
    except DataError as error:
        assert str(path) in str(error)
    else:
        assert loaded.examples


@settings(max_examples=300, deadline=None, suppress_health_check=_TMP_PATH_OK)
@given(values=st.lists(_json_values, max_size=6), as_array=st.booleans())
def test_arbitrary_json_records_load_or_raise_our_error(tmp_path, values, as_array):
    path = tmp_path / ("fuzz.json" if as_array else "fuzz.jsonl")
    text = json.dumps(values) if as_array else "".join(json.dumps(v) + "\n" for v in values)
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_training_data(path, domain_id="D")
    except DataError:
        return
    for example in loaded.examples:
        assert example.prompt.strip()
        assert example.completion.strip()
        assert example.domain_id in (None, "D")


@settings(max_examples=200, deadline=None, suppress_health_check=_TMP_PATH_OK)
@given(prompts=st.lists(st.text(alphabet=string.printable, min_size=1).filter(str.strip),
                        min_size=1, max_size=30, unique=True))
def test_valid_records_all_survive_loading(tmp_path, prompts):
    records = [{"prompt": p, "completion": "x"} for p in prompts]
    loaded = load_training_data(write_jsonl(tmp_path / "ok.jsonl", records))
    assert len(loaded.examples) == len({p.strip() for p in prompts})

