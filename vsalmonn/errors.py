"""One rule for turning a failure into the one line a log, a CLI's stderr or an agent's tool result shows.

Every component reports faults it survives (a broken file, a plugin that raised, a driver's error) as one
line, because a reason that spans lines breaks log parsing and hides the next message. This module imports
nothing from vsalmonn, so every layer of DESIGN §1 may use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

LIMIT = 300  # characters: a reason longer than this is a dump, not a reason


def one_line(reason: BaseException | object, *, typed: bool = False, limit: int = LIMIT) -> str:
    """`reason` (an exception or any text) with every run of whitespace made one space, cut at `limit`.

    `typed` puts the exception's class name first (``OSError: ...``): for faults whose message alone does not
    say what failed. An exception without a message is named by its class.
    """
    text = " ".join(str(reason).split())
    if isinstance(reason, BaseException):
        name = type(reason).__name__
        text = f"{name}: {text}" if typed and text else text or name
    return text if len(text) <= limit else text[: limit - 3] + "..."


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice `word` was most likely meant to be (case-insensitive), or None when none is close."""
    by_lower = {choice.lower(): choice for choice in choices}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices`, or "": the tail of an "unknown ..." message."""
    hint = closest(word, choices)
    return f" (did you mean {hint!r}?)" if hint else ""
