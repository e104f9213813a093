"""Validation of stream names (DESIGN §4).

A stream name is user input: it is typed on the command line, shown in logs and in the agent's answers, and
stored in the catalog. It never names a folder itself (the stream's stable id, `models.Stream.id`, does), but
names still end up in paths and log lines written by other code, so anything that could walk out of a folder,
split a log line or hide what it says is refused here, once, with a reason the user can act on.
"""

from __future__ import annotations

import unicodedata

from .models import NAME_MAX

# Unicode categories refused anywhere in a name: control characters (Cc, NUL and newlines included), and line
# and paragraph separators (they break a log line as a newline does). Lone surrogates (Cs, not encodable as
# UTF-8) are refused separately below.
_BAD_CATEGORIES = {"Cc": "a control character", "Zl": "a line separator", "Zp": "a paragraph separator"}
# Bidirectional embeddings, overrides and isolates reorder how the rest of a line is displayed, so a log line
# or a listing could show a different name than the one stored ("Trojan Source").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def validate_stream_name(name: str) -> str:
    """Return `name` unchanged if it is acceptable as a stream name, else raise a one-line ValueError.

    Accepted: any printable text of 1 to NAME_MAX characters, unicode included ("Kamera Eingang 1", "会议室"),
    with inner spaces. Refused: non-strings, empty or whitespace-only names, names longer than NAME_MAX, path
    separators ('/', '\\'), NUL and other control characters, line separators, bidirectional controls, lone
    surrogates, '.' and '..' or any name containing '..', a leading '.', and leading or trailing whitespace.
    The name is not normalised: what the user typed is what is stored and matched.
    """
    if not isinstance(name, str):
        raise ValueError(f"stream name must be a string, not {type(name).__name__}")
    if not name or name.isspace():
        raise ValueError("stream name must not be empty or only whitespace")
    if len(name) > NAME_MAX:
        raise ValueError(f"stream name is {len(name)} characters long; the limit is {NAME_MAX}")
    for ch in name:
        if ch in "/\\":
            raise ValueError(f"stream name must not contain a path separator ({ch!r})")
        if ch == "\0":
            raise ValueError("stream name must not contain a NUL character")
        category = unicodedata.category(ch)
        if category in _BAD_CATEGORIES:
            raise ValueError(f"stream name must not contain {_BAD_CATEGORIES[category]} ({_describe(ch)})")
        if category == "Cs":
            raise ValueError(f"stream name must not contain a lone surrogate ({_describe(ch)})")
        if ch in _BIDI_CONTROLS:
            raise ValueError(
                f"stream name must not contain a bidirectional control character ({_describe(ch)})"
            )
    if name in (".", ".."):
        raise ValueError(f"stream name must not be {name!r}")
    if ".." in name:
        raise ValueError("stream name must not contain '..'")
    if name.startswith("."):
        raise ValueError("stream name must not start with '.'")
    if name != name.strip():
        raise ValueError("stream name must not start or end with whitespace")
    return name
