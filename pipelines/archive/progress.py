"""How far a replay or rebuild is: the archive code reports, the CLI shows (or not)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def phase(self, description: str, total: int | None = None) -> None:
        """A new step; `total` units of work when known (for the ETA)."""

    def advance(self, units: int = 1) -> None:
        """`units` more of the current step done."""


class NoProgress:
    """Reports nowhere: the library default, and the CLI's when stderr is not a terminal."""

    def phase(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, units: int = 1) -> None:
        pass
