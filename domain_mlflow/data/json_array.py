"""Reading a JSON array one element at a time from text that arrives in chunks.

Memory holds one chunk and the element being decoded, never the whole text: each
element is decoded with :meth:`json.JSONDecoder.raw_decode` from a buffer that
drops what it has passed. The values are exactly those of ``json.loads``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as json.loads skips it
_NUMBER_TAIL = re.compile(r"[0-9eE.+-]*")
# json reports some errors at the start of a token although the token only ran off
# the end of the buffer ("-Infinit", "\ud83d\ude0"); the longest such token is shorter.
_NEAR_END = 16


class JSONArrayProblem(ValueError):
    """Why the text is not a valid JSON array; the loader adds the file.

    ``index`` is the element being read (None outside the elements), ``line`` the
    1-based line of the problem.
    """

    def __init__(self, message: str, index: int | None, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.line = line

    @property
    def location(self) -> str:
        where = f"line {self.line}"
        return where if self.index is None else f"index {self.index}, {where}"


class NotAJSONArray(JSONArrayProblem):
    """The text is valid JSON, or not, but does not start with ``[``."""


def iter_json_array(chunks: Iterable[str]) -> Iterator[Any]:
    """Yield the elements of the JSON array whose text is ``''.join(chunks)``.

    Raises :class:`JSONArrayProblem` where ``json.loads`` of the whole text would
    fail, after yielding the elements before the problem.
    """
    return _ArrayReader(iter(chunks)).elements()


class _ArrayReader:
    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self._buffer = ""
        self._pos = 0
        self._eof = False
        self._line = 1  # the line of _buffer[0]
        self._column = 0  # characters before _buffer[0] on that line
        self._decode = json.JSONDecoder().raw_decode

    def elements(self) -> Iterator[Any]:
        if self._significant() != "[":
            raise NotAJSONArray("expected a JSON array", None, self._line_at(self._pos))
        self._pos += 1
        if self._significant() == "]":
            self._pos += 1
            self._expect_end()
            return
        for index in itertools.count():
            value = self._element(index)
            yield value
            closing = self._buffer[self._pos] == "]"
            self._pos += 1
            if closing:
                self._expect_end()
                return

    def _element(self, index: int) -> Any:
        """Decode element ``index``; leave the position at the ',' or ']' after it."""
        while True:
            self._significant()
            try:
                value, end = self._decode(self._buffer, self._pos)
            except json.JSONDecodeError as error:
                if self._eof or not self._maybe_cut_off(error):
                    raise self._problem(error.msg, index, error.pos) from None
                self._grow()
                continue
            except RecursionError:
                raise JSONArrayProblem("JSON nested too deeply", index,
                                       self._line_at(self._pos)) from None
            except ValueError as error:  # e.g. an integer of more than 4300 digits
                raise JSONArrayProblem(f"invalid JSON: {error}", index,
                                       self._line_at(self._pos)) from None
            after = _WHITESPACE.match(self._buffer, end).end()
            if after < len(self._buffer) and self._buffer[after] in ",]":
                self._pos = after
                return value
            if self._eof:
                if after == len(self._buffer):
                    raise self._problem("the array is not closed: expected ',' or ']'",
                                        index, after)
                raise self._problem("Expecting ',' delimiter", index, after)
            if after < len(self._buffer) and not (
                _is_number(value) and _NUMBER_TAIL.fullmatch(self._buffer, end)
            ):
                raise self._problem("Expecting ',' delimiter", index, after)
            # The element, or the number it is, may go on in the next chunk.
            self._grow()

    def _maybe_cut_off(self, error: json.JSONDecodeError) -> bool:
        """Whether more text could make this error go away."""
        return (error.msg.startswith("Unterminated string")
                or len(self._buffer) - error.pos <= _NEAR_END)

    def _significant(self) -> str:
        """The next character that is not whitespace ("" at the end of the text)."""
        while True:
            self._pos = _WHITESPACE.match(self._buffer, self._pos).end()
            if self._pos < len(self._buffer):
                return self._buffer[self._pos]
            if self._eof:
                return ""
            self._grow()

    def _expect_end(self) -> None:
        if self._significant():
            raise self._problem("Extra data", None, self._pos)

    def _grow(self) -> None:
        """Drop what has been read, then read until the rest has doubled (or the text ends).

        Doubling keeps an element spread over many chunks linear to decode."""
        self._drop_consumed()
        parts, size = [self._buffer], len(self._buffer)
        target = max(2 * size, size + 1)
        while size < target:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._eof = True
                break
            parts.append(chunk)
            size += len(chunk)
        self._buffer = "".join(parts)

    def _drop_consumed(self) -> None:
        consumed = self._pos
        newline = self._buffer.rfind("\n", 0, consumed)
        if newline >= 0:
            self._line += self._buffer.count("\n", 0, consumed)
            self._column = consumed - newline - 1
        else:
            self._column += consumed
        self._buffer = self._buffer[consumed:]
        self._pos = 0

    def _line_at(self, pos: int) -> int:
        return self._line + self._buffer.count("\n", 0, pos)

    def _problem(self, message: str, index: int | None, pos: int) -> JSONArrayProblem:
        newline = self._buffer.rfind("\n", 0, pos)
        column = pos - newline if newline >= 0 else self._column + pos + 1
        return JSONArrayProblem(f"invalid JSON: {message} (column {column})", index,
                                self._line_at(pos))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
