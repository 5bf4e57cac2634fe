"""Text from the data, made safe for matplotlib labels and titles.

matplotlib parses text between two `$` as mathtext: an api_id, org_id or
command such as `$\\zzz$` would make the figure fail to draw. Every label,
legend entry, tick or title built from data goes through `plain`.
"""

from __future__ import annotations

from typing import Any


def plain(value: Any, width: int | None = None) -> str:
    """`value` as text matplotlib draws as written: cut to `width` characters, then `$` escaped."""
    text = str(value)
    if width is not None:
        text = text[:width]
    return text.replace("$", r"\$")
