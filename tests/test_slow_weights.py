"""Slow-weights files: exact round trips, refused damage, and which θ a fresh memory starts from."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vsalmonn.memory_store import MemoryConfig, StreamMemory, slow_weights
from vsalmonn.memory_store.memory import ttt_config
from vsalmonn.memory_store.slow_weights import (
    SlowWeightsInfo,
    load_slow_weights,
    resolve_slow_weights,
    save_slow_weights,
)
from vsalmonn.memory_store.ttt import TTTLayer
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.settings import Settings

from .test_memory import assert_states_equal, small_config, write_script

ENCODERS = dict(vision_encoder="efficientnet-lite0", text_encoder="minilm")


@pytest.fixture(autouse=True)
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A shipped location of the test's own (absent until written) and no cache or warnings from before."""
    path = tmp_path / "shipped" / slow_weights.SHIPPED
    monkeypatch.setattr(slow_weights, "shipped_path", lambda: path)
    monkeypatch.setattr(slow_weights, "_cache", {})
    monkeypatch.setattr(slow_weights, "_warned", set())
    yield path


def trained_state(config: MemoryConfig, seed: int = 1) -> dict[str, torch.Tensor]:
    """θ unlike the untrained initialisation, as a trainer would produce it."""
    gen = torch.Generator().manual_seed(seed)
    layer = TTTLayer(ttt_config(config))
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in layer.state_dict().items()}


def save_for(path: Path, config: MemoryConfig, **overrides: Any) -> dict[str, torch.Tensor]:
    state = trained_state(config)
    fields: dict[str, Any] = dict(ENCODERS, dim=config.dim, heads=config.heads, mlp_ratio=config.mlp_ratio)
    fields.update(overrides)
    save_slow_weights(path, state, **fields)
    return state


def untrained(config: MemoryConfig) -> dict[str, torch.Tensor]:
    return TTTLayer(ttt_config(config)).state_dict()


def layer_state(mem: StreamMemory) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in mem.layer.state_dict().items()}


def test_round_trip_is_exact(tmp_path: Path) -> None:
    cfg = small_config()
    state = trained_state(cfg)
    state["bf16"] = torch.randn(3, 5).bfloat16()
    state["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    info = save_slow_weights(
        tmp_path / "w" / "theta.safetensors",
        state,
        **ENCODERS,
        dim=64,
        heads=4,
        mlp_ratio=2,
        trained={"steps": 10, "loss": 0.25, "config": {"lr": 1e-3}},
    )
    loaded, read_info = load_slow_weights(tmp_path / "w" / "theta.safetensors")
    assert_states_equal(state, loaded)
    assert read_info == info
    assert info.format == 1 and info.encoders == "efficientnet-lite0/minilm"
    assert info.trained == {"steps": 10, "loss": 0.25, "config": {"lr": 1e-3}}
    assert len(info.checksum) == 64
    assert os.listdir(tmp_path / "w") == ["theta.safetensors"]  # no temporary file left behind
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # the file gets the permissions of any new file, not a temporary file's 0600
    assert (tmp_path / "w" / "theta.safetensors").stat().st_mode == plain.stat().st_mode


def test_a_failed_save_leaves_nothing(tmp_path: Path) -> None:
    shared = torch.zeros(4)
    with pytest.raises(Exception):  # noqa: B017 (safetensors refuses tensors that share memory)
        save_slow_weights(
            tmp_path / "t.safetensors", {"a": shared, "b": shared}, **ENCODERS, dim=4, heads=1, mlp_ratio=1
        )
    assert os.listdir(tmp_path) == []


def test_a_rewritten_tensor_fails_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_for(path, small_config())
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    state["gate"] = state["gate"] + 1
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_slow_weights(path)


def test_a_flipped_byte_fails_the_checksum(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_for(path, small_config())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_slow_weights(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello, this is no safetensors file\n", "not a safetensors file"),
        (b"", "not a safetensors file"),
        (None, "not a file"),
    ],
)
def test_unreadable_files_give_one_line(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "t.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as err:
        load_slow_weights(path)
    assert "\n" not in str(err.value)


def test_metadata_is_required(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"x": torch.ones(3)}, str(path))
    with pytest.raises(ValueError, match="no vsalmonn metadata"):
        load_slow_weights(path)
    save_file({"x": torch.ones(3)}, str(path), metadata={"vsalmonn": json.dumps({"dim": 3})})
    with pytest.raises(ValueError, match="bad vsalmonn metadata") as err:
        load_slow_weights(path)
    assert "\n" not in str(err.value)


def test_untrained_means_untrained(shipped: Path) -> None:
    cfg = small_config(slow_weights="untrained")
    save_for(shipped, cfg)
    assert resolve_slow_weights(cfg) is None
    assert_states_equal(untrained(cfg), layer_state(StreamMemory(cfg)))


def test_default_without_a_shipped_file_is_untrained(caplog: pytest.LogCaptureFixture) -> None:
    cfg = small_config()
    with caplog.at_level(logging.WARNING):
        mem = StreamMemory(cfg)
    assert_states_equal(untrained(cfg), layer_state(mem))
    assert not caplog.records


def test_default_uses_a_fitting_shipped_file(shipped: Path) -> None:
    cfg = small_config()
    state = save_for(shipped, cfg)
    assert_states_equal(state, layer_state(StreamMemory(cfg)))


def test_default_with_other_encoders_warns_once_and_stays_untrained(
    shipped: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_for(shipped, small_config())
    cfg = small_config(encoders="clip/minilm")
    with caplog.at_level(logging.WARNING, logger=slow_weights.__name__):
        mems = [StreamMemory(cfg) for _ in range(3)]
    for mem in mems:
        assert_states_equal(untrained(cfg), layer_state(mem))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "efficientnet-lite0/minilm" in message and "clip/minilm" in message
    assert "untrained" in message and "vsalmonn train-memory" in message and "\n" not in message


def test_default_with_other_sizes_is_untrained(shipped: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_for(shipped, small_config(), dim=384, heads=8, mlp_ratio=4)
    cfg = small_config()
    with caplog.at_level(logging.WARNING, logger=slow_weights.__name__):
        assert resolve_slow_weights(cfg) is None
    assert "dim 384" in caplog.text and "dim 64" in caplog.text


def test_a_damaged_shipped_file_warns_and_stays_untrained(
    shipped: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shipped.parent.mkdir()
    shipped.write_bytes(b"not really")
    with caplog.at_level(logging.WARNING, logger=slow_weights.__name__):
        assert resolve_slow_weights(small_config()) is None
    assert "not a safetensors file" in caplog.text


def test_an_explicit_path_must_fit(tmp_path: Path) -> None:
    path = tmp_path / "theta.safetensors"
    state = save_for(path, small_config())
    assert_states_equal(state, layer_state(StreamMemory(small_config(slow_weights=str(path)))))
    with pytest.raises(ValueError, match="clip/minilm") as err:
        StreamMemory(small_config(slow_weights=str(path), encoders="clip/minilm"))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="mlp_ratio 4"):
        StreamMemory(small_config(slow_weights=str(path), mlp_ratio=4))
    with pytest.raises(ValueError, match="not a file"):
        StreamMemory(small_config(slow_weights=str(tmp_path / "missing.safetensors")))


def test_an_explicit_path_must_match_the_layer_options_it_was_trained_under(tmp_path: Path) -> None:
    rope = small_config(rope=True)
    path = tmp_path / "rope.safetensors"
    state = save_for(path, rope, trained={"memory": rope.model_dump(mode="json")})
    assert_states_equal(state, layer_state(StreamMemory(small_config(slow_weights=str(path), rope=True))))
    with pytest.raises(ValueError, match=r"trained with rope True \(the memory: False\)") as err:
        StreamMemory(small_config(slow_weights=str(path)))
    assert "\n" not in str(err.value)
    # an older file records only the fields its training config set; the rest were at their defaults
    old = tmp_path / "old.safetensors"
    save_for(old, small_config(), trained={"train": {"memory": {"optimizer": "hf_cg"}}})
    StreamMemory(small_config(slow_weights=str(old)))
    with pytest.raises(ValueError, match="inner_gelu 'exact'"):
        StreamMemory(small_config(slow_weights=str(old), inner_gelu="tanh"))


def test_an_old_files_hf_cg_is_the_newton_solver(tmp_path: Path) -> None:
    """Before issue 17's rename "hf_cg" named the solver now called hf_cg_newton."""
    path = tmp_path / "old.safetensors"
    save_for(path, small_config(), trained={"train": {"memory": {"optimizer": "hf_cg"}}})
    assert slow_weights.load_slow_weights(path)[1].trained_memory()["optimizer"] == "hf_cg_newton"
    new = tmp_path / "new.safetensors"
    save_for(new, small_config(), trained={"memory": small_config(optimizer="hf_cg").model_dump(mode="json")})
    assert slow_weights.load_slow_weights(new)[1].trained_memory()["optimizer"] == "hf_cg"


def test_tensors_that_do_not_fit_the_layer_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "theta.safetensors"
    save_slow_weights(path, {"qkv": torch.zeros(3)}, **ENCODERS, dim=64, heads=4, mlp_ratio=2)
    with pytest.raises(ValueError, match="do not fit the TTT layer") as err:
        StreamMemory(small_config(slow_weights=str(path)))
    assert "\n" not in str(err.value)


def test_without_ttt_the_memory_stays_untrained(shipped: Path, tmp_path: Path) -> None:
    save_for(shipped, small_config())
    for choice in ("default", str(shipped)):
        cfg = small_config(ttt=False, slow_weights=choice)
        assert_states_equal(untrained(cfg), layer_state(StreamMemory(cfg)))


def test_files_are_read_once_until_they_change(shipped: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_config()
    first = save_for(shipped, cfg)
    reads: list[Path] = []
    real = slow_weights.load_slow_weights

    def counting(path: Path) -> Any:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(slow_weights, "load_slow_weights", counting)
    for _ in range(3):
        assert_states_equal(first, layer_state(StreamMemory(cfg)))
    assert len(reads) == 1
    second = {k: v * 2 for k, v in first.items()}
    save_slow_weights(shipped, second, **ENCODERS, dim=64, heads=4, mlp_ratio=2)
    st = shipped.stat()
    os.utime(shipped, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # coarse file-system clocks
    assert_states_equal(second, layer_state(StreamMemory(cfg)))
    assert len(reads) == 2


def test_a_checkpoint_keeps_its_own_slow_weights(shipped: Path) -> None:
    state = save_for(shipped, small_config())
    trained_mem = StreamMemory(small_config())
    write_script(trained_mem, 3, range(4))
    saved = trained_mem.state_dict()
    resumed = StreamMemory(small_config(slow_weights="untrained", encoders="clip/minilm"))
    resumed.load_state_dict(saved)
    assert_states_equal(state, layer_state(resumed))
    write_script(trained_mem, 3, range(4, 6))
    write_script(resumed, 3, range(4, 6))
    assert_states_equal(trained_mem.state_dict()["banks"], resumed.state_dict()["banks"])


def test_a_checkpoint_from_before_the_fields_loads() -> None:
    mem = StreamMemory(small_config())
    write_script(mem, 5, range(3))
    saved = mem.state_dict()
    for key in ("slow_weights", "encoders"):
        del saved["config"][key]
    resumed = StreamMemory(small_config(slow_weights="untrained"))
    resumed.load_state_dict(saved)
    assert_states_equal(mem.state_dict()["banks"], resumed.state_dict()["banks"])
    saved["config"]["visual_slots"] = 128
    with pytest.raises(ValueError, match=r"different configuration \(visual_slots\)"):
        resumed.load_state_dict(saved)


def test_settings_memory_follows_the_perception_encoders() -> None:
    assert Settings().memory.encoders == "efficientnet-lite0/minilm"
    settings = Settings.model_validate({"perception": {"vision_encoder": "clip"}})
    assert settings.memory.encoders == "clip/minilm"
    assert "encoders" not in settings.memory.model_fields_set
    again = Settings(memory=settings.memory, perception=PerceptionConfig(text_encoder="clip"))
    assert again.memory.encoders == "efficientnet-lite0/clip"
    explicit = Settings.model_validate(
        {"perception": {"vision_encoder": "clip"}, "memory": {"encoders": "efficientnet-lite0/minilm"}}
    )
    assert explicit.memory.encoders == "efficientnet-lite0/minilm"


def test_info_is_frozen() -> None:
    info = SlowWeightsInfo(**ENCODERS, dim=64, heads=4, mlp_ratio=2, checksum="0" * 64)
    with pytest.raises(ValueError):
        info.dim = 32  # type: ignore[misc]
