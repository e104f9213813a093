"""Writing one checkpoint group to an object store in one request per object, and no request more.

Zarr's group and array creation is written for stores that may already hold something: before it writes a
node it reads the node's metadata to refuse an overwrite, with every array it (re)writes the parent group's
metadata "if not exists", and obstore splits every object above 5 MiB into a multipart upload (create, two
part PUTs, complete). On local disk those are a few `stat` calls; against S3 each is an HTTP request. Before
this module a checkpoint of the full default memory made 223 requests to write its 175 objects
(docs/benchmarks.md, "scale: checkpoints in object storage").

The store's commit protocol makes all of that redundant: a group is written under a **fresh key**
(``<seq>-<16 random hex>.zarr``, objects.py) that nothing was ever written under and nothing else writes
under, so the only objects below it are the ones this write puts there. `FreshKeyStore` answers existence
checks, reads and listings of the group's own key from what it has written so far, skips a "set if not
exists" of an object it already wrote, and counts the bytes it wrote (the group's stored size, with no
listing afterwards). Every object still goes to the server, each in one PUT that must succeed; nothing
about when a group counts as committed changes (the catalog row, after the last PUT, store.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import ObjectStore, WrapperStore

MULTIPART_ABOVE = 64 * 2**20  # one PUT up to this size (S3 takes 5 GB in one); a multipart upload above it
PART_BYTES = 16 * 2**20  # the part size of such an upload (S3: 5 MiB at least)
KEEP_BELOW = 64 * 2**10  # objects up to this size are kept by `FreshKeyStore` to answer reads of them


class SinglePutStore(ObjectStore):  # type: ignore[type-arg]
    """zarr's obstore-backed store, with each object up to `MULTIPART_ABOVE` PUT in one request.

    obstore's default turns anything above 5 MiB (a chunk of a bank) into a multipart upload of four
    requests; the object is in memory already, so one PUT costs nothing but is 3 round trips shorter."""

    async def set(self, key: str, value: Buffer) -> None:
        import obstore

        self._check_writable()
        data = value.as_buffer_like()
        if len(value) <= MULTIPART_ABOVE:
            await obstore.put_async(self.store, key, data, use_multipart=False)
        else:
            await obstore.put_async(self.store, key, data, use_multipart=True, chunk_size=PART_BYTES)


class FreshKeyStore(WrapperStore[Store]):
    """The store of a group being written under a fresh key: what is below the key is what this write put
    there, so questions about it are answered here instead of by the server (the module's docstring).

    `written` maps each object PUT so far to its size in bytes; the small ones (metadata, which zarr reads
    back to check that an array's parent is a group) are kept to answer those reads."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.written: dict[str, int] = {}
        self._kept: dict[str, Buffer] = {}

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key not in self.written:
            return None  # nothing below a fresh key that this write did not put there
        if key in self._kept and byte_range is None:
            return prototype.buffer.from_bytes(self._kept[key].to_bytes())
        return await self._store.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return key in self.written

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(key, value)
        self.written[key] = len(value)  # only once the PUT succeeded
        if len(value) <= KEEP_BELOW:
            self._kept[key] = value

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if key not in self.written:  # zarr rewrites the group's metadata with every array it creates
            await self.set(key, value)

    async def is_empty(self, prefix: str) -> bool:
        return not any(_below(self.written, prefix))

    async def list(self) -> AsyncIterator[str]:  # type: ignore[override]
        for key in sorted(self.written):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        for key in sorted(_below(self.written, prefix)):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        head = prefix.rstrip("/") + "/" if prefix else ""
        for name in sorted({k[len(head) :].split("/", 1)[0] for k in _below(self.written, head)}):
            yield name

    async def getsize(self, key: str) -> int:
        if key not in self.written:
            raise FileNotFoundError(key)
        return self.written[key]

    async def getsize_prefix(self, prefix: str) -> int:
        return sum(self.written[k] for k in _below(self.written, prefix))

    def _with_store(self, store: Store) -> Any:
        raise NotImplementedError("a FreshKeyStore belongs to one write; it is not reopened")


def _below(keys: Iterable[str], prefix: str) -> list[str]:
    return [k for k in keys if k.startswith(prefix)]
