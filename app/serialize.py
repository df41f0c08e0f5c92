"""Plain JSON data from the frozen dataclasses of the Rocq layer, fast.

`dataclasses.asdict` deep-copies every leaf; a library's globs hold hundreds of thousands of
references, where that costs more than the build it describes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass type, or None for any other type."""
    if dataclasses.is_dataclass(cls):
        return tuple(field.name for field in dataclasses.fields(cls))
    return None


def plain(value: Any) -> Any:
    """Dataclasses become dicts, tuples become lists, recursively; other values stay."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    names = _field_names(type(value))
    if names is None:
        return value
    return {name: plain(getattr(value, name)) for name in names}
