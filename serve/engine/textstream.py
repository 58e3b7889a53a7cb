"""TextStream: the text of generated tokens, as deltas, with stop strings cut out.

Incremental decoding (as TGI and vLLM do it): the text of the new tokens is the decode of
a short window of ids minus the decode of the same window without them. The window
starts with the prompt's last tokens, so a first generated token gets its leading space
right. A delta that ends in an incomplete UTF-8 character (U+FFFD) waits for the next
token. Special tokens are skipped.

Stop strings: the text ends before the first occurrence of any of them. Text that could
still become the start of a stop string is held back until it cannot, so the deltas
always add up to the final text.
"""
from __future__ import annotations

from typing import Sequence

PROMPT_CONTEXT = 5  # prompt tokens in the first window


class TextStream:
    """Deltas of one sequence's text.

    Args:
        tokenizer: a Hugging Face tokenizer (None: no text; every delta is "").
        prompt_ids: the prompt's token ids (its last few give the first delta its context).
        stop: stop strings (need a tokenizer).
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int], stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self._ids = list(prompt_ids[-PROMPT_CONTEXT:])
        self._prefix = 0                # window start: ids[prefix:read] were decoded already
        self._read = len(self._ids)
        self._text = ""                 # all text so far, stop strings cut
        self._sent = 0                  # characters of _text handed out
        self._stopped = False

    @property
    def text(self) -> str:
        return self._text

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; returns (the text that can be handed out now, whether a stop string was met)."""
        if self.tokenizer is None or self._stopped:
            return "", self._stopped
        searched = max(0, len(self._text) - max(map(len, self.stop), default=0) + 1)
        self._text += self._decode(token_id)
        cut = self._first_stop(searched)
        if cut is not None:
            self._text, self._stopped = self._text[:cut], True
            return self._take(len(self._text)), True
        return self._take(len(self._text) - self._held()), False

    def flush(self) -> str:
        """The text held back (the sequence ends without meeting a stop string)."""
        return self._take(len(self._text))

    def _decode(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._tokenizer_decode(self._ids[self._prefix:self._read])
        after = self._tokenizer_decode(self._ids[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._ids = self._ids[self._read:]
        self._prefix, self._read = 0, len(self._ids)
        return after[len(before):]

    def _tokenizer_decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _first_stop(self, start: int) -> int | None:
        found = [i for i in (self._text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _held(self) -> int:
        """Length of the longest end of the text that starts some stop string."""
        longest = min(max(map(len, self.stop), default=1) - 1, len(self._text))
        for size in range(longest, 0, -1):
            tail = self._text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0

    def _take(self, end: int) -> str:
        delta = self._text[self._sent:end]
        self._sent = max(self._sent, end)
        return delta
