"""Reading a file of Segment events one at a time: NDJSON, a JSON array, or JSON values in a row.

Streamed in chunks with `json.JSONDecoder.raw_decode`, so memory holds one event and one chunk
however long the file (ijson would do it too, as a dependency for this one loop). An event
that is not JSON is reported with its line and, outside an array, skipped to the next line;
inside an array nothing after it can be trusted, so reading stops there.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

CHUNK = 1 << 16
# Segment caps an event at 32 KB; past this a value is taken as broken, never buffered on.
MAX_EVENT_CHARS = 1 << 20
_WHITESPACE = " \t\r\n"


@dataclass(frozen=True)
class Item:
    number: int  # 1-based position of the event in the input
    line: int  # the line it starts on
    value: Any = None
    problem: str | None = None


class EventReader:
    """Iterate over the events of a binary stream; `bytes_read` follows its progress."""

    def __init__(self, stream: IO[bytes], *, chunk: int = CHUNK) -> None:
        self._stream = stream
        self._chunk = chunk
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoder = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._line = 1
        self.bytes_read = 0

    def _more(self) -> None:
        raw = self._stream.read(self._chunk)
        self.bytes_read += len(raw)
        if not raw:
            self._eof = True
        self._buf = self._buf[self._pos :] + self._text.decode(raw, final=not raw)
        self._pos = 0

    def _advance(self, to: int) -> None:
        self._line += self._buf.count("\n", self._pos, to)
        self._pos = to

    def _skip_whitespace(self) -> bool:
        """Move past whitespace; False at the end of the input."""
        while True:
            end = self._pos
            while end < len(self._buf) and self._buf[end] in _WHITESPACE:
                end += 1
            self._advance(end)
            if self._pos < len(self._buf):
                return True
            if self._eof:
                return False
            self._more()

    def _skip_line(self) -> None:
        while True:
            newline = self._buf.find("\n", self._pos)
            if newline >= 0:
                self._advance(newline + 1)
                return
            self._pos = len(self._buf)  # drop the rest of a broken line as it comes
            if self._eof:
                return
            self._more()

    def __iter__(self) -> Iterator[Item]:
        if not self._skip_whitespace():
            return
        array = self._buf[self._pos] == "["
        if array:
            self._advance(self._pos + 1)
        number = 0
        while True:
            if not self._skip_whitespace():
                if array:
                    yield Item(number + 1, self._line, problem="the JSON array is not closed")
                return
            if array and self._buf[self._pos] == "]":
                self._advance(self._pos + 1)
                if self._skip_whitespace():
                    yield Item(number + 1, self._line, problem="text after the JSON array")
                return
            if array and self._buf[self._pos] == ",":
                self._advance(self._pos + 1)
                continue
            start = self._line
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as error:
                incomplete = error.pos >= len(self._buf) - 1 or error.msg.startswith(
                    "Unterminated string"
                )
                if incomplete and not self._eof and len(self._buf) - self._pos < MAX_EVENT_CHARS:
                    self._more()
                    continue
                number += 1
                yield Item(number, start, problem=f"not JSON ({error.msg})")
                if array:
                    return
                self._skip_line()
                continue
            number += 1
            self._advance(end)
            yield Item(number, start, value)
