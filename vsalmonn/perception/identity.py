"""Which file a stream was fed, so that a rerun neither skips a file it never read nor mixes two files.

A name is not an identity: the default stream name is the file's stem, so `a/clip.mp4` and `b/clip.mp4`
collide, and a recording that grew keeps its name. A file is known by its resolved path, size, mtime and the
SHA-256 of its first MiB. Compared with what was stored when it was last read, the file now is:

* `same`: the size and the head are unchanged (a new mtime alone, or a move, does not make another file);
* `grew`: larger, with the same head bytes (a recording still being written, a file appended to): its tail
  is read from the committed offset;
* `different`: smaller, or its head differs: another file under the same name, which is refused.

Only the head is hashed, so a file rewritten in its middle with the same size passes as `same`; that is the
price of not reading whole multi-gigabyte recordings on every start.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

HEAD_BYTES = 1 << 20

Relation = Literal["same", "grew", "different"]

__all__ = ["HEAD_BYTES", "FileIdentity", "Relation", "SourceMismatch", "head_sha256", "relation"]


class SourceMismatch(ValueError):
    """A file given to a stream that holds another file; the message is one line for the user."""


def head_sha256(path: Path, n: int) -> str:
    """SHA-256 of the first `n` bytes of `path` (fewer if the file is shorter)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = n
        while remaining > 0:
            chunk = f.read(min(remaining, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


class FileIdentity(BaseModel):
    path: str  # resolved
    size: int
    mtime: float
    head_sha256: str
    head_bytes: int  # how many bytes the hash covers: min(size, HEAD_BYTES)

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        resolved = Path(os.path.realpath(path))
        st = resolved.stat()
        n = min(st.st_size, HEAD_BYTES)
        digest = head_sha256(resolved, n)
        return cls(path=str(resolved), size=st.st_size, mtime=st.st_mtime, head_sha256=digest, head_bytes=n)

    @classmethod
    def load(cls, data: dict[str, Any] | None) -> FileIdentity | None:
        return cls.model_validate(data) if data else None

    def describe(self) -> str:
        return f"{self.path} ({self.size:,} bytes)"


def relation(stored: FileIdentity, path: Path, size: int | None = None) -> Relation:
    """What the file at `path` is to the one `stored` describes (see the module docstring)."""
    size = Path(path).stat().st_size if size is None else size
    if size < stored.size:
        return "different"
    if head_sha256(Path(path), stored.head_bytes) != stored.head_sha256:
        return "different"
    return "same" if size == stored.size else "grew"
