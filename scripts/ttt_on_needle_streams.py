"""CG iterations and ms per mini-batch of each optimiser on encoded video: the needle streams' tokens.

Why: hf_cg's cost depends on its input through the φ rule, so `vsalmonn bench ttt` reads its targets on a
synthetic stream ("scenes") that has to cost what real tokens cost; this checks that on the streams
`vsalmonn bench needle` built and cached (EfficientNet-Lite0 tokens of real footage, 5 a frame). Run after
one `vsalmonn bench needle` (or with its cache in $VSALMONN_DATA):

    GOMP_SPINCOUNT=10000 PYTHONPATH=$PWD .venv/bin/python scripts/ttt_on_needle_streams.py [--seconds 3600]

For the first `--seconds` of each cached 3-hour stream (seeds 0 and 1), a default `MemoryConfig` layer with
the shipped θ and one untrained, malloc tuned as the CLI tunes it: per optimiser, the histogram of CG
iterations over the mini-batches and the median ms per mini-batch (the first two left out as warm-up).
"""

from __future__ import annotations

import argparse
import sys
import time
from statistics import median

import numpy as np
import torch

from vsalmonn.memory_store.config import MemoryConfig
from vsalmonn.memory_store.slow_weights import resolve_slow_weights
from vsalmonn.memory_store.ttt import TTTLayer
from vsalmonn.perception import allocator
from vsalmonn.settings import load_settings

STREAM = "needle-10800s-{seed}-v1.npz"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3600, help="stream seconds to run from each stream")
    args = parser.parse_args()
    allocator.tune()
    folder = load_settings().data_dir / "bench"
    for seed in (0, 1):
        path = folder / STREAM.format(seed=seed)
        if not path.is_file():
            print(f"no cached needle stream {path}: run `vsalmonn bench needle` first", file=sys.stderr)
            return 2
        with np.load(path) as z:
            frames = z["visual"][: args.seconds]  # (frames, 5, d)
            times = np.repeat(z["frame_t"][: args.seconds], frames.shape[1])  # (tokens,)
        tokens = torch.from_numpy(frames).reshape(1, -1, frames.shape[-1])  # (1, n, d)
        stamps = torch.from_numpy(times).float()[None]  # (1, n)
        for optimizer in ("gd", "hf_cg", "hf_cg_newton"):
            for trained in (True, False):
                config = MemoryConfig(optimizer=optimizer)
                layer = TTTLayer(config)
                state_dict = resolve_slow_weights(config) if trained else None
                if trained and state_dict is None:
                    continue  # a build without the shipped θ
                if state_dict is not None:
                    layer.load_state_dict(state_dict, strict=False)
                state, mb = layer.init_state(batch=1), config.mini_batch
                iterations, seconds = [], []
                with torch.no_grad():
                    for start in range(0, tokens.shape[1] - mb + 1, mb):
                        began = time.perf_counter()
                        _, state = layer.step(
                            tokens[:, start : start + mb], state, stamps[:, start : start + mb]
                        )
                        seconds.append(time.perf_counter() - began)
                        if state.last_cg is not None:
                            iterations.append(state.last_cg.iterations)
                histogram = (
                    np.bincount(iterations, minlength=config.cg_max_iter + 1).tolist() if iterations else "-"
                )
                print(
                    f"seed {seed}, {optimizer:12s} {'shipped θ' if trained else 'untrained'}: "
                    f"{len(seconds)} mini-batches, CG iterations 0..{config.cg_max_iter}: {histogram}, "
                    f"{1e3 * median(seconds[2:]):.1f} ms per mini-batch"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
