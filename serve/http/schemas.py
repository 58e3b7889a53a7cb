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
