"""Text from outside (a node name, a quoted value in an error) shown as itself.

Control and format characters are spelled out (`\\n`, `\\x1b`, `\\u202e`), so such text can neither
start a forged line in a log nor restyle a terminal, and what it held stays readable.
"""

from __future__ import annotations


def spelled_out(text: str) -> str:
    """`text` with every character that is not printable written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
