"""The ingress: a FastAPI app (OpenAI-compatible routes, classify, adapter admin, health, metrics).

Ray Serve pickles the ingress class when it is declared, so this module keeps real (not
postponed) annotations, for FastAPI, and defines its helpers above the class.
"""
import asyncio
import json
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from ..engine import RegistryEntry
from .args import StitchArgs
from .errors import HTTPError, engine_error_response, error_response
from . import openai_format as oai
from .metrics import Metrics
from .schemas import (ChatCompletionRequest, Classification, ClassifyRequest, ClassifyResponse, CompletionRequest,
                      Embedding, EmbeddingRequest, EmbeddingResponse, ModelCard, ModelList, RegisterAdapterRequest,
                      Usage, encode_vector)

REPLICA_HEADER = "X-Stitch-Replica"


def make_app() -> FastAPI:
    """The FastAPI app with Stitch's error handlers (routes are added by the Ingress class)."""
    app = FastAPI(title="Stitch", version="0.1.0")

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        status = 400 if first.get("type") == "json_invalid" else 422
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(status, f"invalid request body: {first.get('msg', 'malformed')}"
                              + (f" (at {where})" if where else ""), "invalid_body", where)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, err: HTTPError):
        return error_response(err.status, err.message, err.code, err.param)

    return app


def _json(body, answer: dict) -> JSONResponse:
    """A response body with the id of the replica that computed it (header X-Stitch-Replica)."""
    return JSONResponse(body.model_dump(), headers={REPLICA_HEADER: answer["replica"]})


def _registered_card(entry: RegistryEntry, base: str) -> ModelCard:
    meta = entry.metadata or {}
    return ModelCard(id=entry.name, kind="adapter", base=base, task=meta.get("task"), language=meta.get("language"),
                     labels=meta.get("labels"), metadata={"source": entry.source, **meta})


def _directory_cards(dirs: tuple[Path, ...], base: str) -> list[ModelCard]:
    """Adapters found as subdirectories of the served directories, with their saved metadata."""
    cards = []
    for root in dirs:
        for config_path in sorted(Path(root).glob("*/adapter_config.json")):
            cards.append(_card_from_config(config_path, base))
    return cards


def _card_from_config(config_path: Path, base: str) -> ModelCard:
    try:
        data: dict[str, Any] = json.loads(config_path.read_text())
    except (OSError, ValueError):
        data = {}
    meta = data.get("metadata") or {}
    method = (data.get("config") or {}).get("method")
    return ModelCard(id=config_path.parent.name, kind="adapter", base=base, method=method, task=meta.get("task"),
                     language=meta.get("language"), labels=meta.get("labels"),
                     metadata={k: v for k, v in meta.items() if k in ("dataset", "metrics")})


app = make_app()


@serve.deployment(max_ongoing_requests=1024)
@serve.ingress(app)
class Ingress:
    """Routes HTTP requests to model replicas; measures them; exports /metrics."""

    def __init__(self, replica, directory, args: StitchArgs) -> None:
        self.replica = replica
        self.directory = directory
        self.args = args
        self.metrics = Metrics(args.adapter_label_limit)

    # -- helpers ------------------------------------------------------------------
    def _adapter(self, model: str) -> Optional[str]:
        """The adapter a request's ``model`` names; None for the base model."""
        return None if model == self.args.base_name() else model

    async def _call(self, adapter: Optional[str], method: str, *args):
        """(answer, None) from a model replica, or (None, an error response)."""
        handle = self.replica.options(multiplexed_model_id=adapter or "")
        try:
            answer = await getattr(handle, method).remote(*args)
        except Exception as err:  # engine errors come back wrapped by Ray; map them
            return None, engine_error_response(err)
        self.metrics.replicas.update(answer["replica"], answer["stats"])
        return answer, None

    def _record(self, endpoint: str, started: float, response: Optional[Response], adapter: Optional[str],
                tokens_in: int = 0, tokens_out: int = 0) -> None:
        status = response.status_code if response is not None else 200
        self.metrics.observe(endpoint, status, time.perf_counter() - started, adapter, tokens_in, tokens_out)

    def _require_admin(self, request: Request) -> None:
        if self.args.api_key is None:
            return
        if request.headers.get("authorization", "") != f"Bearer {self.args.api_key}":
            raise HTTPError(401, "this call needs the admin API key (Authorization: Bearer ...)", "unauthorized")

    # -- inference --------------------------------------------------------------
    @app.post("/v1/classify")
    async def classify(self, body: ClassifyRequest):
        started, adapter = time.perf_counter(), self._adapter(body.model)
        if adapter is None:
            response = error_response(400, f"model {body.model!r} is the base model, which has no classification "
                                           "head; name an adapter", "unsupported_task", "model")
            self._record("classify", started, response, adapter)
            return response
        answer, failure = await self._call(adapter, "classify", body.texts())
        self._record("classify", started, failure, adapter, answer["tokens"] if answer else 0)
        if failure is not None:
            return failure
        data = [Classification(index=i, label=label, score=score,
                               scores=dict(zip(answer["label_names"], probs)))
                for i, (label, score, probs) in enumerate(zip(answer["labels"], answer["scores"],
                                                              answer["probabilities"]))]
        usage = Usage(prompt_tokens=answer["tokens"], total_tokens=answer["tokens"])
        return _json(ClassifyResponse(model=body.model, data=data, usage=usage), answer)

    @app.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingRequest):
        started, adapter = time.perf_counter(), self._adapter(body.model)
        answer, failure = await self._call(adapter, "embed", body.inputs())
        self._record("embeddings", started, failure, adapter, answer["tokens"] if answer else 0)
        if failure is not None:
            return failure
        data = [Embedding(index=i, embedding=encode_vector(vector, body.encoding_format))
                for i, vector in enumerate(answer["vectors"])]
        usage = Usage(prompt_tokens=answer["tokens"], total_tokens=answer["tokens"])
        return _json(EmbeddingResponse(model=body.model, data=data, usage=usage), answer)

    @app.post("/v1/completions")
    async def completions(self, body: CompletionRequest):
        prompts = body.prompts()
        if body.echo:
            raise HTTPError(400, "echo is not supported", "unsupported_parameter", "echo")
        if body.stream and len(prompts) > 1:
            raise HTTPError(400, "stream takes one prompt", "unsupported_parameter", "prompt")
        return await self._generate("completions", body, prompts, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest):
        messages = [m.model_dump() for m in body.messages]
        return await self._generate("chat", body, [messages], chat=True)

    async def _generate(self, endpoint: str, body, prompts: list, chat: bool):
        started, adapter = time.perf_counter(), self._adapter(body.model)
        if body.stream:
            return await self._stream(endpoint, body, prompts[0], chat, started, adapter)
        calls = [self._call(adapter, "generate", p, body.sampling(), chat) for p in prompts]
        results = await asyncio.gather(*calls)
        failure = next((f for _, f in results if f is not None), None)
        answers = [a for a, _ in results if a is not None]
        self._record(endpoint, started, failure, adapter, sum(a["prompt_tokens"] for a in answers),
                     sum(a["completion_tokens"] for a in answers))
        if failure is not None:
            return failure
        for a in answers:
            self.metrics.observe_tokens(endpoint, a["ttft"], a["seconds"], a["completion_tokens"])
        return oai.completion_body(oai.new_id(chat), body.model, answers, chat)

    async def _stream(self, endpoint: str, body, prompt, chat: bool, started: float, adapter: Optional[str]):
        handle = self.replica.options(multiplexed_model_id=adapter or "", stream=True)
        chunks = handle.generate_stream.remote(prompt, body.sampling(), chat)
        try:
            first = await chunks.__anext__()
        except Exception as err:  # admission errors arrive before any token
            failure = engine_error_response(err)
            self._record(endpoint, started, failure, adapter)
            return failure
        self.metrics.replicas.update(first["replica"], first["stats"])
        events = self._events(endpoint, body, chunks, chat, started, adapter)
        return StreamingResponse(events, media_type="text/event-stream", headers={REPLICA_HEADER: first["replica"]})

    async def _events(self, endpoint: str, body, chunks, chat: bool, started: float, adapter: Optional[str]):
        request_id, first_token, last = oai.new_id(chat), None, None
        if chat:
            yield oai.sse_chunk(request_id, body.model, chat, role=True)
        async for chunk in chunks:
            first_token = first_token or (time.perf_counter() if chunk["completion_tokens"] else None)
            last = chunk
            if chunk["text"] or chunk["finish_reason"]:
                yield oai.sse_chunk(request_id, body.model, chat, chunk["text"], chunk["finish_reason"])
        if last is not None and body.include_usage():
            yield oai.sse_chunk(request_id, body.model, chat,
                                final_usage=oai.usage(last["prompt_tokens"], last["completion_tokens"]))
        yield oai.DONE
        tokens = last["completion_tokens"] if last else 0
        self._record(endpoint, started, None, adapter, last["prompt_tokens"] if last else 0, tokens)
        if first_token is not None:
            self.metrics.observe_tokens(endpoint, first_token - started, time.perf_counter() - started, tokens)

    # -- models and adapters ------------------------------------------------------
    @app.get("/v1/models")
    async def models(self):
        base = self.args.base_name()
        cards = [ModelCard(id=base, kind="base", base=base, loaded=True)]
        _, registered = await self.directory.snapshot.remote()
        cards += [_registered_card(entry, base) for entry in registered]
        known = {c.id for c in cards}
        cards += [c for c in _directory_cards(self.args.served_dirs(), base) if c.id not in known]
        return ModelList(data=cards)

    @app.post("/v1/adapters")
    async def register_adapter(self, body: RegisterAdapterRequest, request: Request):
        self._require_admin(request)
        entry = RegistryEntry(name=body.name, source=body.source)
        if body.name == self.args.base_name():
            raise HTTPError(400, f"{body.name!r} is the base model's name", "invalid_name", "name")
        version = await self.directory.register.remote(entry)
        if not body.load:
            return {"object": "adapter", "id": body.name, "loaded": False}
        answer, failure = await self._call(body.name, "describe", body.name, version)
        if failure is not None:
            await self.directory.unregister.remote(body.name)
            return failure
        return {"object": "adapter", "id": body.name, "loaded": True, **answer["adapter"]}

    @app.delete("/v1/adapters/{name}")
    async def unregister_adapter(self, name: str, request: Request):
        self._require_admin(request)
        if not await self.directory.unregister.remote(name):
            raise HTTPError(404, f"no adapter {name!r} was registered through the API", "model_not_found", "name")
        return {"object": "adapter", "id": name, "deleted": True}

    # -- operations ---------------------------------------------------------------
    @app.get("/health")
    async def health(self):
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(self):
        try:
            answer = await asyncio.wait_for(self.replica.options(multiplexed_model_id="").stats.remote(), 10)
        except Exception as err:  # not started, or the replica is gone
            return error_response(503, f"not ready: {type(err).__name__}", "not_ready")
        self.metrics.replicas.update(answer["replica"], answer["stats"])
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics(self):
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
