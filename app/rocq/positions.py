"""The one place where Rocq's byte offsets meet Python's character offsets.

Rocq (the XML protocol, `-time` output, `.glob` files) counts UTF-8 bytes; Python strings count
code points; editors and the seed formats count 0-based lines and characters. MathComp has
non-ASCII text (notations such as `∑`, `⊗`), so mixing these up shifts every later position.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    """A 0-based line and character (code point) position, as pytanque and LSP use."""

    line: int
    character: int


class SourceText:
    """A source text with conversions between byte offsets, character offsets and positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode("utf-8")
        self._ascii = len(self.data) == len(text)
        # Byte offset of the start of each character, only needed for non-ASCII text.
        self._char_to_byte: list[int] | None = None
        if not self._ascii:
            offsets, byte = [], 0
            for char in text:
                offsets.append(byte)
                byte += len(char.encode("utf-8"))
            offsets.append(byte)
            self._char_to_byte = offsets
        self._line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def byte_to_char(self, byte: int) -> int:
        """Character offset of a byte offset (a byte inside a character maps to that character)."""
        if self._char_to_byte is None:
            return byte
        return bisect.bisect_right(self._char_to_byte, byte) - 1

    def char_to_byte(self, char: int) -> int:
        """Byte offset of a character offset."""
        if self._char_to_byte is None:
            return char
        return self._char_to_byte[char]

    def byte_slice(self, start: int, stop: int) -> str:
        """The text between two byte offsets."""
        return self.data[start:stop].decode("utf-8")

    def position(self, char: int) -> Position:
        """Line and character of a character offset."""
        line = bisect.bisect_right(self._line_starts, char) - 1
        return Position(line, char - self._line_starts[line])

    def offset(self, position: Position) -> int:
        """Character offset of a line and character."""
        return self._line_starts[position.line] + position.character

    def byte_position(self, byte: int) -> Position:
        """Line and character of a byte offset."""
        return self.position(self.byte_to_char(byte))
