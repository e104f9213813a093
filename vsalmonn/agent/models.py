"""Chat models by name: `smollm2`, `gemma3` (embedded), `hf:PATH`, `ollama:MODEL`, `openai:MODEL` (DESIGN §6).

Remote back-ends are optional extras (`pip install 'vsalmonn[ollama]'`, `'vsalmonn[openai]'`), imported only
when chosen, so the core install never pulls their clients.
"""

from __future__ import annotations

import os
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from .config import AgentConfig
from .local_model import EMBEDDED, LocalChatModel, ModelError, embedded_model

PROVIDERS = ("hf", "ollama", "openai")


def parse_llm(spec: str) -> tuple[str, str]:
    """(provider, model) of `spec`; ModelError with a one-line reason when it is malformed."""
    spec = spec.strip()
    if spec in ("embedded", ""):
        return EMBEDDED[0], ""
    if spec in EMBEDDED:
        return spec, ""
    provider, sep, model = spec.partition(":")
    if not sep or provider not in PROVIDERS or not model.strip():
        raise ModelError(
            f"--llm {spec!r}: expected {', '.join(EMBEDDED)}, hf:/path/to/folder, ollama:MODEL or "
            "openai:MODEL"
        )
    return provider, model.strip()


def tool_calling(config: AgentConfig) -> bool:
    """Whether the agent lets the model call tools (else retrieve-then-answer)."""
    if config.mode != "auto":
        return config.mode == "tools"
    return parse_llm(config.llm)[0] in ("ollama", "openai")


def chat_model(config: AgentConfig, data_dir: Path) -> BaseChatModel:
    """The chat model `config.llm` names; ModelError (one line) when it cannot be had."""
    provider, model = parse_llm(config.llm)
    if provider in EMBEDDED:
        path = embedded_model(provider, Path(data_dir) / "models")
        return LocalChatModel(path=path, max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    if provider == "hf":
        return LocalChatModel(
            path=Path(model).expanduser(),
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
        )
    if provider == "ollama":
        try:
            from langchain_ollama import ChatOllama
        except ImportError:
            raise ModelError("ollama: models need the extra: pip install 'vsalmonn[ollama]'") from None
        kwargs = {"base_url": config.base_url} if config.base_url else {}
        return ChatOllama(model=model, temperature=config.temperature, **kwargs)
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise ModelError("openai: models need the extra: pip install 'vsalmonn[openai]'") from None
    key = os.environ.get(config.api_key_env) or ("unused" if config.base_url else None)
    if key is None:
        raise ModelError(f"openai:{model} needs an API key in ${config.api_key_env} (or agent.base_url)")
    return ChatOpenAI(
        model=model, base_url=config.base_url, api_key=key, temperature=config.temperature,  # type: ignore[arg-type]
        timeout=config.timeout_s,
    )  # fmt: skip
