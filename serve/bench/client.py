"""One timed HTTP request per task, the loopback guard, and the server's model list (aiohttp).

Times are seconds on the load generator's clock, measured from the start of the run.
Latency, TTFT and TPOT count from when a request was *due* (its schedule time), so time
spent waiting in the client (a concurrency limit, a busy event loop) is charged to the
request rather than hidden; ``sent`` - ``scheduled`` shows how much of it there was.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .workload import PlannedRequest

TASKS = ("classify", "embed", "generate")
ENDPOINTS = {"classify": "/v1/classify", "embed": "/v1/embeddings", "generate": "/v1/completions"}


class RemoteURLError(ValueError):
    """A URL that is not on this machine, given without ``allow_remote``."""


@dataclass
class RequestRecord:
    """What happened to one request.

    index / adapter / input_words: from the schedule; scheduled, sent, done: seconds since
    the start of the run (due, left the client, answer read to the end); status: the HTTP
    status as text, or ``timeout`` / ``connection_error`` / ``stream_error`` when there is
    none; code: the error body's ``code`` (errors only); latency / ttft: seconds from
    ``scheduled`` to the end / to the first token (generate); tpot: seconds per output token
    after the first (generate, two or more tokens); output_tokens: tokens generated;
    prompt_tokens: as the server counted them; warmup: sent during the warm-up (not in the stats).
    """

    index: int
    adapter: str
    input_words: int
    scheduled: float
    sent: float = 0.0
    done: float = 0.0
    status: str = ""
    code: str | None = None
    latency: float | None = None
    ttft: float | None = None
    tpot: float | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    warmup: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "200"

    def to_dict(self) -> dict[str, Any]:
        """The record with times rounded to microseconds."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def check_loopback(url: str, allow_remote: bool = False) -> None:
    """Raise RemoteURLError unless ``url``'s host is this machine (or ``allow_remote``)."""
    host = urlsplit(url).hostname or ""
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise RemoteURLError(f"{url} is not a loopback address; pass --allow-remote to load-test another machine")


async def list_models(session: aiohttp.ClientSession, url: str) -> tuple[str, list[str]]:
    """(the base model's name, the adapters' names in the server's order) from GET /v1/models."""
    async with session.get(f"{url}/v1/models") as response:
        response.raise_for_status()
        cards = (await response.json())["data"]
    base = next((c["id"] for c in cards if c.get("kind") == "base"), cards[0]["id"] if cards else "")
    return base, [c["id"] for c in cards if c.get("kind") == "adapter"]


def request_body(task: str, planned: PlannedRequest) -> dict[str, Any]:
    """The JSON body of ``planned`` for ``task``."""
    if task == "classify":
        return {"model": planned.adapter, "input": [planned.text]}
    if task == "embed":
        return {"model": planned.adapter, "input": planned.text}
    return {"model": planned.adapter, "prompt": planned.text, "max_tokens": planned.max_tokens,
            "temperature": 1.0, "seed": planned.index, "stream": True, "stream_options": {"include_usage": True}}


class Sender:
    """Sends planned requests of one task to one server and times them.

    start: the run's start on ``time.perf_counter``'s clock; timeout: seconds per request.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, task: str, start: float) -> None:
        if task not in TASKS:
            raise ValueError(f"task is one of {TASKS}, not {task!r}")
        self.session, self.url, self.task, self.start = session, url, task, start

    def now(self) -> float:
        return time.perf_counter() - self.start

    async def send(self, planned: PlannedRequest, record: RequestRecord) -> RequestRecord:
        """Send ``planned`` now; fill ``record`` (never raises for HTTP or network failures)."""
        record.sent = self.now()
        try:
            async with self.session.post(self.url + ENDPOINTS[self.task], json=request_body(self.task, planned)) as r:
                record.status = str(r.status)
                if r.status != 200:
                    record.code = _error_code(await r.read())
                elif self.task == "generate":
                    await self._read_stream(r, record)
                else:
                    record.prompt_tokens = ((await r.json()).get("usage") or {}).get("prompt_tokens", 0)
        except asyncio.TimeoutError:
            record.status = "timeout"
        except aiohttp.ClientError as err:
            record.status, record.code = "connection_error", type(err).__name__
        return self._finish(record)

    def _finish(self, record: RequestRecord) -> RequestRecord:
        record.done = self.now()
        if record.ok:
            record.latency = record.done - record.scheduled
            if record.ttft is not None and record.output_tokens > 1:
                record.tpot = (record.done - record.scheduled - record.ttft) / (record.output_tokens - 1)
        return record

    async def _read_stream(self, response: aiohttp.ClientResponse, record: RequestRecord) -> None:
        """Read server-sent events to ``[DONE]``: first token time, usage."""
        text_events, finished = 0, False
        async for raw in response.content:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                finished = True
                break
            event = json.loads(data)
            if any(choice.get("text") for choice in event.get("choices") or ()):
                text_events += 1
                record.ttft = record.ttft if record.ttft is not None else self.now() - record.scheduled
            usage = event.get("usage") or {}
            record.output_tokens = usage.get("completion_tokens", record.output_tokens)
            record.prompt_tokens = usage.get("prompt_tokens", record.prompt_tokens)
        record.output_tokens = record.output_tokens or text_events
        if not finished:
            record.status, record.code = "stream_error", "no [DONE] event"


def _error_code(body: bytes) -> str | None:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
