"""``vsalmonn train-memory``: the TTT layer's slow weights θ trained for the configured encoders."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from vsalmonn import __version__
from vsalmonn.cli.output import UsageError, quiet_model_loading
from vsalmonn.settings import Settings

SHIPPED_TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "memory_store" / "weights" / "train-memory.toml"
"""The training config the shipped θ was made with (installed with the package, beside the weights)."""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    train = commands.add_parser(
        "train-memory",
        parents=[common],
        help="train the TTT memory's slow weights for the configured encoders",
        description="Encode footage into a token pool (cached in <data>/train), then train the slow weights "
        "θ of the TTT layer on streams composed from it, and write them as a .safetensors file "
        "(docs/memory-training.md).",
    )
    train.add_argument(
        "--train-config",
        metavar="FILE",
        type=Path,
        help="training config (TOML with [data] and [train]); default: the one the shipped θ was made with",
    )
    train.add_argument(
        "--media", metavar="DIR", type=Path, help="folder of the footage (overrides [data] media)"
    )
    train.add_argument("--steps", type=int, metavar="N", help="optimiser steps (overrides [train] steps)")
    train.add_argument("--device", metavar="DEV", help="'auto', 'cpu', 'cuda' (overrides [train] device)")
    train.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        help="where to write θ (default: <data>/train/ttt-<vision>-<text>.safetensors)",
    )
    train.set_defaults(handler=run_train_memory)


def run_train_memory(args: argparse.Namespace, settings: Settings) -> int:
    import tomllib

    from pydantic import ValidationError
    from tqdm import tqdm

    from vsalmonn.memory_store.slow_weights import save_slow_weights
    from vsalmonn.memory_store.training import TrainConfig, train
    from vsalmonn.perception.pipeline import Encoders
    from vsalmonn.perception.training_pool import PoolConfig, load_or_build_pool

    path = args.train_config or SHIPPED_TRAIN_CONFIG
    try:
        raw = tomllib.loads(path.read_text())
        data = PoolConfig(**{**raw.get("data", {}), **({"media": args.media} if args.media else {})})
        overrides = {k: v for k, v in (("steps", args.steps), ("device", args.device)) if v is not None}
        config = TrainConfig(**{**raw.get("train", {}), **overrides})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the training config {path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"training config {path}: {where}: {first['msg']}") from None
    perception = settings.perception
    names = f"{perception.vision_encoder}/{perception.text_encoder}"
    folder = settings.data_dir / "train"
    quiet_model_loading(perception.threads)
    try:
        pool = load_or_build_pool(
            data,
            names,
            folder,
            lambda: Encoders.from_config(
                perception.model_copy(update={"speech_encoder": "none"}), settings.data_dir
            ),
        )
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = folder / f"train-{stamp}.jsonl"
    bar = tqdm(total=config.steps, desc="training θ", unit="stream", file=sys.stderr)

    def progress(step: int, entry: dict[str, Any]) -> None:
        shown = {"loss": f"{entry['loss']:.3f}"}
        if "val_recall5" in entry:
            shown["val@5"] = f"{entry['val_recall5']:.0f}% (untrained {entry['val_recall5_untrained']:.0f}%)"
        bar.set_postfix(shown, refresh=False)
        bar.update()

    try:
        with bar:
            result = train(pool, config, log_path=log_path, progress=progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    vision, text = perception.vision_encoder, perception.text_encoder
    output = args.output or folder / f"ttt-{vision}-{text}.safetensors"
    memory = result.memory
    info = save_slow_weights(
        output,
        result.state,
        vision_encoder=vision,
        text_encoder=text,
        dim=memory.dim,
        heads=memory.heads,
        mlp_ratio=memory.mlp_ratio,
        trained={
            "train": config.model_dump(mode="json"),
            "memory": memory.model_dump(mode="json"),  # the whole config θ was trained under
            "data": data.model_dump(mode="json"),
            "pool": pool.info,
            "seconds": round(result.seconds, 1),
            "final": result.history[-1] if result.history else None,
            "vsalmonn": __version__,
        },
    )
    print(f"slow weights written to {output} (checksum {info.checksum[:12]}; log {log_path})")
    return 0
