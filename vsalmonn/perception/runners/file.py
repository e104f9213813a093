"""A file (a path, or a `file://` URL): read as fast as the machine allows, resumed at its last checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..decode import probe
from ..ingest import IngestResult, check_source, ingest_file
from ..sources import check_file_source, refuse_non_media
from .base import KindRunner, RunContext, stem_name

if TYPE_CHECKING:
    from vsalmonn.memory_store.store import MemoryStore

    from ..pipeline import StreamStats

__all__ = ["FileKind", "file_path"]


def file_path(source: str) -> Path:
    return Path(source.removeprefix("file://"))


class FileKind(KindRunner):
    """Everything that is not another kind is a file: whether it exists is the decoder's to say."""

    name = "file"
    label = "file"

    def matches(self, source: str) -> bool:
        return True  # the registry asks this kind last

    def default_stream_name(self, source: str) -> str | None:
        return stem_name(source)

    def check(self, source: str) -> None:
        check_file_source(source)  # symlink loops, devices, FIFOs: their own reason, before probing
        refuse_non_media(probe(source))  # no media fails here, before the encoders take seconds to load

    def check_resume(self, store: MemoryStore, stream: str, source: str) -> str | None:
        how, _ = check_source(store, stream, file_path(source))
        return how

    def run(self, ctx: RunContext) -> IngestResult:
        """`ingest_file` seeks to the offset of the stream's last checkpoint and goes on from there."""
        return ingest_file(
            file_path(ctx.spec.source),
            ctx.spec.name,
            store=ctx.store,
            encoders=ctx.encoders,
            perception=ctx.perception,
            memory_config=ctx.memory,
            window_s=ctx.daemon.window_s,
            checkpoint_every_s=ctx.daemon.checkpoint_every_s,
            stop=ctx.stop,
            stats=ctx.stats,
            queue_items=ctx.daemon.queue_items,
            plugins=ctx.plugins,
        )

    def progress_total(self, stats: StreamStats) -> float | None:
        return stats.duration

    def progress_title(self, stats: StreamStats) -> str:
        return f"ingesting {stats.source}"
