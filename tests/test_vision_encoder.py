"""The default vision encoder, EfficientNet-Lite0 grounded in MiniLM's text space: real weights, real frames.

Frames of ../shared/media/vtest.avi (street surveillance: a road, a lamp post, a van, pedestrians) are decoded
here with PyAV directly, so these tests do not depend on the project's decoder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders import (
    EncoderError,
    FrameTokens,
    VisionEncoder,
    create_encoder,
    text,
    vision,
)

from .test_text_encoder import NO_NETWORK, offline_env

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
VTEST = MEDIA / "vtest.avi"

# What EfficientNet-Lite0 names in vtest.avi's frames. Its top 5 over all 80 seconds (1 frame/s) used only
# these: planetarium 79 frames, pole 74, mobile home 71, flagpole 64, unicycle 35, patio 17, alp 17,
# shopping cart 14, maypole 14, trolleybus 6, sundial 4, ski 2, garbage truck, traffic light, yurt 1 each:
# the lamp post reads as a pole, the white van and low buildings as a mobile home. The set below holds the
# street-ish ones (street furniture, outdoor built structures, vehicles, things people push or ride) and
# leaves out the unrelated ones (planetarium, alp, ski, sundial, yurt), so every frame must still show one
# plausible label.
STREET_CLASSES = {
    "pole",
    "flagpole",
    "maypole",
    "street sign",
    "traffic light",
    "parking meter",
    "mobile home",
    "patio",
    "unicycle",
    "shopping cart",
    "trolleybus",
    "garbage truck",
    "minivan",
    "moving van",
    "police van",
    "cab",
    "jeep",
    "pickup",
    "tow truck",
    "streetcar",
    "bicycle-built-for-two",
    "mountain bike",
}


class FakeText:
    """A text encoder that counts what it embeds: deterministic random unit rows seeded by the text."""

    name = "fake"
    dim = 16

    def __init__(self) -> None:
        self.seen = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen += len(texts)
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts]
        out = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def decode_frames(path: Path, seconds: list[float], short_side: int = 360) -> list[np.ndarray]:
    """RGB frames at the given stream times, scaled so that the short side is 360 like the decoder does."""
    import av

    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        wanted = list(seconds)
        for frame in container.decode(stream):
            if not wanted:
                break
            if frame.pts is not None and float(frame.pts * stream.time_base) + 1e-6 >= wanted[0]:
                scale = short_side / min(frame.width, frame.height)
                w, h = round(frame.width * scale / 2) * 2, round(frame.height * scale / 2) * 2
                out.append(frame.to_ndarray(format="rgb24", width=w, height=h))
                wanted.pop(0)
    return out


@pytest.fixture(scope="module")
def street() -> list[np.ndarray]:
    if not VTEST.is_file():
        pytest.skip(f"real media absent: {VTEST} (the shared/ folder beside the repository)")
    frames = decode_frames(VTEST, [0.0, 25.0, 50.0, 75.0])
    assert len(frames) == 4 and frames[0].shape == (360, 480, 3)
    return frames


@pytest.fixture(scope="module")
def text_encoder() -> text.MiniLMEncoder:
    return text.MiniLMEncoder.from_config(PerceptionConfig(), Path("unused"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def encoder(text_encoder: text.MiniLMEncoder, data_dir: Path) -> vision.EfficientNetLite0Encoder:
    return vision.EfficientNetLite0Encoder.from_config(
        PerceptionConfig(), data_dir, text_encoder=text_encoder
    )


def test_street_frames_get_plausible_labels(
    encoder: vision.EfficientNetLite0Encoder, street: list[np.ndarray]
) -> None:
    assert isinstance(encoder, VisionEncoder)
    for tokens in encoder.encode(street):
        names = [name for name, _ in tokens.labels]
        probs = [p for _, p in tokens.labels]
        assert len(names) == 5 and probs == sorted(probs, reverse=True) and 0 < probs[-1] <= probs[0] <= 1
        first_lemmas = {name.split(",")[0] for name in names}
        assert first_lemmas & STREET_CLASSES, names


def test_tokens_are_unit_rows_global_then_regions(
    encoder: vision.EfficientNetLite0Encoder, street: list[np.ndarray]
) -> None:
    result = encoder.encode(street[:2])
    assert len(result) == 2
    for tokens in result:
        assert isinstance(tokens, FrameTokens)
        assert tokens.tokens.shape == (1 + 2 * 2, 384) and tokens.tokens.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(tokens.tokens, axis=1), 1.0, atol=1e-5)
        assert tokens.kinds == ("global", "region 0 0", "region 0 1", "region 1 0", "region 1 1")
        assert not np.allclose(tokens.tokens[1], tokens.tokens[4])  # regions see different parts


def test_street_query_beats_unrelated_query(
    encoder: vision.EfficientNetLite0Encoder, text_encoder: text.MiniLMEncoder, street: list[np.ndarray]
) -> None:
    cars, soup, people, food = text_encoder.encode(
        ["a street with cars", "a bowl of soup", "people walking outside", "a plate of food"]
    )
    for tokens in encoder.encode(street):
        scene = tokens.tokens[0]
        assert float(scene @ cars) > float(scene @ soup) + 0.1
        # ImageNet names mostly objects and food: without centring the mix, food won here on every frame.
        assert float(scene @ people) > float(scene @ food)


def test_centring_is_what_makes_queries_comparable(
    encoder: vision.EfficientNetLite0Encoder,
    text_encoder: text.MiniLMEncoder,
    street: list[np.ndarray],
    data_dir: Path,
) -> None:
    plain = vision.EfficientNetLite0Encoder(
        encoder.weights, text_encoder, cache_dir=data_dir / "models", center=False
    )
    people, food = text_encoder.encode(["people walking outside", "a plate of food"])
    frame = street[0]
    centred, uncentred = encoder.encode([frame])[0].tokens[0], plain.encode([frame])[0].tokens[0]
    assert float(uncentred @ people) < float(uncentred @ food) and float(centred @ people) > float(
        centred @ food
    )


def test_solid_colour_differs_from_street(
    encoder: vision.EfficientNetLite0Encoder, street: list[np.ndarray]
) -> None:
    blue = np.zeros((360, 480, 3), dtype=np.uint8)
    blue[..., 2] = 200
    road, plain = encoder.encode([street[0], blue])
    assert float(road.tokens[0] @ plain.tokens[0]) < 0.9
    assert road.labels[0][0] != plain.labels[0][0]


def test_any_frame_size_order_and_batching(
    encoder: vision.EfficientNetLite0Encoder, street: list[np.ndarray], data_dir: Path
) -> None:
    """Frames of mixed sizes are grouped by input size and batched, yet come back in order, unchanged."""
    portrait = np.ascontiguousarray(street[1][:, 100:260])  # (360, 160, 3)
    tiny = street[2][::40, ::40]  # (9, 12, 3), not contiguous
    frames = [street[0], portrait, tiny, street[0], street[3]]
    together = encoder.encode(frames)
    assert len(together) == 5
    np.testing.assert_allclose(together[0].tokens, together[3].tokens, atol=1e-5)
    small_batches = vision.EfficientNetLite0Encoder(
        encoder.weights, encoder.text_encoder, cache_dir=data_dir / "models", batch_frames=1
    )
    for a, b in zip(together, small_batches.encode(frames), strict=True):
        np.testing.assert_allclose(a.tokens, b.tokens, atol=1e-4)
        assert [n for n, _ in a.labels] == [n for n, _ in b.labels]
    assert encoder.encode([]) == []
    with pytest.raises(ValueError):
        encoder.encode([np.zeros((10, 10), dtype=np.uint8)])


def test_input_size_keeps_aspect_on_multiples_of_32() -> None:
    assert vision.input_size(360, 480) == (224, 288)  # 4:3
    assert vision.input_size(360, 640) == (224, 384)  # 16:9
    assert vision.input_size(224, 224) == (224, 224)
    assert vision.input_size(640, 360) == (384, 224)  # portrait
    assert vision.input_size(100, 1000) == (224, 448)  # capped at 2:1


def test_class_names_are_the_imagenet_1k_order() -> None:
    classes = vision.imagenet_classes()
    assert len(classes) == 1000 and [w for w, _ in classes] == sorted(w for w, _ in classes)
    assert classes[0] == ("n01440764", "tench, Tinca tinca")
    assert classes[849][1].startswith("teapot") and classes[999][0] == "n15075141"


def test_label_matrix_is_cached_by_labels_and_model(tmp_path: Path) -> None:
    fake = FakeText()
    first = vision.label_matrix(fake, ["cat", "dog", "car"], tmp_path)
    assert first.shape == (3, 16) and fake.seen == 2 + 3  # probes for the model key, then the names
    files = list(tmp_path.glob("label-embeddings-*.npy"))
    assert len(files) == 1

    fake.seen = 0
    np.testing.assert_array_equal(vision.label_matrix(fake, ["cat", "dog", "car"], tmp_path), first)
    assert fake.seen == 2  # only the probes: the names came from the cache

    vision.label_matrix(fake, ["cat", "dog", "bus"], tmp_path)  # other labels: another file
    other = FakeText()
    other.name = "another-model"
    vision.label_matrix(other, ["cat", "dog", "car"], tmp_path)  # other model: another file
    assert len(list(tmp_path.glob("label-embeddings-*.npy"))) == 3

    files[0].write_bytes(b"garbage")  # a damaged cache file is recomputed, not trusted
    fake.seen = 0
    np.testing.assert_array_equal(vision.label_matrix(fake, ["cat", "dog", "car"], tmp_path), first)
    assert fake.seen == 5


def test_label_matrix_is_written_under_data_models(
    encoder: vision.EfficientNetLite0Encoder, data_dir: Path
) -> None:
    cached = list((data_dir / "models").glob("label-embeddings-*.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(np.load(cached[0]), encoder.labels.numpy())


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    fake = FakeText()
    cases = {
        "list.pth": lambda p: torch.save([torch.zeros(3)], p),
        "text.pth": lambda p: p.write_text("not a checkpoint at all"),
        "wrong-keys.pth": lambda p: torch.save({"layer.weight": torch.zeros(3)}, p),
        "empty.pth": lambda p: torch.save({}, p),
    }
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(EncoderError) as err:
            vision.EfficientNetLite0Encoder(path, fake)
        assert "\n" not in str(err.value) and name in str(err.value)
    with pytest.raises(EncoderError):
        create_encoder(
            "vision", "efficientnet-lite0", PerceptionConfig(vision_weights=tmp_path / "absent.pth"), tmp_path
        )


def test_loads_offline(tmp_path: Path, data_dir: Path, encoder: vision.EfficientNetLite0Encoder) -> None:
    """Both models, the class names and the cached label matrix with the hub off and every socket refused.

    The label matrix is taken from this module's data directory (computing it offline is the text encoder's
    offline test), which keeps this fresh interpreter short.
    """
    shutil.copytree(data_dir / "models", tmp_path / "data" / "models")
    script = NO_NETWORK + (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from vsalmonn.perception.config import PerceptionConfig\n"
        "from vsalmonn.perception.encoders import create_encoder\n"
        "enc = create_encoder('vision', 'efficientnet-lite0', PerceptionConfig(), Path(sys.argv[1]))\n"
        "out = enc.encode([np.full((360, 480, 3), 128, dtype=np.uint8)])\n"
        "print(out[0].tokens.shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(5, 384)" in done.stdout
