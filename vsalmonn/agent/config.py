"""Settings of the agent: which chat model answers, how far a tool-calling loop may go (DESIGN §6)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AgentConfig(BaseModel):
    """The chat model and the loop around it; `llm` is `provider:model`, `smollm2` or `gemma3` (embedded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    llm: str = Field(
        "smollm2",
        description="smollm2 or gemma3 (embedded), hf:/path/to/folder, ollama:MODEL or openai:MODEL",
    )
    base_url: str | None = Field(
        None, description="server of ollama: or openai: models (any OpenAI-compatible server)"
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding an openai: key")
    mode: Literal["auto", "tools", "retrieve"] = Field(
        "auto",
        description="tools: the model calls tools; retrieve: the reader first, then the model writes; "
        "auto: tools for ollama:/openai:, retrieve for local models",
    )
    step_limit: int = Field(6, ge=1, le=50, description="model turns of a tool-calling loop")
    evidence_k: int = Field(5, ge=1, le=50, description="moments retrieved as evidence in retrieve mode")
    evidence_ratio: float = Field(
        0.6,
        ge=0,
        le=1,
        description="retrieve mode shows the model moments scoring at least this share of the best",
    )
    max_new_tokens: int = Field(160, ge=8, le=4096, description="longest answer of a local model")
    temperature: float = Field(0.0, ge=0, le=2, description="0 is greedy: the same question, the same answer")
    timeout_s: float = Field(120.0, gt=0, description="one request to a remote model")
