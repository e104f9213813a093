"""Checkpoints in an S3 object store (moto's real S3 server on loopback, tests/s3_server.py).

The commit protocol without a rename: each group under a fresh key, the catalog row the only pointer, groups
without a row collected as garbage, retention deleting objects, and a write cut off half way by a lost
endpoint leaving the previous checkpoint loadable and the stream able to go on once the endpoint is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from vsalmonn.memory_store import StreamMemory
from vsalmonn.memory_store.config import RetentionPolicy, S3Options, StoreConfig
from vsalmonn.memory_store.models import Checkpoint
from vsalmonn.memory_store.objects import ObjectStoreError, S3Groups
from vsalmonn.memory_store.store import MemoryStore, StoreError

from . import media, s3_server, store_worker
from .test_cli import assert_one_line_error, in_process
from .test_memory import assert_states_equal

PREFIX = "fleet/ckpt"
# short enough that a lost endpoint fails a write in seconds, long enough for a busy 2-core machine
FAST_FAIL = {"connect_timeout_s": 5.0, "request_timeout_s": 5.0, "max_retries": 2, "retry_timeout_s": 3.0}


@pytest.fixture
def endpoint(s3: s3_server.S3Server) -> Iterator[s3_server.S3Server]:
    """The server, with its endpoint listening again after the test whatever the test did to it."""
    yield s3
    if s3.endpoint._listener is None:
        s3.endpoint.restore()


def s3_config(server: s3_server.S3Server, bucket: str, **store: Any) -> StoreConfig:
    options = S3Options(
        endpoint_url=server.url,
        region=s3_server.REGION,
        access_key_id=s3_server.ACCESS_KEY,  # type: ignore[arg-type]  # pydantic turns it into SecretStr
        secret_access_key=s3_server.SECRET_KEY,  # type: ignore[arg-type]
        **FAST_FAIL,
    )
    return StoreConfig(checkpoints_url=f"s3://{bucket}/{PREFIX}", s3=options, **store)


def fed(chunks: range, seed: int = 0) -> StreamMemory:
    memory = StreamMemory(store_worker.config())
    for i in chunks:
        store_worker.feed(memory, i, seed)
    return memory


def groups_of(server: s3_server.S3Server, bucket: str) -> set[str]:
    """The group folders ('<stream id>/<name>.zarr') that hold at least one object in the bucket."""
    return {"/".join(k.removeprefix(PREFIX + "/").split("/")[:2]) for k in server.keys(bucket, PREFIX + "/")}


def test_checkpoint_to_s3_loads_back_equal_and_resumes(endpoint: s3_server.S3Server, tmp_path: Path) -> None:
    bucket = endpoint.create_bucket()
    config = s3_config(endpoint, bucket, retention=RetentionPolicy(keep_last=2))
    memory = fed(range(4))
    with MemoryStore.open(tmp_path, config) as store, store.writer("cam", config=memory.config) as writer:
        assert isinstance(store.groups, S3Groups)
        first = writer.commit(memory.state_dict(), source_offset=4.0)
        assert first.location.startswith(f"s3://{bucket}/{PREFIX}/{writer.stream_id}/00000001-")
        assert first.bytes_stored > 0 and first.bytes_raw > 0
    # nothing of a group lands on local disk: only the writer's lock and the stream's sidecar
    assert not list((tmp_path / "memory").rglob("*.zarr"))
    assert groups_of(endpoint, bucket) == {_key(first.location)}

    with MemoryStore.open(tmp_path, config) as store, store.writer("cam") as writer:
        restored, info = store.open_memory("cam")
        assert info is not None and info.seq == 1 and info.source_offset == 4.0
        assert_states_equal(memory.state_dict(), restored.state_dict())
        for i in range(4, 6):  # the stream goes on from its checkpoint: same sequence, new keys
            store_worker.feed(restored, i, 0)
            last = writer.commit(restored.state_dict(), source_offset=float(i + 1))
        kept = store.checkpoints("cam")
        assert [c.seq for c in kept] == [3, 2]  # keep_last=2: retention dropped seq 1
        state, latest = store.load_latest("cam")
        assert latest.seq == 3 == last.seq
        assert_states_equal(fed(range(6)).state_dict(), state)
    # retention deleted the objects of seq 1, not only its row
    assert groups_of(endpoint, bucket) == {_key(c.location) for c in kept}
    assert _key(first.location) not in groups_of(endpoint, bucket)


def _key(location: str) -> str:
    return location.split(f"{PREFIX}/", 1)[1]


def test_gc_removes_groups_without_a_row_and_keeps_committed(
    endpoint: s3_server.S3Server, tmp_path: Path
) -> None:
    bucket = endpoint.create_bucket()
    config = s3_config(endpoint, bucket)
    memory = fed(range(2))
    with MemoryStore.open(tmp_path, config) as store:
        with store.writer("cam", config=memory.config) as writer:
            committed = writer.commit(memory.state_dict())
            # an abandoned write: a whole group, and part of one, that no row names
            orphan = store.groups.new_key(writer.stream_id, 2)
            store.groups.write(orphan, memory.state_dict(), {})
            stream_id = writer.stream_id
        half = f"{stream_id}/00000003-0123456789abcdef.zarr"
        assert {orphan} < groups_of(endpoint, bucket)
        store.groups.write(half, memory.state_dict(), {})
        store.groups._root.delete(f"{half}/zarr.json")  # its group metadata never arrived

        # the grace keeps young garbage (a writer elsewhere may still be writing it)
        assert store.collect_garbage(min_age_s=3600.0) == []
        assert store.collect_garbage(min_age_s=0.0, dry_run=True) == [
            f"s3://{bucket}/{PREFIX}/{orphan}",
            f"s3://{bucket}/{PREFIX}/{half}",
        ]
        assert len(groups_of(endpoint, bucket)) == 3
        removed = store.collect_garbage(min_age_s=0.0)
        assert len(removed) == 2
        assert groups_of(endpoint, bucket) == {_key(committed.location)}
        state, info = store.load_latest("cam")
        assert info.seq == 1
        assert_states_equal(memory.state_dict(), state)


def _toml(server: s3_server.S3Server, bucket: str) -> str:
    lines = [
        "[store]",
        f'checkpoints_url = "s3://{bucket}/{PREFIX}"',
        "[store.s3]",
        f'endpoint_url = "{server.url}"',
        f'region = "{s3_server.REGION}"',
        f'access_key_id = "{s3_server.ACCESS_KEY}"',
        f'secret_access_key = "{s3_server.SECRET_KEY}"',
        *[f"{k} = {v}" for k, v in FAST_FAIL.items()],
    ]
    return "\n".join(lines) + "\n"


def test_store_gc_command(
    endpoint: s3_server.S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = endpoint.create_bucket()
    config = s3_config(endpoint, bucket)
    memory = fed(range(2))
    with MemoryStore.open(tmp_path, config) as store, store.writer("cam", config=memory.config) as writer:
        committed = writer.commit(memory.state_dict())
        orphan = store.groups.new_key(writer.stream_id, 2)
        store.groups.write(orphan, memory.state_dict(), {})
    cfg = tmp_path / "vsalmonn.toml"
    cfg.write_text(_toml(endpoint, bucket), encoding="utf-8")
    common = ("--data", str(tmp_path), "--config", str(cfg))
    young = in_process(capsys, "store", "gc", *common)
    assert young.returncode == 0 and "deleted 0 checkpoint group(s)" in young.stdout, young
    result = in_process(capsys, "store", "gc", "--min-age", "0", *common)
    assert result.returncode == 0, result
    assert f"deleted s3://{bucket}/{PREFIX}/{orphan}" in result.stdout and "deleted 1 " in result.stdout
    assert groups_of(endpoint, bucket) == {_key(committed.location)}
    # export copies the group's objects; deleting the stream deletes them
    from vsalmonn.memory_store.deletion import delete_stream
    from vsalmonn.memory_store.portable import export_stream

    with MemoryStore.open(tmp_path, config) as store:
        manifest = export_stream(store, "cam", tmp_path / "cam.zip")
        assert manifest.checkpoint_checksum == committed.checksum
        assert delete_stream(store, "cam") is not None
    assert groups_of(endpoint, bucket) == set()
    # a lost catalog with groups in the bucket: refused, not started afresh over them
    with MemoryStore.open(tmp_path, config) as store, store.writer("cam", config=memory.config) as writer:
        writer.commit(memory.state_dict())
    (tmp_path / "catalog.sqlite").unlink()
    with pytest.raises(StoreError, match=f"s3://{bucket}/{PREFIX} holds checkpoint groups"):
        MemoryStore.open(tmp_path, config)
    shown = in_process(capsys, "config", "show", *common)
    assert shown.returncode == 0 and s3_server.SECRET_KEY not in shown.stdout and "**********" in shown.stdout


def test_write_cut_half_way_keeps_the_previous_checkpoint(
    endpoint: s3_server.S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = endpoint.create_bucket()
    config = s3_config(endpoint, bucket)
    memory = fed(range(3))
    with MemoryStore.open(tmp_path, config) as store, store.writer("cam", config=memory.config) as writer:
        first = writer.commit(memory.state_dict(), source_offset=3.0)
        stream_id = writer.stream_id
        store_worker.feed(memory, 3, 0)

        # the endpoint goes away right after the first chunk of an array has been PUT; the other chunks,
        # which a write of a few objects could otherwise finish in the meantime, are sent after the cut
        original = S3Groups._group_store
        put_chunks: list[str] = []
        claimed: list[str] = []  # the chunk that goes first

        def cut_after_first_chunk(self: S3Groups, key: str, read_only: bool) -> Any:
            import asyncio

            from zarr.storage import WrapperStore

            class Cutting(WrapperStore[Any]):
                async def set(self, name: str, value: Any) -> None:
                    if "/c/" not in name:
                        await self._store.set(name, value)
                    elif not claimed:
                        claimed.append(name)
                        await self._store.set(name, value)
                        put_chunks.append(f"{key}/{name}")
                        endpoint.endpoint.cut()
                    else:
                        while not put_chunks and endpoint.endpoint._listener is not None:
                            await asyncio.sleep(0.005)  # until the first chunk is in and the cut made
                        await self._store.set(name, value)

            return Cutting(original(self, key, read_only))

        monkeypatch.setattr(S3Groups, "_group_store", cut_after_first_chunk)
        started = time.monotonic()
        with pytest.raises(ObjectStoreError) as failed:
            writer.commit(memory.state_dict(), source_offset=4.0)
        took = time.monotonic() - started
        monkeypatch.setattr(S3Groups, "_group_store", original)
        message = str(failed.value)
        assert "\n" not in message and message.startswith("cannot write checkpoint group s3://"), message
        assert took < 30, took  # bounded by the timeouts and retries, not a hang
        assert put_chunks and put_chunks[0].startswith(f"{stream_id}/00000002-")

        # half a group is in the bucket (its first chunk at least), and no row names it
        partial = put_chunks[0].split("/", 2)
        partial_group = f"{partial[0]}/{partial[1]}"
        assert partial_group in groups_of(endpoint, bucket)
        with store.catalog.session() as s:
            assert s.scalars(select(Checkpoint.seq)).all() == [1]
        # while the endpoint is down, reading fails as unreachable: not taken for damage
        with pytest.raises(ObjectStoreError):
            store.load_latest("cam")
        assert store.failed.get(stream_id, set()) == set()

    # a dead endpoint at startup: one line from the store and from the CLI, exit status 2
    with pytest.raises(ObjectStoreError, match="cannot be reached"):
        MemoryStore.open(tmp_path, config)

    endpoint.endpoint.restore()  # the server is back, with what was written before the cut
    with MemoryStore.open(tmp_path, config) as store, store.writer("cam") as writer:
        # the resumed writer collected the half-written group; the previous checkpoint loads
        assert partial_group not in groups_of(endpoint, bucket)
        restored, info = store.open_memory("cam")
        assert info is not None and info.seq == 1 and info.location == first.location
        assert_states_equal(fed(range(3)).state_dict(), restored.state_dict())
        store_worker.feed(restored, 3, 0)
        again = writer.commit(restored.state_dict(), source_offset=4.0)
        assert again.seq == 2 and again.location != f"s3://{bucket}/{PREFIX}/{partial_group}"  # a fresh key
        assert_states_equal(memory.state_dict(), store.load_latest("cam")[0])


def test_dead_endpoint_cli(
    endpoint: s3_server.S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = endpoint.create_bucket()
    cfg = tmp_path / "vsalmonn.toml"
    cfg.write_text(_toml(endpoint, bucket), encoding="utf-8")
    with MemoryStore.open(tmp_path, s3_config(endpoint, bucket)) as store, store.writer("cam"):
        pass  # a catalog with a stream, so that `status` gets as far as the object store
    clip = media.write_media(tmp_path / "clip.mp4", video_times=[0.0, 0.5], rate=2)
    endpoint.endpoint.cut()
    started = time.monotonic()
    for command in (("status",), ("store", "gc"), ("ingest", str(clip), "--stream", "cam")):
        result = in_process(capsys, *command, "--data", str(tmp_path), "--config", str(cfg))
        assert_one_line_error(result, f"s3://{bucket}/{PREFIX}", "cannot be reached")
    assert time.monotonic() - started < 30
    endpoint.endpoint.restore()
    missing = tmp_path / "missing.toml"
    missing.write_text(_toml(endpoint, "no-such-bucket"), encoding="utf-8")
    result = in_process(capsys, "status", "--data", str(tmp_path), "--config", str(missing))
    assert_one_line_error(result, "s3://no-such-bucket")


@pytest.mark.postgresql
def test_s3_groups_with_a_postgresql_catalog(
    endpoint: s3_server.S3Server, tmp_path: Path, postgres_server: Any
) -> None:
    bucket = endpoint.create_bucket()
    url = postgres_server.url(postgres_server.create_database())
    config = s3_config(endpoint, bucket, catalog_url=url)
    memory = fed(range(3))
    with (
        MemoryStore.open(tmp_path / "node-a", config) as store,
        store.writer("cam", config=memory.config) as w,
    ):
        w.commit(memory.state_dict())
    # another node: its own (empty) data directory, the same catalog and bucket
    with MemoryStore.open(tmp_path / "node-b", config, read_only=True) as store:
        state, info = store.load_latest("cam")
        assert info.seq == 1
        assert_states_equal(memory.state_dict(), state)


def test_settings_checkpoints_url_and_s3_secrets(tmp_path: Path) -> None:
    from vsalmonn.settings import SettingsError, load_settings

    environ = {
        "VSALMONN_DATA_DIR": str(tmp_path),
        "VSALMONN_STORE__CHECKPOINTS_URL": "s3://site-a/memory",
        "VSALMONN_STORE__S3__ENDPOINT_URL": "http://127.0.0.1:9",
        "VSALMONN_STORE__S3__SECRET_ACCESS_KEY": "hunter2",
    }
    settings = load_settings(environ=environ)
    store = settings.store
    assert store.checkpoints_url == "s3://site-a/memory"
    assert (
        store.s3.secret_access_key is not None and store.s3.secret_access_key.get_secret_value() == "hunter2"
    )
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.model_dump_json()
    # the default stays today's folder; a path or file:// URL is a folder too
    default = load_settings(environ={"VSALMONN_DATA_DIR": str(tmp_path)}).store
    assert default.checkpoints_url is None
    from vsalmonn.memory_store.objects import LocalGroups, open_groups

    assert open_groups(default, tmp_path).location("") == tmp_path / "memory"
    elsewhere = open_groups(StoreConfig(checkpoints_url=f"file://{tmp_path}/elsewhere"), tmp_path / "data")
    assert isinstance(elsewhere, LocalGroups)
    assert elsewhere.row_path("s/1.zarr") == str(tmp_path / "elsewhere/s/1.zarr")  # absolute: outside data
    inside = open_groups(StoreConfig(checkpoints_url="ckpt"), tmp_path)  # relative: below the data dir
    assert inside.row_path("s/1.zarr") == "ckpt/s/1.zarr" and inside.key_of("ckpt/s/1.zarr") == "s/1.zarr"
    for bad, reason in (("ftp://x/y", "scheme 'ftp'"), ("s3:///prefix", "needs a bucket")):
        with pytest.raises(SettingsError, match=reason):
            load_settings(environ={**environ, "VSALMONN_STORE__CHECKPOINTS_URL": bad})


def test_local_checkpoints_url_elsewhere(tmp_path: Path) -> None:
    """A folder outside the data directory: rows keep absolute paths, the protocol is the folder one."""
    config = StoreConfig(checkpoints_url=str(tmp_path / "shared-disk"))
    memory = fed(range(2))
    with MemoryStore.open(tmp_path / "data", config) as store, store.writer("cam", config=memory.config) as w:
        info = w.commit(memory.state_dict())
        assert info.location == str(tmp_path / "shared-disk" / w.stream_id / "00000001.zarr")
        assert info.path.is_dir() and not list((tmp_path / "data" / "memory").rglob("*.zarr"))
        assert_states_equal(memory.state_dict(), store.load_latest("cam")[0])


def test_store_gc_on_local_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same command on today's folders: orphans go, a stream being written is left alone."""
    memory = fed(range(2))
    with MemoryStore(tmp_path) as store:
        with store.writer("cam", config=memory.config) as writer:
            committed = writer.commit(memory.state_dict())
            orphan = store.groups.new_key(writer.stream_id, 2)
            store.groups.write(orphan, memory.state_dict(), {})
        with store.writer("busy", config=memory.config) as busy:
            busy_orphan = store.groups.new_key(busy.stream_id, 1)
            store.groups.write(busy_orphan, memory.state_dict(), {})
            result = in_process(capsys, "store", "gc", "--min-age", "0", "--data", str(tmp_path))
            assert result.returncode == 0, result
            assert result.stdout.splitlines() == [
                f"deleted {tmp_path / 'memory' / orphan}",
                f"deleted 1 checkpoint group(s) without a catalog row from {tmp_path / 'memory'}",
            ]
            assert (tmp_path / "memory" / busy_orphan).is_dir()  # its writer holds the lock
        assert committed.path.is_dir() and not (tmp_path / "memory" / orphan).exists()
    refused = in_process(capsys, "store", "gc", "--min-age", "-1", "--data", str(tmp_path))
    assert_one_line_error(refused, "--min-age -1.0 is negative")


def test_store_check_and_rebuild_in_s3(
    endpoint: s3_server.S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`store check` lists the bucket's groups against the rows (orphans, damage, rows without a group, young
    groups left unjudged); `store rebuild` on another node (no local sidecar) re-catalogues them."""
    import json

    bucket = endpoint.create_bucket()
    config = s3_config(endpoint, bucket)
    memory = fed(range(3))
    with MemoryStore.open(tmp_path / "a", config) as store, store.writer("cam", config=memory.config) as w:
        first = w.commit(fed(range(2)).state_dict(), source_offset=2.0)
        newest = w.commit(memory.state_dict(), source_offset=3.0)
        orphan = store.groups.new_key(w.stream_id, 3)
        store.groups.write(orphan, memory.state_dict(), {})
        half = store.groups.new_key(w.stream_id, 4)
        store.groups.write(half, memory.state_dict(), {})
        store.groups._root.delete(f"{half}/zarr.json")
    cfg = tmp_path / "vsalmonn.toml"
    cfg.write_text(_toml(endpoint, bucket), encoding="utf-8")
    judged = tmp_path / "judged.toml"  # a grace shorter than the groups' age: every group is judged
    judged.write_text(_toml(endpoint, bucket).replace("[store.s3]", "gc_grace_s = 0.001\n[store.s3]"))
    url = f"s3://{bucket}/{PREFIX}"

    young = in_process(capsys, "store", "check", "--data", str(tmp_path / "a"), "--config", str(cfg))
    assert young.returncode == 0, young  # both committed groups verify; the two without a row are too young
    assert f"no row yet, younger than gc_grace_s (a write in progress?), not checked: {url}/{orphan}" in (
        young.stdout
    )
    assert f"checkpoint groups in {url}: 2 of 1 stream(s), 2 verify, 0 fail" in young.stdout, young.stdout
    report = in_process(capsys, "store", "check", "--data", str(tmp_path / "a"), "--config", str(judged))
    assert report.returncode == 1, report
    assert f"  not in the catalog: {url}/{orphan}" in report.stdout
    assert f"  damaged: {url}/{half} (" in report.stdout
    as_json = in_process(
        capsys, "store", "check", "--json", "--data", str(tmp_path / "a"), "--config", str(judged)
    )
    found = json.loads(as_json.stdout)
    assert found["ok"] is False and found["store"] == url and found["missing"] == []
    expected = [(first.location, True, True), (newest.location, True, True)]
    expected += [(f"{url}/{orphan}", True, False), (f"{url}/{half}", False, False)]
    assert sorted((g["path"], g["ok"], g["catalogued"]) for g in found["groups"]) == sorted(expected)

    # the catalog is lost on the node that wrote; another node (its own empty data directory, so no sidecar
    # with the stream's name) rebuilds one from the bucket: the name comes from the groups' commit attributes
    with MemoryStore.open(tmp_path / "a", config) as store:
        store.groups.delete(orphan)
    node_b = tmp_path / "b"
    rebuilt = in_process(capsys, "store", "rebuild", "--data", str(node_b), "--config", str(judged))
    assert rebuilt.returncode == 0, rebuilt
    assert "stream cam (" in rebuilt.stdout and "2 checkpoint(s) catalogued" in rebuilt.stdout
    assert f"set aside (not catalogued): {url}/{half}.damaged" in rebuilt.stdout
    assert half not in groups_of(endpoint, bucket) and f"{half}.damaged" in groups_of(endpoint, bucket)
    assert any(k.startswith(f"{PREFIX}/{half}.damaged/") for k in endpoint.keys(bucket, PREFIX + "/"))
    with MemoryStore.open(node_b, config) as store:
        assert [c.seq for c in store.checkpoints("cam")] == [2, 1]
        state, info = store.load_latest("cam")
        assert info.location == newest.location and info.source_offset == 3.0
        assert info.bytes_stored == newest.bytes_stored
        assert_states_equal(memory.state_dict(), state)
        assert half + ".damaged" not in {e.key for e in store.groups.groups()}  # never listed as a group,
        assert store.collect_garbage(min_age_s=0.0) == []  # so never collected as garbage
    healthy = in_process(capsys, "store", "check", "--data", str(node_b), "--config", str(judged))
    assert healthy.returncode == 0, healthy
    refused = in_process(capsys, "store", "rebuild", "--data", str(node_b), "--config", str(judged))
    assert_one_line_error(refused, "nothing to rebuild")
    # a row whose group is gone
    with MemoryStore.open(node_b, config) as store:
        store.groups.delete(store.groups.key_of(newest.location))
    gone = in_process(capsys, "store", "check", "--data", str(node_b), "--config", str(judged))
    assert (
        gone.returncode == 1
        and f"in the catalog but missing from the store: {newest.location}" in gone.stdout
    )
    endpoint.endpoint.cut()
    for action in ("check", "rebuild"):
        dead = in_process(capsys, "store", action, "--data", str(node_b), "--config", str(judged))
        assert_one_line_error(dead, url, "cannot be reached")


def test_a_checkpoint_is_one_put_per_object(endpoint: s3_server.S3Server, tmp_path: Path) -> None:
    """Writing a group asks the server nothing (no existence GET, no listing) and PUTs each object once;
    small arrays share packs, a big one is one object per 6 MiB chunk; loading GETs each object once."""
    import torch

    bucket = endpoint.create_bucket()
    state = {
        "big": torch.randn(5000, 384),  # 7.7 MB: two chunks of 4,096 and 904 rows
        "small": {f"s{i}": torch.arange(100 + i) for i in range(30)},  # one int64 pack
        "flags": torch.tensor([True, False]),  # and one 1-byte pack
        "note": "cam/1",
    }
    with MemoryStore.open(tmp_path, s3_config(endpoint, bucket)) as store:
        groups = store.groups
        key = groups.new_key("stream", 1)
        with endpoint.requests.record() as written:
            info = groups.write(key, state, {})
        objects = endpoint.keys(bucket, f"{PREFIX}/{key}/")
        names = sorted(k.removeprefix(f"{PREFIX}/{key}/") for k in objects)
        assert names == [
            "a000/c/0/0", "a000/c/1/0", "a000/zarr.json", "p1/c/0", "p1/zarr.json", "p8/c/0", "p8/zarr.json",
            "zarr.json",
        ]  # fmt: skip
        assert sorted(path for _, path, _ in written) == [f"/{bucket}/{k}" for k in objects]
        assert {method for method, _, _ in written} == {"PUT"}
        assert info.bytes_stored == groups.stored_bytes(key)  # counted from the PUTs, equal to the listing
        with endpoint.requests.record() as read:
            loaded, checksum = groups.read(key, info.checksum)
        assert checksum == info.checksum
        assert_states_equal(state, loaded)
        assert sorted(path for method, path, _ in read if method == "GET") == [
            f"/{bucket}/{k}" for k in objects
        ]
        assert len(read) == len(objects)

        # a stream's commit of its memory: the same, plus nothing (no retention yet)
        memory = fed(range(4))
        with store.writer("cam", config=memory.config) as writer, endpoint.requests.record() as commit:
            committed = writer.commit(memory.state_dict())
        group = endpoint.keys(bucket, f"{PREFIX}/{_key(committed.location)}/")
        assert {m for m, _, _ in commit} == {"PUT"} and len(commit) == len(group) <= 12, commit
