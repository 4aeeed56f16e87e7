"""The one root of every failure seglab expects and explains to its user.

A :class:`SeglabError` carries a message (what is wrong) and an optional hint (what to do).
The CLI catches it once, prints both and exits 1; the dashboard shows it as a
notification. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class SeglabError(Exception):
    """An expected failure with a message for the user and an optional hint."""

    def __init__(self, message: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.message else super().__str__()

    def describe(self) -> str:
        """The message, then the hint on its own line (when there is one)."""
        text = str(self)
        return f"{text}\nhint: {self.hint}" if self.hint else text


class ConfigurationError(SeglabError):
    """A configuration file (recipe, hosts.yaml, layout) that cannot be used."""


class RunError(SeglabError):
    """A run operation that cannot be done (wrong status, missing files, lost host)."""


class PlacementError(SeglabError):
    """A placement that can never succeed (unknown host or GPU, too many GPUs asked)."""


class UnavailableError(SeglabError):
    """Something seglab needs cannot be reached now: an engine, a host, a driver."""


class UnknownNameError(SeglabError):
    """A name (run, host, dataset, variant) that is not known; lists the near misses."""

    def __init__(self, kind: str, name: str, known: Iterable[str] = (), where: str = "") -> None:
        self.kind = kind
        self.name = name
        self.known = list(known)
        listing = f"; known: {', '.join(self.known)}" if 0 < len(self.known) <= 12 else ""
        super().__init__(f"no {kind} {name!r}{where}{did_you_mean(name, self.known)}{listing}")
