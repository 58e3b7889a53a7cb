"""Request and response bodies (pydantic), OpenAI-compatible where OpenAI has the endpoint."""
from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ClassifyRequest(_Request):
    """``model`` names an adapter with a classification head; ``input`` one text or several."""

    model: str
    input: str | list[str] = Field(min_length=1)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class EmbeddingRequest(_Request):
    """OpenAI's embeddings body. ``model``: an adapter, or the base model's name for none."""

    model: str
    input: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(i, int) for i in self.input):
            return [list(self.input)]
        return list(self.input)


class RegisterAdapterRequest(_Request):
    """Register (and load) an adapter from a directory under the allowed roots or a Hub repo id."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
    source: str = Field(min_length=1)
    load: bool = True


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class Classification(BaseModel):
    index: int
    label: str
    score: float
    scores: dict[str, float]


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Classification]
    usage: Usage


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


def encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    """OpenAI's encodings: a list of floats, or base64 of little-endian float32 values."""
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: Usage


class ModelCard(BaseModel):
    """One entry of GET /v1/models: the base model or an adapter, with its metadata."""

    id: str
    object: Literal["model"] = "model"
    owned_by: str = "stitch"
    created: int = 0
    kind: Literal["base", "adapter"]
    base: str
    method: str | None = None
    task: str | None = None
    language: str | None = None
    labels: list[str] | None = None
    loaded: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | int | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class _GenerationRequest(_Request):
    """Sampling fields shared by completions and chat (OpenAI names; top_k and seed as vLLM)."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None

    def sampling(self, default_max_tokens: int = 16) -> dict[str, Any]:
        """Keyword arguments of the engine's SamplingParams."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return {"max_new_tokens": self.max_tokens or default_max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed, "stop": stop}

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_GenerationRequest):
    """OpenAI's completions body: ``prompt`` is one text or one list of token ids."""

    prompt: str | list[int] | list[str] = Field(min_length=1)
    echo: bool = False

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or all(isinstance(t, int) for t in self.prompt):
            return [self.prompt]
        return list(self.prompt)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatCompletionRequest(_GenerationRequest):
    """OpenAI's chat completions body (text content only)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def sampling(self, default_max_tokens: int = 16) -> dict[str, Any]:
        params = super().sampling(default_max_tokens)
        params["max_new_tokens"] = self.max_completion_tokens or params["max_new_tokens"]
        return params
