"""OpenAI response bodies and server-sent-event chunks for completions and chat completions."""
import json
import time
import uuid
from typing import Any, Optional


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _choice(index: int, text: str, finish_reason: Optional[str], chat: bool, stream: bool) -> dict[str, Any]:
    if not chat:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
    key = "delta" if stream else "message"
    content = {"content": text} if stream else {"role": "assistant", "content": text}
    return {"index": index, key: content, "logprobs": None, "finish_reason": finish_reason}


def completion_body(request_id: str, model: str, answers: list[dict[str, Any]], chat: bool) -> dict[str, Any]:
    """The whole (non-streamed) response for one answer per choice."""
    choices = [_choice(i, a["text"], a["finish_reason"], chat, stream=False) for i, a in enumerate(answers)]
    return {"id": request_id, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": usage(sum(a["prompt_tokens"] for a in answers), sum(a["completion_tokens"] for a in answers))}


def sse_chunk(request_id: str, model: str, chat: bool, text: Optional[str] = None,
              finish_reason: Optional[str] = None, role: bool = False,
              final_usage: Optional[dict[str, int]] = None) -> str:
    """One ``data:`` event of a streamed response."""
    body: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
                            "created": int(time.time()), "model": model}
    if final_usage is not None:
        body.update(choices=[], usage=final_usage)
    elif role:
        body["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None}]
    else:
        body["choices"] = [_choice(0, text or "", finish_reason, chat, stream=True)]
    return f"data: {json.dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"
