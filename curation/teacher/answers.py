"""What a chat.completion body says: one `Completion` per sample, read as real servers send it.

    completions = parse_completion(json.loads(body), max_tokens=768, prompt_estimate=lambda: 900)
    completions[0].text          # <think>REASONING</think> + content, whichever field held it

Used by the online client (curation/teacher/client.py) and batch output lines
(curation/teacher/batch_files.py): one reading of a body for both. What it handles:
- reasoning outside `content` (`reasoning_content`, `reasoning`, or the structured
  `reasoning_details` / `thinking_blocks`: vLLM reasoning parsers, LiteLLM, DeepSeek,
  OpenRouter), kept apart and put back as `<think>...</think>` before the content;
- usage split over the choices by their length, estimated (and marked) when the server
  reports none;
- truncation: `finish_reason: length`, or an answer as long as max_tokens whatever its
  finish_reason says; empty answers;
- the readable part of an error body (`server_message`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curation.core.ledger import Entry, compose_answer

REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details", "thinking_blocks")


@dataclass
class Completion:
    """One sample's outcome. status: ok | length | empty | failed (then `error` says why).

    `content` is the message content as the server sent it, `reasoning` what it returned
    beside it (from the field `reasoning_field`); `text` is the two together, as read."""

    status: str
    content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None
    endpoint: str | None = None
    reasoning: str | None = None
    reasoning_field: str | None = None
    usage_estimated: bool = False
    shared: int = 1  # samples answered by the same HTTP request
    truth: Any = None  # ground truth a scripted server attaches to the choice (finecot_truth)

    @property
    def text(self) -> str | None:
        return compose_answer(self.content, self.reasoning)

    @property
    def usable(self) -> bool:
        return self.status == "ok"

    def entry(self, key: str, model: str, cost: float, meta: dict[str, Any]) -> Entry:
        """The ledger row of this outcome (content and reasoning kept apart)."""
        extra: dict[str, Any] = {}
        if self.reasoning_field:
            extra["reasoning_field"] = self.reasoning_field
        if self.truth is not None:
            extra["truth"] = self.truth
        return Entry(
            key=key, model=model, status=self.status, attempts=self.attempts, error=self.error,
            response=self.content, finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            latency_s=self.latency_s, cost_usd=cost, endpoint=self.endpoint, meta=meta,
            reasoning=self.reasoning, extra=extra, usage_estimated=self.usage_estimated,
            shared=self.shared,
        )


def server_message(raw: bytes, limit: int = 300) -> str:
    """The readable part of an error body: OpenAI's error.message, FastAPI's detail, or the
    text itself.

    >>> server_message(b'{"error": {"message": "Invalid model name passed in model=x"}}')
    'Invalid model name passed in model=x'
    >>> server_message(b'{"detail": "Server is pinned to m"}'), server_message(b"busy")
    ('Server is pinned to m', 'busy')
    """
    text = raw[:4000].decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:limit]
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or data.get("detail") or data.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip()[:limit]
    return text[:limit]


def _text_of(value: Any) -> str:
    """Text of a reasoning field: a string, or the parts providers send (lists of objects
    with `text`, `thinking`, `content` or `summary`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name in ("text", "thinking", "content", "summary"):
            if isinstance(value.get(name), str):
                return value[name]
        return ""
    if isinstance(value, list):
        return "".join(_text_of(part) for part in value)
    return ""


def _reasoning(message: dict) -> tuple[str | None, str | None]:
    """(reasoning text, field) of a message, the first field that holds any text."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if value:
            text = _text_of(value)
            if text.strip():
                return text, name
    return None, None


def parse_completion(data: Any, max_tokens: int | None,
                     prompt_estimate: Callable[[], float]) -> list[Completion]:
    """Completions from a chat.completion body (parsed JSON: an online answer, or a batch
    output line's `response.body`); raises ValueError, KeyError, TypeError... on a body that
    is not one.

    Usage covers all choices: it is split over them by their length (the sum stays
    exact). A server that reports none gets an estimate (prompt: the TPM estimate; answer:
    4 characters a token), marked `usage_estimated`. An answer as long as max_tokens is
    truncated whatever its finish_reason says (some servers say "stop")."""
    choices = data["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices in the response")
    choices = sorted(choices, key=lambda c: c.get("index", 0))
    truths = data.get("finecot_truth")
    usage = data.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    out = []
    for i, choice in enumerate(choices):
        message = choice["message"]
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        reasoning, field = _reasoning(message)
        truth = truths[i] if isinstance(truths, list) and i < len(truths) else None
        out.append(Completion(status="ok", content=content or None,
                              finish_reason=choice.get("finish_reason"), reasoning=reasoning,
                              reasoning_field=field, truth=truth))
    lengths = [len(c.content or "") + len(c.reasoning or "") for c in out]
    estimated = prompt + completion == 0 and any(lengths)
    if estimated:
        prompt = math.ceil(prompt_estimate())
        completion = sum(math.ceil(n / 4) for n in lengths)
    weights = lengths if sum(lengths) else [1] * len(out)
    split_usage(prompt, [1] * len(out), out, "prompt_tokens")
    split_usage(completion, weights, out, "completion_tokens")
    # Per-choice token counts are known for one choice; for several, only when all of them
    # must have reached max_tokens.
    at_limit = bool(max_tokens) and not estimated and completion >= len(out) * max_tokens
    for c in out:
        c.usage_estimated = estimated
        if not (c.content or "").strip() and not (c.reasoning or "").strip():
            c.status = "empty"
        elif c.finish_reason == "length" or at_limit:
            c.status = "length"
    return out


def split_usage(total: int, weights: list[int], completions: list[Completion], name: str) -> None:
    """Share `total` over the completions by weight, integers summing exactly to it."""
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    shares[0] += total - sum(shares)
    for c, share in zip(completions, shares, strict=True):
        setattr(c, name, share)
