"""Streams and questions shared by ``bench qa`` and ``bench search``, built from ../shared/media.

- The three real clips (``vtest.avi`` street footage, ``anim-1.mov`` a rendered glass teapot beside a green
  ring, ``alea.mpg`` pink dice tumbling on black) as RGB frames on one 480x360 canvas (4:3; the square
  animation is letterboxed), taken at a given rate by presentation time.
- The recorded speech prompts, each trimmed to its voice (`_harness.voice`), and their transcripts by the real
  speech encoder (Whisper-base), one call per distinct prompt, cached as JSON.
- The question set of ``bench qa``: streams of street footage with prompts placed at seeded random times and
  one or two clips spliced in at seeded times; each question names a prompt (in its words or in other words)
  or a spliced clip, and its truth is where that was placed.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from ._harness import checkout_module, voice, write_clip

CANVAS = (480, 360)  # width, height: the pipeline's 360p, 4:3 like the street footage
AUDIO_RATE = 16_000  # what the pipeline resamples to anyway
NOISE_FLOOR = 1e-3
CLIPS = {"street": "vtest.avi", "teapot": "anim-1.mov", "dice": "alea.mpg"}
TRANSCRIPTS_VERSION = 1  # part of the cached transcripts' name: bump when their recipe changes


# -- frames --------------------------------------------------------------------------------------------------


def _letterbox(frame: av.VideoFrame) -> np.ndarray:
    """The frame as RGB on the black canvas, scaled whole (aspect kept) to fit it."""
    width, height = CANVAS
    scale = min(width / frame.width, height / frame.height)
    w, h = 2 * round(frame.width * scale / 2), 2 * round(frame.height * scale / 2)
    image = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    if (w, h) == CANVAS:
        return image
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[top : top + h, left : left + w] = image
    return canvas


@functools.cache
def _decoded(path: Path) -> tuple[tuple[float, ...], tuple[np.ndarray, ...]]:
    """Every frame of a clip on the canvas, with its presentation time (the clips are small)."""
    times, images = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is None:
                continue
            times.append(float(frame.time))
            images.append(_letterbox(frame))
    origin = times[0]
    return tuple(t - origin for t in times), tuple(images)


def clip_duration(shared: Path, clip: str) -> float:
    """Seconds of a clip: its last frame's time plus one frame."""
    times, _ = _decoded(shared / CLIPS[clip])
    return times[-1] + (times[-1] - times[-2])


def clip_frames(shared: Path, clip: str, fps: float) -> list[np.ndarray]:
    """The clip's frames at `fps`: for each instant k/fps, the newest frame shown by then."""
    times, images = _decoded(shared / CLIPS[clip])
    n = int(clip_duration(shared, clip) * fps + 1e-9)
    picks = np.searchsorted(np.asarray(times), np.arange(n) / fps + 1e-6, side="right") - 1
    return [images[max(0, int(i))] for i in picks]


# -- speech --------------------------------------------------------------------------------------------------


@functools.cache
def prompt_voice(shared: Path, stem: str) -> np.ndarray:
    """A prompt at AUDIO_RATE, trimmed to its voice."""
    media = checkout_module("media")
    return voice(media.load_wav(shared / "speech" / f"{stem}.wav", AUDIO_RATE), AUDIO_RATE)


def transcripts_name() -> str:
    """File name of the cached transcripts (`prompt_transcripts`) inside the bench folder."""
    return f"prompt-transcripts-v{TRANSCRIPTS_VERSION}.json"


def prompt_transcripts(shared: Path, speech: Any, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Every prompt's transcript by `speech` (a SpeechEncoder), times from the start of its trimmed voice.

    Cached in `folder`: {stem: [{"t0", "t1", "text", "language", "words": [[text, t0, t1, p], ...]}, ...]}.
    A prompt with no recognised speech (one is monkey noises) has an empty list.
    """
    path = folder / transcripts_name()
    if path.is_file():
        return json.loads(path.read_text())
    out: dict[str, list[dict[str, Any]]] = {}
    for wav in sorted((shared / "speech").glob("*.wav")):
        segments = speech.transcribe(prompt_voice(shared, wav.stem), t_offset=0.0)
        out[wav.stem] = [
            {
                "t0": s.t0,
                "t1": s.t1,
                "text": s.text.strip(),
                "language": s.language,
                "words": [[w.text, w.t0, w.t1, w.probability] for w in s.words],
            }
            for s in segments
            if s.text.strip()
        ]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, path)
    return out


# -- the question set ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    text: str
    kind: str  # "speech" or "visual"
    style: str  # "words": the prompt's own words; "other words": a paraphrase; "visual": what is seen
    target: str  # the prompt's file stem, or the spliced clip's name


@dataclass(frozen=True)
class StreamRecipe:
    name: str
    seconds: float
    seed: int
    questions: tuple[Question, ...]
    distractors: tuple[str, ...]  # prompts placed too, that no question asks about
    inserts: tuple[tuple[str, int], ...]  # (clip, loops) spliced into the street footage


def _speech(target: str, text: str, style: str) -> Question:
    return Question(text=text, kind="speech", style=style, target=target)


def _visual(target: str, text: str) -> Question:
    return Question(text=text, kind="visual", style="visual", target=target)


WORDS, OTHER = "words", "other words"

# Each prompt is used once over all streams; distractors are prompts of other meanings. What the paraphrased
# ones say (by Whisper): vm-msgsaved "Your message has been saved.", conf-kicked "You have been kicked from
# this conference.", vm-passchanged "Your passwords have been changed.", conf-now-unmuted "The conference is
# now unmuted.", conf-onlyperson "You are currently the only person in this conference."
STREAMS: tuple[StreamRecipe, ...] = (
    StreamRecipe(
        name="qa-a",
        seconds=360.0,
        seed=11,
        questions=(
            _speech("tt-weasels", "When does someone say weasels ate the phone system?", WORDS),
            _speech("conf-now-recording", "When does the recording of the meeting begin?", OTHER),
            _speech("vm-nobodyavail", "When does someone say nobody can take the call right now?", OTHER),
            _speech("demo-echodone", "When is the echo test completed?", WORDS),
            _speech("tt-somethingwrong", "When does someone say something is terribly wrong?", WORDS),
            _speech("vm-msgsaved", "When is the message stored?", OTHER),
            _speech("conf-kicked", "When is someone thrown out of the conference?", OTHER),
            _visual("teapot", "When is a teapot shown?"),
            _visual("dice", "When do dice appear on the screen?"),
        ),
        distractors=(
            "conf-full",
            "demo-nomatch",
            "vm-reachoper",
            "conf-getpin",
            "vm-helpexit",
            "vm-Old",
        ),
        inserts=(("teapot", 3), ("dice", 2)),
    ),
    StreamRecipe(
        name="qa-b",
        seconds=600.0,
        seed=12,
        questions=(
            _speech(
                "tt-allbusy",
                "When are callers told that all representatives are assisting telemarketers?",
                WORDS,
            ),
            _speech("vm-mailboxfull", "When is the voicemail box said to be full?", OTHER),
            _speech("conf-lockednow", "When does the conference get locked?", WORDS),
            _speech("demo-thanks", "When does someone thank us for trying out Asterisk?", WORDS),
            _speech("vm-passchanged", "When was the password updated?", OTHER),
            _speech(
                "conf-waitforleader", "When are we told the conference begins once the leader arrives?", WORDS
            ),
            _speech("vm-intro", "When is the caller asked to leave a message after the tone?", WORDS),
            _speech("tt-monkeysintro", "When does someone mention monkeys?", WORDS),
            _visual("teapot", "When does the video show a glass teapot?"),
            _visual("dice", "When do pink dice tumble across a black background?"),
        ),
        distractors=(
            "vm-enter-num-to-call",
            "conf-invalid",
            "vm-nomore",
            "vm-review",
            "conf-extended",
            "vm-star-cancel",
            "demo-enterkeywords",
            "vm-opts",
        ),
        inserts=(("dice", 2), ("teapot", 3)),
    ),
    StreamRecipe(
        name="qa-c",
        seconds=600.0,
        seed=13,
        questions=(
            _speech("vm-msgforwarded", "When is the message forwarded successfully?", WORDS),
            _speech("conf-leaderhasleft", "When does the person leading the call leave?", OTHER),
            _speech("demo-nogo", "When does the connection to the demonstration server fail?", OTHER),
            _speech("vm-tempgreetactive", "When is the temporary greeting said to be active?", WORDS),
            _speech("conf-onlyperson", "When is someone told that nobody else is in the conference?", OTHER),
            _speech("vm-dialout", "When does the system ask to wait while it connects the call?", WORDS),
            _speech("vm-newuser", "When is a new user welcomed to Comedian Mail?", WORDS),
            _speech("conf-now-unmuted", "When can everyone in the conference speak again?", OTHER),
            _visual("teapot", "When is there a coffee pot or a jug on screen?"),
            _visual("dice", "When does the camera show falling dice?"),
        ),
        distractors=(
            "conf-hasjoin",
            "vm-leavemsg",
            "vm-sorry",
            "conf-roll-callcomplete",
            "vm-next",
            "vm-nonumber",
            "conf-userswilljoin",
            "vm-delete",
        ),
        inserts=(("teapot", 3), ("dice", 2)),
    ),
)

MIN_GAP_S = 15.0  # between the end of one placed prompt or clip and the start of the next of its kind
EDGE_S = 10.0  # nothing is placed this close to a stream's start or end


@dataclass(frozen=True)
class Placed:
    what: str  # prompt stem or clip name
    t0: float
    t1: float


@dataclass(frozen=True)
class StreamPlan:
    recipe: StreamRecipe
    prompts: tuple[Placed, ...]  # time order
    inserts: tuple[Placed, ...]

    def truth(self, question: Question) -> Placed:
        placed = self.inserts if question.kind == "visual" else self.prompts
        return next(p for p in placed if p.what == question.target)


def _spread(rng: np.random.Generator, lengths: Sequence[float], seconds: float) -> list[float]:
    """Start times for items of `lengths`, in the given order, at random gaps of at least MIN_GAP_S."""
    slack = seconds - 2 * EDGE_S - sum(lengths) - MIN_GAP_S * (len(lengths) - 1)
    if slack <= 0:
        raise ValueError(f"{len(lengths)} items do not fit {seconds:.0f} s with gaps of {MIN_GAP_S:.0f} s")
    gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * slack
    starts, at = [], EDGE_S
    for gap, length in zip(gaps, lengths, strict=False):
        at += gap
        starts.append(round(float(at), 2))
        at += length + MIN_GAP_S
    return starts


def plan(shared: Path, recipe: StreamRecipe) -> StreamPlan:
    """Where each prompt and clip of `recipe` goes: seeded, so every run places them alike."""
    rng = np.random.default_rng(recipe.seed)
    stems = [q.target for q in recipe.questions if q.kind == "speech"] + list(recipe.distractors)
    stems = [stems[i] for i in rng.permutation(len(stems))]
    lengths = [len(prompt_voice(shared, s)) / AUDIO_RATE for s in stems]
    starts = _spread(rng, lengths, recipe.seconds)
    prompts = tuple(Placed(s, t, round(t + n, 3)) for s, t, n in zip(stems, starts, lengths, strict=True))
    clip_lengths = [clip_duration(shared, clip) * loops for clip, loops in recipe.inserts]
    clip_starts = _spread(rng, clip_lengths, recipe.seconds)
    inserts = tuple(
        Placed(clip, t, round(t + n, 3))
        for (clip, _), t, n in zip(recipe.inserts, clip_starts, clip_lengths, strict=True)
    )
    return StreamPlan(recipe, prompts, inserts)


STREAM_FPS = 2  # frames per second of the written file (the pipeline samples 1)


def _frames(shared: Path, stream: StreamPlan) -> Iterator[av.VideoFrame]:
    """The street footage looped, with the spliced clips over it at their times."""
    street = clip_frames(shared, "street", STREAM_FPS)
    inserts = {p.what: clip_frames(shared, p.what, STREAM_FPS) for p in stream.inserts}
    for i in range(round(stream.recipe.seconds * STREAM_FPS)):
        t = i / STREAM_FPS
        image = street[i % len(street)]
        for p in stream.inserts:
            if p.t0 <= t < p.t1:
                frames = inserts[p.what]
                image = frames[int((t - p.t0) * STREAM_FPS) % len(frames)]
        yield av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def _track(shared: Path, stream: StreamPlan) -> np.ndarray:
    rng = np.random.default_rng(stream.recipe.seed)
    track = (rng.standard_normal(round(stream.recipe.seconds * AUDIO_RATE)) * NOISE_FLOOR).astype(np.float32)
    for p in stream.prompts:
        spoken = prompt_voice(shared, p.what)
        start = round(p.t0 * AUDIO_RATE)
        track[start : start + len(spoken)] += spoken[: len(track) - start]
    return track


CLIP_VERSION = 1  # part of the cached files' names: bump when the recipes or the writing change


def stream_file(shared: Path, folder: Path, stream: StreamPlan) -> Path:
    """The stream's media file (H.264 480x360 at 2 fps, AAC 16 kHz mono), written once into `folder`."""
    path = folder / f"{stream.recipe.name}-{stream.recipe.seconds:.0f}s-v{CLIP_VERSION}.mp4"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    track = _track(shared, stream)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp.mp4"
    try:
        write_clip(
            tmp,
            _frames(shared, stream),
            seconds=stream.recipe.seconds,
            fps=STREAM_FPS,
            size=CANVAS,
            video_options={"preset": "veryfast", "crf": "26", "g": str(10 * STREAM_FPS)},
            audio=lambda start, n: track[start : start + n],
            audio_rate=AUDIO_RATE,
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
