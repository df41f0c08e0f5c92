"""Counted nouns in the lines rocqcot prints: `1 example`, `2 examples`."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`count` and the noun, plural unless the count is one (`many` when not just `+s`)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"
