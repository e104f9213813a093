"""The one-line rule for reasons (vsalmonn.errors.one_line)."""

from __future__ import annotations

from vsalmonn.errors import LIMIT, closest, did_you_mean, one_line


def test_a_multi_line_message_becomes_one_line() -> None:
    assert (
        one_line(ValueError("bad header\n  at byte 12\t(truncated)")) == "bad header at byte 12 (truncated)"
    )


def test_typed_names_the_class_first_and_an_empty_message_is_the_class() -> None:
    assert one_line(OSError("disk full"), typed=True) == "OSError: disk full"
    assert one_line(OSError("disk full")) == "disk full"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(KeyError(), typed=True) == "KeyError"


def test_text_is_accepted_and_long_reasons_are_cut() -> None:
    assert one_line("  two\nlines ") == "two lines"
    cut = one_line("x" * 1000)
    assert len(cut) == LIMIT and cut.endswith("...")
    assert one_line("y" * 50, limit=10) == "yyyyyyy..."


def test_did_you_mean_names_the_closest_choice_or_nothing() -> None:
    assert did_you_mean("serach", ["search", "status", "ask"]) == " (did you mean 'search'?)"
    assert did_you_mean("VISUL_SLOTS", ["visual_slots", "audio_slots"]) == " (did you mean 'visual_slots'?)"
    assert did_you_mean("zzz", ["search", "status"]) == ""
    assert closest("Staus", ["Status", "search"]) == "Status"
