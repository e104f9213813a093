"""Speech recall@5 and @1 of audio-bank settings on `bench needle`'s cached streams, audio only.

The TTT layer rewrites visual tokens only, so the spoken needles of `bench needle` depend on the audio bank
alone; writing just the sentences into a fresh `StreamMemory` (as bench needle does, 30 s windows) takes
seconds, where a needle sweep takes minutes. Used for docs/benchmarks.md, "Issue 17: a second seed, and
`whole` with the balance". Needs the needle streams built by `vsalmonn bench needle` under $VSALMONN_DATA:

    VSALMONN_DATA=/path/to/bench/data PYTHONPATH=$PWD .venv/bin/python scripts/audio_bank_sweep.py [NAME,...]

NAME picks the variants whose label contains it (all without one).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench import _needle_streams as ns
from bench import needle as nd
from bench._harness import bench_data_dir, shared_media

VARIANTS: dict[str, dict[str, Any]] = {
    "merge 256 (default)": {},
    "merge 256 lambda0 (paper)": {"audio_merge_balance": 0.0},
    "merge 256 lambda2": {"audio_merge_balance": 2.0},
    "whole 256x2": {"audio_policy": "whole", "slot_members": 2},
    "whole 256x4": {"audio_policy": "whole", "slot_members": 4},
    "whole 256x8": {"audio_policy": "whole", "slot_members": 8},
    "whole 128x2": {"audio_policy": "whole", "slot_members": 2, "audio_slots": 128},
    "whole 86x2": {"audio_policy": "whole", "slot_members": 2, "audio_slots": 86},
    "whole 52x4": {"audio_policy": "whole", "slot_members": 4, "audio_slots": 52},
    "merge 86": {"audio_slots": 86},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="?", default="", help="comma-separated parts of variant labels")
    parser.add_argument("--seed", type=int, default=0, help="the needle streams' seed (default 0)")
    args = parser.parse_args()
    wanted = [w for w in args.names.split(",") if w]
    chosen = {k: v for k, v in VARIANTS.items() if not wanted or any(w in k for w in wanted)}
    torch.set_num_threads(1)
    folder = bench_data_dir().resolve() / "bench"
    base = nd.settings()["merge/off"]  # bench needle's budgets, the default audio bank, TTT off
    for seconds in (600.0, 3600.0, 10800.0):
        stream = ns.load_or_build(shared_media("needle"), folder, seconds, args.seed, _no_encoders)
        for label, fields in chosen.items():
            found = [0, 0, 0]  # readings, within 5, at 1
            missed = []
            for rotation in ns.rotations(stream, nd.ROTATIONS["full"]):
                memory = nd._memory("merge/off", base.model_copy(update=fields))
                for _, audio in nd._windows(rotation):
                    if audio is not None:
                        memory.write(*audio, modality="audio")
                memory.flush()
                for needle, query in zip(rotation.needles, rotation.queries, strict=True):
                    if needle.modality != "audio":
                        continue
                    moments = memory.read(query[None], k=nd.K, modality="audio")
                    near = (
                        m.t0 <= needle.t1 + nd.TOLERANCE_S and m.t1 >= needle.t0 - nd.TOLERANCE_S
                        for m in moments
                    )
                    rank = next((i + 1 for i, hit in enumerate(near) if hit), None)
                    found[0] += 1
                    found[1] += rank is not None
                    found[2] += rank == 1
                    if rank is None:
                        missed.append(f"{needle.what}@{rotation.name.rsplit('@', 1)[-1]}")
            n = max(1, found[0])
            recall = f"speech r@5 {100 * found[1] / n:5.1f}  r@1 {100 * found[2] / n:5.1f}"
            print(f"{label:26s} {seconds:>6.0f} s  {recall}  readings {found[0]}  missed {missed}")


def _no_encoders() -> Any:
    raise SystemExit("the needle streams are not built: run `vsalmonn bench needle` first")


if __name__ == "__main__":
    main()
