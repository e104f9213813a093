"""``vsalmonn demo``: the bundled sample ingested and questioned, or (--memory) the memory smoke run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vsalmonn.cli.output import UsageError, format_table, progress_bar, quiet_model_loading
from vsalmonn.settings import Settings

if TYPE_CHECKING:
    from vsalmonn.smoke import SmokeResult


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="ingest the bundled sample clip, then answer questions about it with cited times",
        description=(
            "Ingest the bundled 30 s sample (real street footage with four spoken prompts) with the default "
            "encoders, then ask the agent (the embedded model) the sample's questions and print each "
            "answer with its cited times beside the true ones. --memory runs the memory smoke run instead: "
            "~42 min of synthetic 1 FPS tokens with planted vectors, then each planted vector's rank."
        ),
    )
    demo.add_argument(
        "--memory", action="store_true", help="the memory smoke run (synthetic tokens, no models)"
    )
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from vsalmonn.smoke import DEMO_BUDGETS, demo_config, run_smoke

    if not args.memory:
        from vsalmonn.agent.local_model import ModelError
        from vsalmonn.demo import run_demo as demo

        quiet_model_loading(settings.perception.threads)
        with progress_bar("ingesting the sample", unit="s") as progress:
            try:
                demo(settings, progress=lambda done, total: progress(int(done), int(total or 30)))
            except ModelError as exc:
                raise UsageError(str(exc)) from None
        return 0
    config = demo_config(settings.memory)
    demo_budgets = sorted(set(DEMO_BUDGETS) - settings.memory.model_fields_set)
    with progress_bar("writing", unit="tokens") as progress:
        result = run_smoke(config, progress=progress)
    print(render_smoke(result, demo_budgets))
    return 0


def render_smoke(result: SmokeResult, demo_budgets: Sequence[str]) -> str:
    """The smoke run as text: what was streamed into which memory, then one row per planted vector.

    ``demo_budgets`` names the bank budgets that are the demo's own rather than the settings'.
    """
    from vsalmonn.smoke import TOP_K

    cfg = result.config
    ttt = "off"
    if cfg.ttt:
        ttt = f"on ({cfg.optimizer}, cg_max_iter {cfg.cg_max_iter})" if cfg.optimizer != "gd" else "on (gd)"
    tokens = result.visual_tokens + result.audio_tokens
    lines = [
        f"memory smoke run: {result.visual_tokens:,} visual + {result.audio_tokens:,} audio synthetic "
        f"tokens, {result.stream_seconds / 60:.0f} min of stream at 1 FPS",
        f"memory: policy {cfg.policy}, TTT {ttt}, visual bank {cfg.visual_slots:,} slots, "
        f"audio bank {cfg.audio_slots:,} slots",
    ]
    if demo_budgets:
        names = " and ".join(f"memory.{name}" for name in demo_budgets)
        lines.append(
            f"  ({names}: the demo's own, below the defaults of 16,384/4,096 so that this stream overflows "
            "the banks and they reduce; set in --config to change)"
        )
    lines += [
        f"wrote in {result.write_seconds:.1f} s ({tokens / result.write_seconds:,.0f} tokens/s); "
        f"{result.slots_used:,} slots in use",
        "",
        f"reading the memory with each planted vector as the prompt (top {TOP_K} moments):",
    ]
    rows = []
    for probe in result.probes:
        best = probe.moments[0] if probe.moments else None
        rows.append(
            [
                probe.plant.label,
                f"{probe.plant.t0:.0f}",
                f"[{best.t0:.0f}, {best.t1:.0f}]" if best else "-",
                f"{best.score:.3f}" if best else "-",
                best.modality if best else "-",
                str(probe.rank) if probe.rank is not None else f"not in top {TOP_K}",
            ]
        )
    headers = ["planted", "at (s)", "best moment (s)", "score", "modality", "rank of planted token"]
    lines.append(format_table(headers, rows))
    found = sum(p.rank == 1 for p in result.probes)
    lines.append(f"\n{found} of {len(result.probes)} planted vectors found at rank 1")
    return "\n".join(lines)
