"""`ask` reads a window from the question's words (issue 18): times of day placed by a day or am/pm, and
spans back from now; a bare clock time stays stream time. Pure functions: fast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vsalmonn.tools.wallclock import QUESTION_AROUND_S, question_window

NOW = datetime(2026, 12, 3, 16, 30, tzinfo=UTC)
AROUND = timedelta(seconds=QUESTION_AROUND_S)


def today(hours: int, minutes: int = 0, days_back: int = 0) -> datetime:
    return datetime(2026, 12, 3 - days_back, hours, minutes, tzinfo=UTC)


@pytest.mark.parametrize(
    ("question", "window"),
    [
        ("What happened at 14:00 today?", (today(14) - AROUND, today(14) + AROUND)),
        ("who came in around 2:30 pm?", (today(14, 30) - AROUND, today(14, 30) + AROUND)),
        (
            "what did the camera see yesterday at 9am",
            (today(9, days_back=1) - AROUND, today(9, days_back=1) + AROUND),
        ),
        ("anything since 9:15 this morning?", (today(9, 15), None)),
        ("what was said between 14:00 and 15:30 today", (today(14), today(15, 30))),
        ("did a van stop before 8 pm?", (None, today(20))),
        ("what happened at 12am UTC", (today(0) - AROUND, today(0) + AROUND)),
        ("Who spoke in the last 30 minutes?", (NOW - timedelta(minutes=30), None)),
        ("what happened in the past hour", (NOW - timedelta(hours=1), None)),
        ("any alarms since 1h?", (NOW - timedelta(hours=1), None)),
        (
            "what was on screen 2 hours ago",
            (NOW - timedelta(hours=2) - AROUND, NOW - timedelta(hours=2) + AROUND),
        ),
    ],
)
def test_a_window_named_in_words(question: str, window: tuple[datetime | None, datetime | None]) -> None:
    assert question_window(question, now=NOW) == window


@pytest.mark.parametrize(
    "question",
    [
        "When does someone say goodbye?",
        "what happens at 1:05?",  # stream time of a file, not a time of day
        "what is said at 00:01:05 today?",  # HH:MM:SS is always stream time
        "is there a person at 3 today?",  # "at 3": a number, not a time
        "at 25:00 today",  # no such time of day
        "the last time someone waved",  # "last" without a span
    ],
)
def test_no_window_where_the_words_name_none(question: str) -> None:
    assert question_window(question, now=NOW) is None
