"""The optional encoders ('clip' for text and vision, 'hf-whisper' for speech) on tiny RANDOM models.

No real CLIP, SigLIP or Whisper weights are available offline, so every model here is randomly initialised,
a few layers of width 32, built and saved into tmp_path by the test itself, with tokenizer files written by
hand (a byte-level BPE vocabulary for CLIP and Whisper; for SigLIP, whose own tokenizer needs sentencepiece,
a word-level tokenizer.json built with the `tokenizers` library). These tests therefore check the loading and
plumbing code only (settings, registry, shapes, unit norms, batching, the regional grid, model sharing, times,
error messages), never the quality of an embedding or a transcript.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from tokenizers.pre_tokenizers import ByteLevel

from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders import (
    EncoderError,
    FrameTokens,
    Segment,
    SpeechEncoder,
    TextEncoder,
    VisionEncoder,
    available_encoders,
    create_encoder,
)
from vsalmonn.perception.encoders.clip import ClipTextEncoder, ClipVisionEncoder
from vsalmonn.perception.encoders.hf_whisper import HFWhisperEncoder

WIDTH = 32  # hidden size of every tiny model
LAYERS = 2
IMAGE = 32  # input side of the tiny vision towers, patches of 8
CLIP_DIM = 16  # CLIP's projection_dim; SigLIP projects onto the vision width (WIDTH)


def _tiny_tower(**extra: object) -> dict[str, object]:
    return dict(
        hidden_size=WIDTH,
        intermediate_size=2 * WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        **extra,
    )


def _write_bpe(folder: Path, vocab: dict[str, int], merges: list[str], tokenizer_config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")


def build_clip(folder: Path) -> Path:
    """A random CLIP with CLIP's byte-level BPE (words end in </w>), 16-d embeddings."""
    from transformers import CLIPConfig, CLIPModel

    chars = sorted(ByteLevel.alphabet())
    tokens = [*chars, *(c + "</w>" for c in chars)]
    merges = ["a t</w>", "o g</w>", "d og</w>", "c at</w>"]
    tokens += [m.replace(" ", "") for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    _write_bpe(
        folder,
        vocab,
        merges,
        {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": 16,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
    )
    config = CLIPConfig(
        text_config=_tiny_tower(
            vocab_size=len(vocab),
            max_position_embeddings=16,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=_tiny_tower(image_size=IMAGE, patch_size=8),
        projection_dim=CLIP_DIM,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3,
                "rescale_factor": 1 / 255,
                "size": {"shortest_edge": IMAGE},
                "crop_size": {"height": IMAGE, "width": IMAGE},
            }
        ),
        encoding="utf-8",
    )
    return folder


def build_siglip(folder: Path) -> Path:
    """A random SigLIP with a word-level tokenizer.json (no sentencepiece needed), 32-d embeddings."""
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    words = ["<pad>", "</s>", "<unk>", "a", "dog", "cat", "photo", "of", "the", "street"]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=16
    )
    tokenizer.save_pretrained(folder)
    config = SiglipConfig(
        text_config=_tiny_tower(
            vocab_size=len(vocab), max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=1
        ),
        vision_config=_tiny_tower(image_size=IMAGE, patch_size=8),
    )
    torch.manual_seed(1)
    SiglipModel(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2}),
        encoding="utf-8",
    )
    return folder


WHISPER_SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]


def build_whisper(folder: Path, *, timestamps: bool = True) -> Path:
    """A random multilingual (en, de) Whisper: byte-level BPE, Whisper's special and 1501 timestamp tokens."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    merges = ["Ġ t", "h e", "Ġt he"]
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tokens = [
        *sorted(ByteLevel.alphabet()),
        *(m.replace(" ", "") for m in merges),
        *WHISPER_SPECIALS,
        *stamps,
    ]
    vocab = {t: i for i, t in enumerate(tokens)}

    def added(token: str, special: bool) -> dict[str, object]:
        return {
            "content": token,
            "special": special,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
        }

    decoder = {str(vocab[t]): added(t, True) for t in WHISPER_SPECIALS}
    decoder.update({str(vocab[t]): added(t, False) for t in stamps})
    _write_bpe(
        folder,
        vocab,
        merges,
        {
            "tokenizer_class": "WhisperTokenizer",
            "model_max_length": 64,
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "added_tokens_decoder": decoder,
            "additional_special_tokens": WHISPER_SPECIALS[1:],
        },
    )
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=80,
        d_model=WIDTH,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * WIDTH,
        decoder_ffn_dim=2 * WIDTH,
        max_source_positions=1500,  # one 30 s window of mel frames, halved by the encoder's stride
        max_target_positions=64,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    torch.manual_seed(2)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=64,
        no_timestamps_token_id=vocab["<|notimestamps|>"] if timestamps else None,
        is_multilingual=True,
        lang_to_id={"<|en|>": vocab["<|en|>"], "<|de|>": vocab["<|de|>"]},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        prev_sot_token_id=vocab["<|startofprev|>"],
        max_initial_timestamp_index=50,
        begin_suppress_tokens=[vocab["Ġ"], eot],
        suppress_tokens=[],
    )
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "clip": build_clip(root / "clip"),
        "siglip": build_siglip(root / "siglip"),
        "whisper": build_whisper(root / "whisper"),
    }


@pytest.fixture(scope="module", params=["clip", "siglip"])
def pair(request: pytest.FixtureRequest, folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """(text, vision) 'clip' encoders on one tiny model, built through the registry as the pipeline does."""
    config = PerceptionConfig(clip_model=folders[request.param], regions=2, batch_frames=2)
    data_dir = tmp_path_factory.mktemp("data")
    text = create_encoder("text", "clip", config, data_dir)
    vision = create_encoder("vision", "clip", config, data_dir, text_encoder=text)
    return request.param, text, vision


def frames(seed: int = 0) -> list[np.ndarray]:
    """RGB uint8 frames of assorted sizes, including one smaller than the grid."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 64), (64, 48), (37, 91), (32, 32), (1, 1)]
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


def unit_rows(a: np.ndarray) -> None:
    assert a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, atol=1e-5)


def test_registered() -> None:
    assert "clip" in available_encoders("text") and "clip" in available_encoders("vision")
    assert "hf-whisper" in available_encoders("speech")


def test_clip_vision_tokens(pair) -> None:
    kind, text, vision = pair
    dim = CLIP_DIM if kind == "clip" else WIDTH
    assert isinstance(vision, ClipVisionEncoder) and isinstance(vision, VisionEncoder)
    assert vision.dim == text.dim == dim
    batch = frames()
    out = vision.encode(batch)  # 5 frames in batches of 2
    assert len(out) == len(batch)
    for ft in out:
        assert isinstance(ft, FrameTokens)
        assert ft.tokens.shape == (1 + 2 * 2, dim)
        assert ft.kinds == ("global", "region 0 0", "region 0 1", "region 1 0", "region 1 1")
        assert ft.labels == ()
        unit_rows(ft.tokens)
    assert vision.encode([]) == []
    # deterministic, and batching changes nothing beyond float noise
    again = vision.encode(batch)
    alone = [vision.encode([f])[0] for f in batch[:3]]
    for a, b in zip(out, again, strict=True):
        np.testing.assert_array_equal(a.tokens, b.tokens)
    for a, b in zip(out, alone, strict=False):
        np.testing.assert_allclose(a.tokens, b.tokens, atol=1e-5)
    # frames differ, so do their tokens (the model is random, not constant)
    assert not np.allclose(out[0].tokens[0], out[1].tokens[0], atol=1e-3)


def test_region_token_is_the_embedding_of_its_cell(pair) -> None:
    """A cell of the grid is embedded as an image of its own: its token is the global token of that crop."""
    _, _, vision = pair
    frame = frames(1)[0]  # 48 x 64: cells of 24 x 32
    tokens = vision.encode([frame])[0].tokens
    cells = [frame[:24, :32], frame[:24, 32:], frame[24:, :32], frame[24:, 32:]]
    for i, cell in enumerate(cells, start=1):
        np.testing.assert_allclose(vision.encode([cell])[0].tokens[0], tokens[i], atol=1e-5)


def test_regions_setting_applies(folders: dict[str, Path], tmp_path: Path) -> None:
    vision = create_encoder(
        "vision", "clip", PerceptionConfig(clip_model=folders["clip"], regions=3), tmp_path
    )
    ft = vision.encode(frames()[:1])[0]
    assert ft.tokens.shape == (1 + 3 * 3, CLIP_DIM) and ft.kinds[-1] == "region 2 2"
    unit_rows(ft.tokens)


def test_clip_text(pair) -> None:
    _, text, _ = pair
    assert isinstance(text, ClipTextEncoder) and isinstance(text, TextEncoder)
    texts = ["a dog", "a photo of the street", "", "a cat", "the cat"]
    vectors = text.encode(texts)
    assert vectors.shape == (len(texts), text.dim)
    unit_rows(vectors)
    np.testing.assert_array_equal(vectors, text.encode(texts))
    alone = np.stack([text.encode([t])[0] for t in texts])  # padding in a batch changes nothing
    np.testing.assert_allclose(vectors, alone, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)
    assert text.encode([]).shape == (0, text.dim)
    with pytest.raises(TypeError):
        text.encode("a dog")


def test_text_and_vision_share_one_model(pair, folders: dict[str, Path], tmp_path: Path) -> None:
    kind, text, vision = pair
    assert vision.model is text.model and vision.backbone is text.backbone
    assert text.backbone.model_type == kind
    # built alone, the vision encoder loads the same weights itself and gives the same tokens
    own = create_encoder("vision", "clip", PerceptionConfig(clip_model=folders[kind], regions=2), tmp_path)
    assert own.model is not text.model
    frame = frames(2)[:1]
    np.testing.assert_allclose(own.encode(frame)[0].tokens, vision.encode(frame)[0].tokens, atol=1e-6)


def test_vision_refuses_a_foreign_text_encoder(folders: dict[str, Path], tmp_path: Path) -> None:
    class OtherText:
        name = "minilm"
        dim = 384

        def encode(self, texts):  # pragma: no cover - never called
            raise AssertionError

    config = PerceptionConfig(clip_model=folders["clip"])
    with pytest.raises(EncoderError, match="needs the 'clip' text encoder") as info:
        create_encoder("vision", "clip", config, tmp_path, text_encoder=OtherText())
    assert "\n" not in str(info.value)
    siglip_text = ClipTextEncoder(folders["siglip"])  # a 'clip' text encoder, but of another folder
    with pytest.raises(EncoderError, match=r"same perception\.clip_model"):
        create_encoder("vision", "clip", config, tmp_path, text_encoder=siglip_text)


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_clip_errors_are_one_line(kind: str, folders: dict[str, Path], tmp_path: Path) -> None:
    def error(config: PerceptionConfig) -> str:
        with pytest.raises(EncoderError) as info:
            create_encoder(kind, "clip", config, tmp_path)
        message = str(info.value)
        assert "\n" not in message
        return message

    assert "perception.clip_model" in error(PerceptionConfig())
    message = error(PerceptionConfig(clip_model=tmp_path / "nowhere"))
    assert "perception.clip_model" in message and "does not exist" in message
    (tmp_path / "empty").mkdir()
    assert "no config.json" in error(PerceptionConfig(clip_model=tmp_path / "empty"))
    assert "'whisper' model" in error(PerceptionConfig(clip_model=folders["whisper"]))


def test_hf_whisper_transcribes_synthetic_audio(folders: dict[str, Path], tmp_path: Path) -> None:
    config = PerceptionConfig(hf_whisper_model=folders["whisper"])
    speech = create_encoder("speech", "hf-whisper", config, tmp_path)
    assert isinstance(speech, HFWhisperEncoder) and isinstance(speech, SpeechEncoder)
    rng = np.random.default_rng(0)
    t = np.arange(2 * 16_000) / 16_000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    torch.manual_seed(0)  # the temperature fallback samples: keep the run (and its length) repeatable
    segments = speech.transcribe(audio, t_offset=12.5)
    # The seeded random model emits some text here; without any segment the time checks below would be empty.
    assert isinstance(segments, list) and segments
    for s in segments:  # a random model's text is noise; only the form and the times are checked
        assert isinstance(s, Segment) and s.text
        assert 12.5 <= s.t0 <= s.t1 <= 12.5 + 2.0
    assert speech.transcribe(np.zeros(0, np.float32), t_offset=3.0) == []
    with pytest.raises(ValueError, match="float32"):
        speech.transcribe(audio.astype(np.float64))


def test_hf_whisper_segment_times_and_language(folders: dict[str, Path], tmp_path: Path) -> None:
    """Whisper's raw segments → ours: stream time, clipped to the audio, language from the decoded tokens."""
    speech = create_encoder(
        "speech", "hf-whisper", PerceptionConfig(hf_whisper_model=folders["whisper"]), tmp_path
    )
    vocab = json.loads((folders["whisper"] / "vocab.json").read_text(encoding="utf-8"))
    the, stamp = vocab["Ġthe"], vocab["<|0.00|>"]
    prompt = torch.tensor([vocab["<|startoftranscript|>"], vocab["<|de|>"], vocab["<|transcribe|>"], stamp])

    def piece(start: float, end: float, tokens: list[int]) -> dict[str, object]:
        return {
            "start": torch.tensor(start, dtype=torch.float64),
            "end": torch.tensor(end, dtype=torch.float64),
            "tokens": torch.tensor(tokens),
            "result": {"sequences": prompt},
        }

    s = speech._segment(piece(0.5, 5.0, [stamp, the, stamp + 10]), duration=2.0, t_offset=10.0)
    assert s == Segment(t0=10.5, t1=12.0, text="the", language="de")
    assert speech._segment(piece(2.0, 3.0, [the]), duration=2.0, t_offset=10.0) is None  # past the end
    assert speech._segment(piece(0.0, 1.0, [stamp, stamp + 1]), duration=2.0, t_offset=10.0) is None


def test_hf_whisper_language_and_sample_rate(folders: dict[str, Path], tmp_path: Path) -> None:
    config = PerceptionConfig(hf_whisper_model=folders["whisper"], language="de", sample_rate=8000)
    speech = create_encoder("speech", "hf-whisper", config, tmp_path)
    assert speech.language == "de"
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * 8000) / 8000)).astype(np.float32)  # 2 s at 8 kHz
    torch.manual_seed(0)
    for s in speech.transcribe(audio, t_offset=1.0):
        assert s.language == "de" and 1.0 <= s.t0 <= s.t1 <= 3.0 + 1e-3


def test_hf_whisper_errors_are_one_line(folders: dict[str, Path], tmp_path: Path) -> None:
    def error(config: PerceptionConfig) -> str:
        with pytest.raises(EncoderError) as info:
            create_encoder("speech", "hf-whisper", config, tmp_path)
        message = str(info.value)
        assert "\n" not in message
        return message

    assert "perception.hf_whisper_model" in error(PerceptionConfig())
    message = error(PerceptionConfig(hf_whisper_model=tmp_path / "nowhere"))
    assert "perception.hf_whisper_model" in message and "does not exist" in message
    assert "perception.language" in error(
        PerceptionConfig(hf_whisper_model=folders["whisper"], language="fr")
    )
    assert "cannot load" in error(PerceptionConfig(hf_whisper_model=folders["clip"]))
    outdated = build_whisper(tmp_path / "outdated", timestamps=False)
    assert "no_timestamps_token_id" in error(PerceptionConfig(hf_whisper_model=outdated))
