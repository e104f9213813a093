"""Answers that say only what the evidence holds: every written time checked against the cited moments.

A small model copies times badly ("00.00:10", "0.01:10", a time from the worked example) and adds people the
evidence never mentions ("the other person says goodbye to them"). A reader trusts the text more than the
citations, so the text is checked before anyone sees it, one sentence at a time:

- **times**: every time a sentence writes (``00:01:05``, ``0:01:05``, ``1:05``, ``65 s``, ``65 seconds``, and
  the malformed ``00.00:10`` / ``0.01:10`` that small models write) is found and read as seconds. A time
  inside a moment the agent was shown (±1 s, the clock form being floored) is rewritten in the one clock form
  ``HH:MM:SS``; a sentence with any time outside every moment is dropped whole, since its claim is tied to a
  time nothing supports.
- **people**: the general rule is that an answer may speak of people only in the words the question or the
  evidence use (a word and its plural count as one). A sentence with a person word ("person", "man",
  "woman", "speaker", "he", "she", ...) that neither the question nor the evidence contains is dropped:
  the evidence of speech says *what* was said, never *who* said it or to whom, and the picture's labels
  name objects. "someone" is always allowed: it is how the answers' frame speaks of a voice.

When nothing the model wrote survives, the code writes the answer from the best moment itself and says that
the evidence shows no more than that; the time in it is the citation's, written by code.

`SentenceGate` applies this to streamed text: tokens are held until a sentence ends, and only the checked
sentence is passed on, so what a reader sees streaming is exactly the final answer's text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vsalmonn.tools.timefmt import hms

TOLERANCE_S = 1.0  # a written time this close to a moment's span is inside it (the clock form is floored)

# H:MM:SS with ':' or '.' between the fields (a small model writes "00.00:10" and "0.01:10"); the hour field
# may be any width ("0000:10:00" has been seen). Not preceded or followed by more digits or separators.
_CLOCK3 = r"(?<![\d:.])(?P<h>\d{1,4})[:.](?P<m>\d{1,2})[:.](?P<s>\d{2})(?![\d:]|\.\d)"
# M:SS (colon only: "1.05" is as likely a decimal number).
_CLOCK2 = r"(?<![\d:.])(?P<m2>\d{1,3}):(?P<s2>\d{2})(?![\d:]|\.\d)"
# "2 minutes 5 seconds", "1 min 5 s".
_MIN_SEC = (
    r"(?<![\d.])(?P<mm>\d{1,4})\s*(?:minutes?|mins?)\s*(?:and\s+)?(?P<ss>\d{1,2}(?:\.\d+)?)\s*"
    r"(?:seconds?|secs?|s)\b"
)
# "65 s", "65.5 seconds", "65s", "3 minutes".
_SECONDS = r"(?<![\d.:])(?P<sec>\d{1,6}(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b"
_MINUTES = r"(?<![\d.:])(?P<min>\d{1,4}(?:\.\d+)?)\s*(?:minutes?|mins?)\b"
TIME_PATTERN = re.compile("|".join((_CLOCK3, _CLOCK2, _MIN_SEC, _SECONDS, _MINUTES)), re.IGNORECASE)

# Words that name or stand for a person. An answer may use one only where the question or the evidence does.
PERSON_WORDS = frozenset(
    [
        "person",
        "persons",
        "people",
        "man",
        "men",
        "woman",
        "women",
        "boy",
        "boys",
        "girl",
        "girls",
        "guy",
        "guys",
        "lady",
        "ladies",
        "gentleman",
        "gentlemen",
        "speaker",
        "speakers",
        "caller",
        "callers",
        "he",
        "him",
        "his",
        "himself",
        "she",
        "her",
        "hers",
        "herself",
    ]
)
# One word for a word and its plural: a question about "people" lets the answer speak of "a person".
_PERSON_FORM = {
    "persons": "person", "people": "person", "men": "man", "women": "woman", "boys": "boy", "girls": "girl",
    "guys": "guy", "ladies": "lady", "gentlemen": "gentleman", "speakers": "speaker", "callers": "caller",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z']+")
# A sentence ends at . ! ? (with any closing quotes or brackets) followed by white space, or at a line break.
_SENTENCE_END = re.compile(r"""[.!?]+["'’”)\]]*(?=\s)|\n+""")


@dataclass(frozen=True)
class TimeMention:
    """One time written in a text: where it is (start, end of the match) and the instant it names."""

    start: int
    end: int
    seconds: float
    text: str


def find_times(text: str) -> list[TimeMention]:
    """Every time written in `text`, in order, read as seconds of stream time."""
    found = []
    for match in TIME_PATTERN.finditer(text):
        g = match.groupdict()
        if g["h"] is not None:
            seconds = int(g["h"]) * 3600 + int(g["m"]) * 60 + int(g["s"])
        elif g["m2"] is not None:
            seconds = int(g["m2"]) * 60 + int(g["s2"])
        elif g["mm"] is not None:
            seconds = int(g["mm"]) * 60 + float(g["ss"])
        elif g["sec"] is not None:
            seconds = float(g["sec"])
        else:
            seconds = float(g["min"]) * 60
        found.append(TimeMention(match.start(), match.end(), float(seconds), match.group(0)))
    return found


def inside(seconds: float, spans: Iterable[tuple[float, float]], tolerance: float = TOLERANCE_S) -> bool:
    """Whether the instant lies inside one of the spans, widened by `tolerance` and to whole seconds."""
    return any(int(t0) - tolerance <= seconds <= int(t1) + tolerance for t0, t1 in spans)


def times_inside(text: str, spans: Sequence[tuple[float, float]]) -> bool:
    """Whether every time written in `text` lies inside one of `spans` (True for a text with no time)."""
    return all(inside(m.seconds, spans) for m in find_times(text))


def words(text: str) -> set[str]:
    return {w.lower().strip("'") for w in _WORD.findall(text)}


@dataclass(frozen=True)
class Checked:
    """A sentence after the check: its text as shown (empty when dropped), and why it was dropped."""

    text: str
    dropped: str | None = None  # "time" or "person"
    times: tuple[float, ...] = ()  # the instants it names (kept sentences only)


class Grounding:
    """The evidence an answer may use: the moments it may cite and the words it may speak of people in."""

    def __init__(self, moments: Sequence[dict[str, Any]], question: str, extra_text: str = "") -> None:
        self.moments = list(moments)
        self.spans = [(float(m["t0"]), float(m["t1"])) for m in self.moments]
        # A live stream's moments are on the wall clock too, and a tool's text shows that time of day
        # ("[wall clock 2026-12-03 14:03:05-14:03:12 UTC]"): a model may write it, and it is then true.
        self.wall = [(span, float(m["t0"])) for m in self.moments if (span := _day_seconds(m)) is not None]
        said = " ".join(str(e) for m in self.moments for e in m.get("evidence") or [])
        self.allowed_people = _people(words(question) | words(said) | words(extra_text))

    def check(self, sentence: str) -> Checked:
        """The sentence with its times rewritten as HH:MM:SS, or dropped (see the module docstring). A time
        of day inside a live moment's wall-clock span is kept as written and stands for that moment."""
        out, last, named = [], 0, []
        for m in find_times(sentence):
            if inside(m.seconds, self.spans):
                written, t = hms(m.seconds), m.seconds
            elif (t := self._on_wall_clock(m.seconds)) is not None:
                written = m.text
            else:
                return Checked("", dropped="time")
            out += [sentence[last : m.start], written]
            named.append(t)
            last = m.end
        if _people(words(sentence)) - self.allowed_people:
            return Checked("", dropped="person")
        out.append(sentence[last:])
        return Checked("".join(out), times=tuple(named))

    def _on_wall_clock(self, day_seconds: float) -> float | None:
        """The stream time of a moment whose wall-clock span holds this time of day (UTC), if one does."""
        for (w0, w1), t0 in self.wall:
            if inside(day_seconds, [(w0, w1)]):
                return t0 + max(0.0, day_seconds - w0)
        return None

    def cited(self, times: Iterable[float]) -> list[dict[str, Any]]:
        """The moments that the given instants fall in, in the evidence's order."""
        named = list(times)
        return [m for m in self.moments if any(inside(t, [(m["t0"], m["t1"])]) for t in named)]


def _day_seconds(moment: dict[str, Any]) -> tuple[float, float] | None:
    """A live moment's wall-clock span as seconds since midnight UTC (a span over midnight: None)."""
    try:
        w0, w1 = (datetime.fromisoformat(str(moment[k])).astimezone(UTC) for k in ("wall_t0", "wall_t1"))
    except (KeyError, TypeError, ValueError):
        return None
    if w0.date() != w1.date():
        return None
    midnight = w0.replace(hour=0, minute=0, second=0, microsecond=0)
    return (w0 - midnight).total_seconds(), (w1 - midnight).total_seconds()


def _people(found: set[str]) -> set[str]:
    """The person words among `found`, each in its one form (singular)."""
    return {_PERSON_FORM.get(w, w) for w in found & PERSON_WORDS}


def split_sentences(text: str) -> tuple[list[str], str]:
    """The complete sentences of `text` (each with its end mark) and the unfinished rest."""
    sentences, last = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentence = text[last : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        last = match.end()
    return sentences, text[last:]


class SentenceGate:
    """Streamed text in, checked sentences out: nothing reaches `on_token` before its sentence is checked.

    `feed` takes the model's pieces; `finish` checks the unfinished rest. `text` is what was passed on, which
    is the answer's text: sentences joined by one space.
    """

    def __init__(self, grounding: Grounding, on_token: Callable[[str], None] | None = None) -> None:
        self.grounding = grounding
        self.on_token = on_token
        self.pending = ""
        self.kept: list[Checked] = []
        self.dropped: list[tuple[str, str]] = []  # (sentence, reason)
        self.text = ""

    def feed(self, piece: str) -> None:
        self.pending += piece
        sentences, self.pending = split_sentences(self.pending)
        for sentence in sentences:
            self._pass(sentence)

    def finish(self) -> str:
        rest, self.pending = self.pending.strip(), ""
        if rest:
            self._pass(rest)
        return self.text

    def emit(self, text: str) -> None:
        """Code-written text (a citation's time, a fallback answer), passed on as it is."""
        if not text:
            return
        self.text += text
        if self.on_token:
            self.on_token(text)

    def _pass(self, sentence: str) -> None:
        checked = self.grounding.check(sentence)
        if checked.dropped:
            self.dropped.append((sentence, checked.dropped))
            return
        self.kept.append(checked)
        self.emit(checked.text if not self.text else " " + checked.text)

    @property
    def times(self) -> list[float]:
        return [t for c in self.kept for t in c.times]


def evidence_sentence(moment: dict[str, Any]) -> str:
    """The moment in words of its own evidence, written by code: 'someone says "Goodbye."' and the like."""
    evidence = [str(e) for e in moment.get("evidence") or []]
    said = [e.removeprefix("said:").strip().strip("'\"") for e in evidence if e.startswith("said:")]
    seen = [re.sub(r"\s*\([\d.]+\)$", "", e.removeprefix("seen:").strip()) for e in evidence]
    seen = [s for s, e in zip(seen, evidence, strict=True) if e.startswith("seen:")]
    if moment.get("modality") == "audio" and said:
        return f'someone says "{" ".join(said)}"'
    if seen:
        return "the picture shows " + ", ".join(seen)
    if said:
        return f'someone says "{" ".join(said)}"'
    return f"there is a {moment.get('modality', '')} match".replace("a  match", "a match")
