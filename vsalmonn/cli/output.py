"""What the commands and the benchmarks of bench/ show a person, in one place: plain-text tables, tqdm
progress on stderr, the one-line refusal (UsageError) and quiet model loading.

Public so that bench/ imports these names rather than the command line's private ones.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from tqdm import tqdm

PROG = "vsalmonn"
"""The program's name, as errors and usage lines begin."""

ProgressFn = Callable[[float, float], None]
"""A ``progress(done, total)`` callback, as the ingest pipeline, the demo and the smoke run call it."""


class UsageError(Exception):
    """Bad usage or input found after parsing; main() prints it as one line and exits with status 2."""


# ------------------------------------------------------------------------------------------------- tables


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; columns whose cells are all numbers are right-aligned so that digits line up."""
    columns = list(zip(headers, *rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    numeric = [_numeric_column(column[1:]) for column in columns]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _numeric_column(cells: Sequence[str]) -> bool:
    """True when the column holds numbers, blanks ("" or "-") aside, and at least one number."""
    filled = [c for c in cells if c not in ("", "-")]
    return bool(filled) and all(_is_number(c) for c in filled)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- progress

PROGRESS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:,.0f}/{total:,.0f} {unit} [{elapsed}<{remaining}]"


class _QuarterLines(tqdm):  # type: ignore[misc]  # tqdm is untyped
    """tqdm for a stream that is no terminal (CI logs, pipes): a line of its own at each quarter of the
    total rather than a line redrawn with carriage returns, so that logs stay short and readable."""

    _quarter = -1

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None or not self.total:  # close() clears with msg="": nothing to clear in a log
            return False
        if (quarter := int(4 * self.n // self.total)) > self._quarter:
            self._quarter = quarter
            self.fp.write(f"{self}\n")
            self.fp.flush()
        return True


@contextlib.contextmanager
def progress_bar(desc: str, unit: str, stream: IO[str] | None = None) -> Iterator[ProgressFn]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr while the block runs.

    On a terminal the bar redraws one line; elsewhere it writes a line per quarter (see _QuarterLines). The
    bar starts at the first call, when the total is known, and ends at the total or with the block,
    whichever comes first, so that what a command prints next starts on a line of its own.
    """
    stream = stream if stream is not None else sys.stderr
    bar: Any = None

    def update(done: float, total: float) -> None:
        nonlocal bar
        if bar is None:
            tty = stream.isatty()
            make = tqdm if tty else _QuarterLines
            bar = make(
                total=total, desc=desc, unit=unit, file=stream, bar_format=PROGRESS_FORMAT,
                dynamic_ncols=tty, leave=tty, mininterval=0.1 if tty else 0, miniters=None if tty else 0,
            )  # fmt: skip
        if bar.disable:  # closed at the total already
            return
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


# ------------------------------------------------------------------------------------------------- models


def quiet_model_loading(threads: int) -> None:
    """Process-wide settings that belong to the program, not to a library: torch's thread count, and no
    progress bars from transformers or chatter from faster-whisper on a terminal that shows our own."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))
