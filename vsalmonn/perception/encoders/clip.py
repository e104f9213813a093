"""Optional encoders: CLIP or SigLIP, frames and text in one contrastively trained space, from a local folder.

Why: the default vision encoder reaches text space only through the 1000 ImageNet class names (vision.py), so
a frame can only ever be "about" one of those names. A contrastive image–text model embeds a frame and a
prompt in the same space directly: "a man in a red jacket" can match a frame that no ImageNet class describes.
The price is a bigger model that is not shipped: `perception.clip_model` must name a transformers folder
(config.json, weights, tokenizer files and preprocessor_config.json), read with `local_files_only=True`, so
nothing is ever downloaded. The model class follows the folder's `config.model_type`: 'clip' → CLIPModel,
'siglip' → SiglipModel; others (SigLIP 2 takes other inputs) are refused.

One model, two encoders: ('vision', 'clip') and ('text', 'clip') belong together, because a vision token is
only comparable with a text embedding of the same model. The vision factory therefore reuses the loaded model
of the 'clip' text encoder it is given (one copy in memory) and refuses any other text encoder: MiniLM's space
is not CLIP's, and the pipeline would compare the two.

Pixels are prepared here in torch, not by transformers' image processor, which needs Pillow or torchvision
(neither is a dependency). Only the normalisation (mean, std, rescale factor, resampling filter) is read from
preprocessor_config.json. Every image is resized whole to the model's square input (antialiased), not
centre-cropped as CLIP's own processor does: that crop would drop the sides of a 16:9 frame, which matter to
surveillance and to the regional tokens; SigLIP's processor squashes exactly like this anyway. Not measured
here: no real CLIP weights are available offline, and the tests use tiny random models.

Regional tokens: the frame is cut into a `regions` × `regions` grid and every cell is embedded as an image of
its own, so a cell's token is a true image embedding of that part of the frame, comparable with text like the
global one. That costs 1 + regions² forward passes per frame; all of them are batched together.

Text: CLIP pools the end-of-text token, so texts are padded to the longest in the batch with an attention
mask. SigLIP was trained on texts padded to its full length (64) without a mask and pools the last position,
so it gets exactly that; anything else shifts its embeddings.

No labels: a contrastive model has no label vocabulary, so `FrameTokens.labels` stays empty.

Threads: no process-wide torch setting is changed here (see text.py); the pipeline applies
`PerceptionConfig.threads` once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vsalmonn.errors import one_line

from ..config import PerceptionConfig
from . import EncoderError
from .base import FrameTokens, TextEncoder, encode_texts

log = logging.getLogger(__name__)

SETTING = "perception.clip_model"
MODEL_TYPES = ("clip", "siglip")
BATCH = 64  # texts per forward pass
# Used only where a folder has no preprocessor_config.json: the values of the models' own processors.
_DEFAULT_MEAN = {"clip": (0.48145466, 0.4578275, 0.40821073), "siglip": (0.5, 0.5, 0.5)}
_DEFAULT_STD = {"clip": (0.26862954, 0.26130258, 0.27577711), "siglip": (0.5, 0.5, 0.5)}
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's filter numbers, as stored in preprocessor_config.json


def _pooled(out: Any) -> torch.Tensor:
    """The projected embedding: transformers 5 returns an output object, transformers 4 the tensor itself."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@dataclass
class ClipModel:
    """One loaded CLIP or SigLIP model, shared by the text and the vision encoder."""

    model: Any  # CLIPModel or SiglipModel, float32, eval mode
    model_type: str  # "clip" or "siglip"
    model_dir: Path
    dim: int  # the shared embedding space's dimension

    @classmethod
    def load(cls, model_dir: Path) -> ClipModel:
        model_dir = Path(model_dir).expanduser()
        if not model_dir.is_dir():
            raise EncoderError(f"CLIP/SigLIP folder {model_dir} ({SETTING}) does not exist")
        if not (model_dir / "config.json").is_file():
            raise EncoderError(
                f"CLIP/SigLIP folder {model_dir} ({SETTING}) has no config.json (not a transformers model)"
            )
        # Imported here so that importing the encoder registry stays cheap.
        from transformers import AutoConfig, CLIPModel, SiglipModel

        try:
            config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds (OSError, ValueError, KeyError)
            raise EncoderError(
                f"cannot read the model config in {model_dir}: {one_line(exc, typed=True)}"
            ) from exc
        model_type = str(getattr(config, "model_type", ""))
        classes: dict[str, Any] = {"clip": CLIPModel, "siglip": SiglipModel}
        if model_type not in classes:
            raise EncoderError(
                f"{model_dir} holds a {model_type!r} model; {SETTING} must be one of {', '.join(MODEL_TYPES)}"
            )
        try:
            model = classes[model_type].from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:
            raise EncoderError(
                f"cannot load the {model_type} model in {model_dir}: {one_line(exc, typed=True)}"
            ) from exc
        model = model.float().eval()
        if model_type == "clip":
            dim = int(model.config.projection_dim)
        else:  # SigLIP: the text head projects onto the vision tower's width
            text_config = model.config.text_config
            dim = int(getattr(text_config, "projection_size", None) or text_config.hidden_size)
            if dim != int(model.config.vision_config.hidden_size):
                raise EncoderError(f"SigLIP model in {model_dir}: text and image embeddings differ in size")
        return cls(model=model, model_type=model_type, model_dir=model_dir, dim=dim)

    def same_folder(self, model_dir: Path) -> bool:
        return self.model_dir.resolve() == Path(model_dir).expanduser().resolve()


def configured_dir(config: PerceptionConfig) -> Path:
    """`perception.clip_model`, which the 'clip' encoders cannot do without (nothing is shipped)."""
    if config.clip_model is None:
        raise EncoderError(
            f"the 'clip' encoders need {SETTING}: a local CLIP or SigLIP folder (transformers format)"
        )
    return Path(config.clip_model).expanduser()


class ClipTextEncoder:
    """Text embeddings of a CLIP or SigLIP model (`get_text_features`) as float32 unit rows."""

    name = "clip"

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 1,
        batch_size: int = BATCH,
        backbone: ClipModel | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        self.backbone = backbone if backbone is not None else ClipModel.load(model_dir)
        model_dir = self.backbone.model_dir
        from transformers import AutoTokenizer

        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # a missing file, or a missing library (SigLIP's needs sentencepiece)
            raise EncoderError(
                f"cannot load the tokenizer in {model_dir}: {one_line(exc, typed=True)}"
            ) from exc
        self.model: Any = self.backbone.model
        self.model_dir = model_dir
        self.dim: int = self.backbone.dim
        limit = int(self.model.config.text_config.max_position_embeddings)
        self.max_tokens = int(min(limit, getattr(self.tokenizer, "model_max_length", limit) or limit))
        self.threads = threads
        self.batch_size = batch_size
        log.info(
            "text encoder %s: %s (%s), %d-d, up to %d tokens",
            self.name,
            model_dir,
            self.backbone.model_type,
            self.dim,
            self.max_tokens,
        )

    @classmethod
    def from_config(cls, config: PerceptionConfig, data_dir: Path) -> ClipTextEncoder:
        """The registry's factory: the folder in `perception.clip_model`; `data_dir` is unused."""
        return cls(configured_dir(config), threads=config.threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit rows, one per text, in the order given."""
        return encode_texts(texts, self.dim, self.batch_size, self._embed)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        if self.backbone.model_type == "siglip":  # as trained: full length, no mask (module docstring)
            batch = self.tokenizer(
                texts, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            inputs = {"input_ids": batch["input_ids"]}
        else:
            batch = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        features = _pooled(self.model.get_text_features(**inputs)).float()  # (B, dim)
        return F.normalize(features, p=2.0, dim=1)  # (B, dim) unit rows


class ClipVisionEncoder:
    """Frames → 1 + regions² image embeddings (the whole frame, then each grid cell), as `FrameTokens`."""

    name = "clip"

    def __init__(
        self,
        model_dir: Path,
        *,
        regions: int = 2,
        batch_frames: int = 16,
        threads: int = 1,
        backbone: ClipModel | None = None,
    ) -> None:
        if regions < 1 or batch_frames < 1:
            raise ValueError("regions and batch_frames must be ≥ 1")
        self.backbone = backbone if backbone is not None else ClipModel.load(model_dir)
        self.model: Any = self.backbone.model
        self.model_dir = self.backbone.model_dir
        self.dim: int = self.backbone.dim
        self.input_size = int(self.model.config.vision_config.image_size)
        mean, std, self.rescale, self.resample = _pixel_settings(self.model_dir, self.backbone.model_type)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(3, 1, 1)
        self.regions = regions
        self.batch_frames = batch_frames
        self.threads = threads
        self.kinds = ("global", *(f"region {r} {c}" for r in range(regions) for c in range(regions)))
        log.info(
            "vision encoder %s: %s (%s), %d tokens per frame, %d-d",
            self.name,
            self.model_dir,
            self.backbone.model_type,
            len(self.kinds),
            self.dim,
        )

    @classmethod
    def from_config(
        cls, config: PerceptionConfig, data_dir: Path, text_encoder: TextEncoder | None = None
    ) -> ClipVisionEncoder:
        """The registry's factory: shares the model of the 'clip' text encoder it is given (module docstring).

        `data_dir` is unused: nothing is cached.
        """
        model_dir = configured_dir(config)
        backbone = None
        if text_encoder is not None:
            ours = isinstance(text_encoder, ClipTextEncoder) and text_encoder.backbone.same_folder(model_dir)
            if not ours:
                raise EncoderError(
                    f"vision encoder 'clip' needs the 'clip' text encoder on the same {SETTING} (its tokens "
                    f"live in that model's space), got text encoder {getattr(text_encoder, 'name', '?')!r}"
                )
            backbone = text_encoder.backbone
        return cls(
            model_dir,
            regions=config.regions,
            batch_frames=config.batch_frames,
            threads=config.threads,
            backbone=backbone,
        )

    def encode(self, frames: Sequence[np.ndarray]) -> list[FrameTokens]:
        """One FrameTokens per RGB uint8 frame (H, W, 3), in the order given."""
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
                raise ValueError(f"frame {i} has shape {frame.shape}; expected (H, W, 3) RGB")
        out: list[FrameTokens] = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_frames):
                chunk = frames[start : start + self.batch_frames]
                pixels = torch.cat([self._images(frame) for frame in chunk])  # (B·(1 + r²), 3, S, S)
                features = _pooled(self.model.get_image_features(pixel_values=pixels)).float()
                tokens = F.normalize(features, dim=-1).reshape(len(chunk), len(self.kinds), self.dim)
                out += [
                    FrameTokens(tokens=tokens[b].numpy().astype(np.float32, copy=True), kinds=self.kinds)
                    for b in range(len(chunk))
                ]
        return out

    def _images(self, frame: np.ndarray) -> torch.Tensor:
        """(1 + r², 3, S, S) model inputs: the whole frame, then the grid cells row by row."""
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float()  # (3, h, w) in 0..255
        rows, cols = _cuts(x.shape[1], self.regions), _cuts(x.shape[2], self.regions)
        crops = [x, *(x[:, r0:r1, c0:c1] for r0, r1 in rows for c0, c1 in cols)]
        return torch.stack([self._prepare(crop) for crop in crops])

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        """(3, S, S): resized whole (module docstring), rescaled and normalised as the model was trained."""
        size = (self.input_size, self.input_size)
        if tuple(image.shape[1:]) != size:
            image = F.interpolate(
                image[None], size=size, mode=self.resample, antialias=True, align_corners=False
            )[0].clamp(0.0, 255.0)  # bicubic overshoots
        return (image * self.rescale - self.mean) / self.std


def _cuts(length: int, parts: int) -> list[tuple[int, int]]:
    """`parts` (start, end) spans covering 0..length as evenly as possible, each at least one pixel."""
    spans = []
    for i in range(parts):
        start = min(i * length // parts, length - 1)
        spans.append((start, max(start + 1, (i + 1) * length // parts)))
    return spans


def _pixel_settings(model_dir: Path, model_type: str) -> tuple[list[float], list[float], float, str]:
    """(mean, std, rescale factor, interpolation mode) from preprocessor_config.json, else the defaults."""
    path = model_dir / "preprocessor_config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.warning("%s has no preprocessor_config.json; using %s's defaults", model_dir, model_type)
        raw = {}
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot read {path}: {one_line(exc, typed=True)}") from exc
    try:
        mean = [float(v) for v in raw.get("image_mean", _DEFAULT_MEAN[model_type])]
        std = [float(v) for v in raw.get("image_std", _DEFAULT_STD[model_type])]
        rescale = float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0
        resample = _RESAMPLE.get(int(raw.get("resample", 3)), "bicubic")
    except (TypeError, ValueError, AttributeError) as exc:
        raise EncoderError(f"{path} has malformed pixel settings: {one_line(exc, typed=True)}") from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise EncoderError(f"{path}: image_mean and image_std must hold 3 values, std > 0")
    if not raw.get("do_normalize", True):
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return mean, std, rescale, resample


__all__ = ["ClipModel", "ClipTextEncoder", "ClipVisionEncoder"]
