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


def test_names_are_nfc_and_invisible_characters_are_refused() -> None:
    assert validate_stream_name("Cafe\u0301") == "Caf\u00e9"
    for invisible in ("\u200b", "\u200d", "\u00ad", "\ufeff", "\u2060"):
        with pytest.raises(ValueError, match="invisible"):
            validate_stream_name(f"sam{invisible}ple")


@pytest.mark.parametrize(
    "lookalike",
    ["s\u0430mple", "SAMPLE", "sampl\u0435", "\uff53ample", "s\u0251mple".replace("\u0251", "\u03b1")],
)
def test_names_confusable_with_an_existing_stream_are_refused(lookalike: str) -> None:
    from vsalmonn.memory_store.names import confusable_with, refuse_confusable

    assert confusable_with(lookalike, ["other", "sample"]) == "sample"
    with pytest.raises(ValueError, match="looks like the existing stream 'sample'"):
        refuse_confusable(lookalike, ["sample"])
    assert confusable_with("sample 2", ["sample"]) is None
    assert confusable_with("sample", ["sample"]) is None, "a name is not confusable with itself"


def test_the_catalog_refuses_a_confusable_new_stream(tmp_path) -> None:
    from vsalmonn.memory_store.catalog import Catalog

    with Catalog.for_data_dir(tmp_path) as catalog:
        catalog.ensure_stream("sample")
        with pytest.raises(ValueError, match="looks like"):
            catalog.ensure_stream("s\u0430mple")
        assert [s.name for s in catalog.streams()] == ["sample"]
