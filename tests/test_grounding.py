"""The answer check of `vsalmonn.agent.grounding`: times found in every form a model writes them, each checked
against the moments shown, rewritten or its sentence dropped; people no evidence names dropped; streamed
text held until its sentence is checked."""

from __future__ import annotations

import pytest

from vsalmonn.agent.grounding import Grounding, SentenceGate, find_times, split_sentences, times_inside

# What `make demo` answered to "When does someone say goodbye?" (issue 18); the evidence was 00:00:25.
DEMO_BAD = (
    "The person says goodbye at 00.00:10 in sample, and the other person says goodbye to them at 0.01:10."
)
GOODBYE = {
    "stream": "sample",
    "t0": 25.4,
    "t1": 27.1,
    "score": 0.8,
    "modality": "audio",
    "evidence": ["said: 'Goodbye.'", "seen: street sign (0.31)"],
}


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("00:01:05", 65),
        ("0:01:05", 65),
        ("1:05", 65),
        ("65 s", 65),
        ("65s", 65),
        ("65 seconds", 65),
        ("1 min 5 s", 65),
        ("1 minute and 5 seconds", 65),
        ("00.00:10", 10),
        ("0.01:10", 70),
        ("0000:10:00", 600),
    ],
)
def test_times_are_found_in_every_form_a_model_writes_them(written: str, seconds: float) -> None:
    found = find_times(f"It happens at {written}, see there.")
    assert [m.seconds for m in found] == [seconds] and found[0].text == written


def test_the_demos_invented_answer_is_dropped_whole() -> None:
    grounding = Grounding([GOODBYE], "When does someone say goodbye?")
    assert not times_inside(DEMO_BAD, [(25.4, 27.1)])
    assert grounding.check(DEMO_BAD).dropped == "time"
    # Even with its times right, the second person is invented: nobody but "someone" is in the evidence.
    assert grounding.check("The person says goodbye at 00:00:25.").dropped == "person"
    assert grounding.check("The other person says goodbye at 00:00:25.").dropped == "person"


def test_a_time_inside_a_moment_is_kept_and_rewritten_as_hh_mm_ss() -> None:
    grounding = Grounding([GOODBYE], "When does someone say goodbye?")
    for written in ("0.00:25", "0:00:26", "0:26", "26 s", "27 seconds"):
        checked = grounding.check(f"Someone says goodbye at {written} in sample.")
        assert checked.dropped is None, written
        assert find_times(checked.text)[0].text in ("00:00:25", "00:00:26", "00:00:27"), checked.text
    assert grounding.check("Someone says goodbye at 00:00:29.").dropped == "time"  # past the ±1 s
    assert grounding.cited([26.0]) == [GOODBYE]


def test_people_the_question_names_may_be_spoken_of() -> None:
    grounding = Grounding([GOODBYE], "When does the man say goodbye?")
    assert grounding.check("The man says goodbye at 00:00:25.").dropped is None
    assert grounding.check("The woman says goodbye at 00:00:25.").dropped == "person"
    crowd = Grounding([GOODBYE], "When do people walk along the street?")
    assert crowd.check("A person walks along the street.").dropped is None, "people licenses a person"


def test_the_gate_passes_on_only_checked_sentences_as_they_end() -> None:
    grounding = Grounding([GOODBYE], "When does someone say goodbye?")
    seen: list[str] = []
    gate = SentenceGate(grounding, seen.append)
    text = f'{DEMO_BAD} At 0.00:25 in sample, someone says: "Goodbye." It is the end'
    for i in range(0, len(text), 3):  # pieces that split times and sentences anywhere
        gate.feed(text[i : i + 3])
        assert "00.00:10" not in "".join(seen) and "person" not in "".join(seen)
    assert seen == ['At 00:00:25 in sample, someone says: "Goodbye."'], "nothing before its sentence ends"
    final = gate.finish()
    assert final == "".join(seen) == 'At 00:00:25 in sample, someone says: "Goodbye." It is the end'
    assert [why for _, why in gate.dropped] == ["time"]


def test_sentences_end_at_their_marks_not_inside_times() -> None:
    done, rest = split_sentences("At 00.00:10 a car. Then 1.5 s later? Yes! And")
    assert done == ["At 00.00:10 a car.", "Then 1.5 s later?", "Yes!"] and rest == " And"


def test_a_time_of_day_inside_a_live_moments_wall_clock_span_is_kept_as_written() -> None:
    live = {
        "stream": "cam", "t0": 65.0, "t1": 72.0, "modality": "audio", "evidence": ["said: 'Goodbye.'"],
        "wall_t0": "2026-12-03T14:01:05Z", "wall_t1": "2026-12-03T14:01:12Z",
    }  # fmt: skip
    grounding = Grounding([live], "when did someone say goodbye today?")
    kept = grounding.check("Someone says goodbye at 14:01:07 UTC.")
    assert kept.text == "Someone says goodbye at 14:01:07 UTC." and kept.times == (67.0,)
    assert grounding.cited(kept.times) == [live]
    assert grounding.check("Someone says goodbye at 00:01:06.").text == "Someone says goodbye at 00:01:06."
    assert grounding.check("Someone says goodbye at 15:30:00.").dropped == "time"  # neither clock holds it
    a_file = {k: v for k, v in live.items() if not k.startswith("wall")}
    assert Grounding([a_file], "when?").check("It is at 14:01:07.").dropped == "time"
