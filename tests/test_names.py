"""Stream names are user input that ends up in paths and logs: what validate_stream_name lets through."""

from __future__ import annotations

import pytest

from vsalmonn.memory_store.models import NAME_MAX
from vsalmonn.memory_store.names import validate_stream_name

GOOD = [
    "cam1",
    "Kamera Eingang 1",
    "会议室",
    "Café – Terrasse",
    "front-door_2024.mp4",  # a single dot inside is fine
    "a",
    "x" * NAME_MAX,
    "会" * NAME_MAX,  # the limit counts characters, not bytes
    "end.",
    "🎥 lobby",
]

BAD = [
    (None, "must be a string"),
    (b"cam1", "must be a string"),
    (42, "must be a string"),
    ("", "empty"),
    ("   ", "empty"),
    ("\t\n", "empty"),
    ("x" * (NAME_MAX + 1), f"limit is {NAME_MAX}"),
    ("a/b", "path separator"),
    ("/etc", "path separator"),
    ("a\\b", "path separator"),
    ("a\0b", "NUL"),
    ("a\nb", "control character"),
    ("a\rb", "control character"),
    ("a\tb", "control character"),
    ("a\x1bb", "control character"),
    ("a\x7fb", "control character"),
    ("a\x85b", "control character"),
    ("a\u2028b", "line separator"),
    ("a\u2029b", "paragraph separator"),
    ("a\u202eb", "bidirectional"),
    ("a\ud800b", "surrogate"),
    (".", "must not be '.'"),
    ("..", "must not be '..'"),
    ("a..b", "'..'"),
    ("..hidden", "'..'"),
    ("cam..", "'..'"),
    (".hidden", "start with '.'"),
    (" cam", "whitespace"),
    ("cam ", "whitespace"),
    ("cam\u3000", "whitespace"),  # ideographic space
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_are_returned_unchanged(name: str) -> None:
    assert validate_stream_name(name) == name


@pytest.mark.parametrize(("name", "reason"), BAD, ids=[repr(n)[:20] for n, _ in BAD])
def test_bad_names_are_refused_with_a_one_line_reason(name: object, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_stream_name(name)  # type: ignore[arg-type]
    message = str(info.value)
    assert reason in message
    assert "\n" not in message and "\r" not in message
    assert message.isprintable()  # the reason itself never echoes the control characters it refuses
