"""Validation of stream names (DESIGN §4).

A stream name is user input: it is typed on the command line, shown in logs and in the agent's answers, and
stored in the catalog. It never names a folder itself (the stream's stable id, `models.Stream.id`, does), but
names still end up in paths and log lines written by other code, so anything that could walk out of a folder,
split a log line or hide what it says is refused here, once, with a reason the user can act on.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

from .models import NAME_MAX

# Unicode categories refused anywhere in a name: control characters (Cc, NUL and newlines included), format
# characters (Cf: zero-width spaces and joiners, soft hyphens, bidi marks; they make two names that look the
# same differ), and line and paragraph separators (they break a log line as a newline does). Lone surrogates
# (Cs, not encodable as UTF-8) are refused separately below.
_BAD_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
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
    surrogates, '.' and '..' or any name containing '..', a leading '.', and leading or trailing whitespace,
    and invisible format characters (zero-width space, joiners, soft hyphen: category Cf).
    The name is returned in Unicode normal form NFC, so that "é" typed precomposed or as e + U+0301 is one
    name; callers store and match the returned form.
    """
    if not isinstance(name, str):
        raise ValueError(f"stream name must be a string, not {type(name).__name__}")
    if not name or name.isspace():
        raise ValueError("stream name must not be empty or only whitespace")
    name = unicodedata.normalize("NFC", name)
    if len(name) > NAME_MAX:
        raise ValueError(f"stream name is {len(name)} characters long; the limit is {NAME_MAX}")
    for ch in name:
        if ch in "/\\":
            raise ValueError(f"stream name must not contain a path separator ({ch!r})")
        if ch == "\0":
            raise ValueError("stream name must not contain a NUL character")
        category = unicodedata.category(ch)
        if ch in _BIDI_CONTROLS:
            raise ValueError(
                f"stream name must not contain a bidirectional control character ({_describe(ch)})"
            )
        if category in _BAD_CATEGORIES:
            raise ValueError(f"stream name must not contain {_BAD_CATEGORIES[category]} ({_describe(ch)})")
        if category == "Cs":
            raise ValueError(f"stream name must not contain a lone surrogate ({_describe(ch)})")
    if name in (".", ".."):
        raise ValueError(f"stream name must not be {name!r}")
    if ".." in name:
        raise ValueError("stream name must not contain '..'")
    if name.startswith("."):
        raise ValueError("stream name must not start with '.'")
    if name != name.strip():
        raise ValueError("stream name must not start or end with whitespace")
    return name


# Letters of other scripts drawn like Latin ones (a subset of Unicode's confusables.txt, TR39): Cyrillic and
# Greek lookalikes of Latin letters and digits, plus a few common symbols. A name is reduced to its
# "skeleton" (NFKC, case folded, each lookalike replaced by its Latin twin, marks dropped); two names with the
# same skeleton look alike on a screen. We keep this table ourselves: the registry's confusables packages are
# unmaintained (confusables 1.2, 2021) or only flag mixed scripts (confusable-homoglyphs) without a skeleton.
_LOOKALIKES = str.maketrans(
    {
        # Cyrillic (lower case after casefold)
        "а": "a", "в": "b", "с": "c", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j",
        "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "т": "t", "у": "y",
        "х": "x", "ԝ": "w", "ь": "b", "ӏ": "l", "ԁ": "d", "ɡ": "g", "ѵ": "v", "г": "r",
        # Greek
        "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j", "ζ": "z", "μ": "u",
        # Latin lookalikes of other Latin letters and digits
        "ı": "i", "ȷ": "j", "ℓ": "l", "0": "o", "1": "l", "|": "l", "ǀ": "l", "5": "s",
        # dashes and spaces
        "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "−": "-", "_": "-",
    }
)  # fmt: skip


def skeleton(name: str) -> str:
    """What a name looks like, for comparing names (after Unicode TR39's skeleton, with a small table).

    NFKC folds compatibility forms (full-width letters, ligatures), case folding makes "Sample" and
    "sample" alike, combining marks are dropped ("sämple" reads as "sample" at a glance), lookalike letters
    become their Latin twins and runs of whitespace one space.
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.translate(_LOOKALIKES).split())


def confusable_with(name: str, existing: Iterable[str]) -> str | None:
    """The first of `existing` that looks like `name` but is not it, or None."""
    target = skeleton(name)
    for other in existing:
        if other != name and skeleton(other) == target:
            return other
    return None


def refuse_confusable(name: str, existing: Iterable[str]) -> None:
    """ValueError when `name` is new but looks like a stream that exists (Cyrillic а for Latin a, ...)."""
    other = confusable_with(name, existing)
    if other is not None:
        raise ValueError(
            f"stream name {name!r} looks like the existing stream {other!r} "
            f"({name!a} vs {other!a}); pick a clearly different name"
        )


def path_component(name: str) -> str:
    """`name` as one path component: [A-Za-z0-9._-] kept, anything else replaced, a hash added if changed.

    For folders that other components name after a stream (the surveillance plugin's `<data>/thumbs/<…>/`),
    here so that the store's retention and `status` find them by the same rule.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60]
    if safe != name:
        safe = f"{safe or 'x'}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return safe
