"""Build the demo's bundled sample, vsalmonn/sample/street-talk.mp4, from ../shared/media.

The sample is real footage with real speech: the first 30 s of vtest.avi (street surveillance, OpenCV's
examples) scaled to 384x288 at 5 fps, with four recorded voice prompts (Asterisk's English prompts,
CC-BY-SA-3.0) mixed into a 16 kHz mono track at known times. `vsalmonn demo` ingests it and asks about it;
the times are in sample.json beside it. Run from the repository root: python scripts/make_sample.py
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"
OUT = ROOT / "vsalmonn" / "sample"
SECONDS, FPS, SIZE, RATE = 30, 5, (384, 288), 16_000
PROMPTS = [  # (file, where it starts in seconds, a question it answers)
    ("tt-weasels.wav", 2.0, "When does someone say that weasels have eaten the phone system?"),
    ("conf-now-recording.wav", 11.0, "When does the recording start?"),
    ("conf-muted.wav", 18.0, "When is someone told they are muted?"),
    ("vm-goodbye.wav", 26.0, "When does someone say goodbye?"),
]
VISUAL_QUESTION = "When do people walk along the street?"


def speech_track() -> tuple[np.ndarray, list[dict[str, object]]]:
    track = np.zeros(SECONDS * RATE, dtype=np.float32)
    placed = []
    for name, at, question in PROMPTS:
        with av.open(str(MEDIA / "speech" / name)) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            parts = [
                r.to_ndarray().reshape(-1)
                for frame in container.decode(audio=0)
                for r in resampler.resample(frame)
            ]
        samples = np.concatenate(parts)
        start = int(at * RATE)
        end = min(len(track), start + len(samples))
        track[start:end] += samples[: end - start]
        placed.append(
            {"file": name, "t0": at, "t1": round(at + len(samples) / RATE, 2), "question": question}
        )
    return np.clip(track, -1, 1), placed


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / "street-talk.mp4"
    audio, placed = speech_track()
    with av.open(str(MEDIA / "vtest.avi")) as src, av.open(str(target), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "30", "preset": "slow"})
        video.width, video.height = SIZE
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=RATE, layout="mono")
        sound.bit_rate = 32_000
        step = src.streams.video[0].average_rate / FPS  # keep every other frame of the 10 fps source
        for i, frame in enumerate(src.decode(video=0)):
            if i / float(src.streams.video[0].average_rate) >= SECONDS:
                break
            if i % int(step):
                continue
            picture = frame.reformat(width=SIZE[0], height=SIZE[1], format="yuv420p")
            picture.pts, picture.time_base = i // int(step), Fraction(1, FPS)
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
        for start in range(0, len(audio), 1024):
            block = audio[start : start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    questions = [
        {"question": p["question"], "t0": p["t0"], "t1": p["t1"], "kind": "speech"}
        for p in placed
        if p["question"]
    ]
    questions.append({"question": VISUAL_QUESTION, "t0": 0.0, "t1": float(SECONDS), "kind": "visual"})
    meta = {"file": target.name, "seconds": SECONDS, "prompts": placed, "questions": questions}
    (OUT / "sample.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{target} ({target.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
