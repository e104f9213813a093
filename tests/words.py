"""What a test may assert of a speech model's text: its words, lower-cased, without punctuation.

Whisper's int8 kernels round differently on Intel and AMD CPUs, so the same audio comes out as "Goodbye." on
one and "Goodbye" on the other, and an unclear word may change ("eaten" / "even"). Tests compare normalised
words of the phrases they planted, at times within a tolerance, never the model's exact text.
"""

from __future__ import annotations

import re


def normalise(word: str) -> str:
    """One word as tests compare it: lower case, letters, digits and apostrophes only."""
    return re.sub(r"[^\w']", "", word.lower())


def words(text: str) -> list[str]:
    """The normalised words of a text (a transcript line, an export), empty pieces dropped."""
    return [w for w in (normalise(piece) for piece in text.split()) if w]
