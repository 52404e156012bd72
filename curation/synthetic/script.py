"""The scripted teacher's mind: behaviour flags, perception from pixels, scripted answers.

`Teacher.complete(request, key, occurrence)` turns one Chat Completions request body into a
response body: it reads the last image's attributes (read.py, cached by content), picks
the class, and writes one rationale per choice (rationale.py), making the mistakes the
`Behaviour` flags ask for with a random generator seeded by the request (its body, `seed`
and, without a seed, how often it was seen). teacher.py serves it over HTTP.

Without `world`, the teacher can name every class any world can hold; its mistakes and
candidate lists name only classes earlier in grid order, which every world holding the true
class also holds (worlds are prefixes of the grid order, see world.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from curation.core.labels import normalize
from curation.synthetic import rationale
from curation.synthetic.read import decode, read_image
from curation.synthetic.world import ATTRIBUTES, all_classes, class_name

HINT = re.compile(r'the correct sub-category is\s+["\u201c]([^"\u201d]+)["\u201d]', re.IGNORECASE)
CANDIDATES = re.compile(r"^\s*Candidates:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
FAULTS = ("429", "500", "503", "hang", "reset", "malformed")


@dataclass
class Behaviour:
    """Every knob of the scripted teacher (CLI flags of `finecot synthetic teacher`)."""

    model: str = "finecot-synthetic-teacher"
    perception_error_rate: float = 0.0  # misreads one attribute -> a confusable wrong class
    format_error_rate: float = 0.0  # missing_section | missing_tags | truncated, evenly
    leak_rate: float = 0.0  # hinted prompts: names the label in the analysis or "as described"
    latency: float = 0.0  # fixed seconds per request
    latency_median: float = 0.0  # lognormal latency when > 0 (overrides `latency`)
    latency_p99: float = 0.0
    max_concurrency: int = 0  # requests served at once; the rest queue (0: unlimited)
    rate_429: float = 0.0
    retry_after: float = 1.0  # seconds, sent as Retry-After and retry-after-ms
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_hang: float = 0.0  # never answers; the client must time out
    hang_seconds: float = 600.0
    rate_reset: float = 0.0  # connection reset (TCP RST)
    rate_malformed: float = 0.0  # 200 with a body that is not JSON
    honour_n: bool = True  # False: ignore n > 1 and return one choice, like some servers
    world: str | None = None  # classes.json (or its folder): answer only with these classes
    log_size: int = 10_000
    # What real servers do (README "Real servers"), reproduced at the HTTP boundary:
    reasoning_field: str | None = None  # move <think>...</think> there (LiteLLM, vLLM parsers)
    error_400_model: str | None = None  # serve only this model name; others: HTTP 400
    finish_reason_always_stop: bool = False  # a cut answer still says "stop" (LitServe)
    usage_summed_over_n: bool = False  # prompt_tokens counted once per choice
    no_usage: bool = False  # no usage in the body
    retry_after_header: str | None = None  # the only header carrying the wait of a 429/503
    # The Files/Batches APIs (batches.py): the faults above happen to lines, and
    batch_fail_first: int = 0  # the first N batches fail validation
    batch_expire_first: int = 0  # the first N batches expire ...
    batch_expire_at: float = 0.5  # ... this share of the way through their lines
    batch_max_lines: int = 50_000  # larger input files fail validation (OpenAI's limit)
    batch_stall_s: float = 0.0  # the first upload, create and download answers come this late
    batch_line_delay: float = 0.0  # seconds per batch line
    batch_hold_at: float | None = None  # the first batch holds here (a share of its lines)
    # until it is cancelled: a slow provider, where tests cancel a batch half done

    def __post_init__(self) -> None:
        rates = {k: v for k, v in asdict(self).items() if k.endswith("_rate") or k.startswith("rate_")}
        for name, value in rates.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1 (got {value})")
        if sum(getattr(self, f"rate_{f}") for f in FAULTS) > 1:
            raise ValueError("the fault rates (rate_429 ... rate_malformed) must sum to at most 1")
        if not 0 <= self.batch_expire_at <= 1:
            raise ValueError(f"batch_expire_at must be between 0 and 1 (got {self.batch_expire_at})")
        if self.latency_median > 0 and self.latency_p99 < self.latency_median:
            raise ValueError("latency_p99 must be at least latency_median")
        if self.world:
            load_world(self.world)  # fail now, not at the first request
        if self.reasoning_field not in (None, "reasoning_content", "reasoning"):
            raise ValueError("reasoning_field must be reasoning_content or reasoning "
                             f"(got {self.reasoning_field!r})")

    def fault(self, u: float) -> str | None:
        for name in FAULTS:
            u -= getattr(self, f"rate_{name}")
            if u < 0:
                return name
        return None

    def delay(self, rng: random.Random) -> float:
        if self.latency_median > 0:
            sigma = math.log(self.latency_p99 / self.latency_median) / 2.326 if self.latency_p99 else 0
            return self.latency_median * math.exp(rng.gauss(0, 1) * sigma)
        return self.latency


def load_world(path: str | Path) -> list[dict]:
    """The class list of a world folder or its classes.json."""
    path = Path(path)
    if path.is_dir():
        path = path / "classes.json"
    if not path.exists():
        raise FileNotFoundError(f"no world class list at {path}: run `finecot synthetic make` first")
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and {"name", "super_category", "attributes"} <= set(r) for r in rows):
        raise ValueError(f"{path} is not a synthetic world's classes.json (each class needs "
                         "name, super_category and attributes): make one with `finecot synthetic make`")
    return rows


class BadRequest(Exception):
    """The request cannot be answered as sent (HTTP 400 with this message)."""


def _integer(req: dict, key: str) -> int | None:
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer (got {value!r})")
    return value


class Teacher:
    """The scripted teacher's state: behaviour, perception cache, counters and request log."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        known = all_classes()
        if behaviour.world:
            self.classes = {c["name"]: {**known.get(c["name"], {}), **c}
                            for c in load_world(behaviour.world)}
        else:
            self.classes = known
        self.by_normal = {normalize(n): c for n, c in known.items()} | {
            normalize(n): c for n, c in self.classes.items()}
        self.order = {name: k for k, name in enumerate(known)}  # grid order across the world
        self._readings: OrderedDict[str, tuple] = OrderedDict()
        self._near: dict[str, list[dict]] = {}
        self._attempts: OrderedDict[str, int] = OrderedDict()
        self.in_flight = 0  # HTTP requests being handled (kept across /stats/reset)
        self.active = 0  # of those, past the concurrency limit
        self.reset()

    def reset(self) -> None:
        self.counts: dict[str, int] = {"requests": 0, "choices": 0, "prompt_tokens": 0,
                                       "completion_tokens": 0, "images": 0, "hinted": 0,
                                       "unknown_images": 0, "misperceived": 0,
                                       "format_errors": 0, "leaks": 0, "max_in_flight": 0,
                                       "max_active": 0}
        self.outcomes: dict[str, int] = {}
        self.log: deque[dict] = deque(maxlen=self.behaviour.log_size)

    # -- perception ---------------------------------------------------------------------

    def _image(self, url: str) -> tuple:
        """(reading or None, reason, width, height) of an image URL, cached by content."""
        key = hashlib.blake2b(url.encode(), digest_size=16).hexdigest()
        hit = self._readings.get(key)
        if hit is not None:
            self._readings.move_to_end(key)
            return hit
        if url.startswith("data:"):
            try:
                data = base64.b64decode(url.partition(",")[2], validate=False)
            except ValueError:
                raise BadRequest("image_url: invalid base64 data URL") from None
        elif url.startswith("file:"):
            path = Path(unquote(urlparse(url).path))
            if not path.is_file():
                raise BadRequest(f"image_url: no such file {path}")
            data = path.read_bytes()
        else:
            raise BadRequest("image_url must be a base64 data URL or a file:// URL "
                              "(the scripted teacher has no network)")
        try:
            pixels, width, height = decode(data)
        except ValueError:
            raise BadRequest("image_url: not a readable image") from None
        reading = read_image(pixels)
        reason = "the image shows no bird of the known kinds" if reading is None else ""
        result = (reading, reason, width, height)
        self._readings[key] = result
        if len(self._readings) > 4096:
            self._readings.popitem(last=False)
        return result

    def _class_of(self, super_category: str, attributes: dict[str, str]) -> dict | None:
        """The world's class with these attributes (nearest one when the world has no exact)."""
        exact = self.classes.get(class_name(super_category, attributes))
        if exact is not None:
            return exact
        pool = [c for c in self.classes.values() if c.get("super_category") == super_category]
        if not pool:
            return None
        return min(pool, key=lambda c: sum(c["attributes"].get(a) != attributes[a] for a in ATTRIBUTES))

    def _rivals(self, info: dict) -> list[dict]:
        """Other classes of `info`'s super-category that surely exist in the client's world,
        closest in attributes first (cached). With --world: the world's classes. Without:
        classes earlier in grid order (every world is a prefix of it) -- and the second
        class for the first one."""
        cached = self._near.get(info["name"])
        if cached is not None:
            return cached
        rank = self.order.get(info["name"], 0)
        same = [c for c in self.classes.values()
                if c.get("super_category") == info["super_category"] and c["name"] != info["name"]]
        if not self.behaviour.world:
            earlier = [c for c in same if self.order[c["name"]] < rank]
            same = earlier or sorted(same, key=lambda c: self.order[c["name"]])[:1]
        cached = sorted(same, key=lambda c: (
            sum(c["attributes"].get(a) != info["attributes"][a] for a in ATTRIBUTES),
            self.order.get(c["name"], 1 << 30)))
        self._near[info["name"]] = cached
        return cached

    def _confusable(self, info: dict, rng: random.Random) -> dict:
        """A class one attribute away (else the closest) that exists in the client's world."""
        rivals = self._rivals(info)
        if not rivals:
            return info

        def distance(c: dict) -> int:
            return sum(c["attributes"].get(a) != info["attributes"][a] for a in ATTRIBUTES)

        return rng.choice([c for c in rivals if distance(c) == distance(rivals[0])])

    # -- one completion -----------------------------------------------------------------

    def complete(self, req: dict, key: str, occurrence: int) -> dict:
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        if req.get("stream"):
            raise BadRequest("stream=true is not supported by the scripted teacher")
        texts, images = [], []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") == "text":
                        texts.append(str(part.get("text", "")))
                    elif part.get("type") == "image_url":
                        url = part.get("image_url")
                        url = url.get("url") if isinstance(url, dict) else url
                        images.append(self._image(str(url)))
        prompt = "\n".join(texts)
        n = _integer(req, "n") or 1
        if not 1 <= n <= 128:
            raise BadRequest("n must be between 1 and 128")
        if not self.behaviour.honour_n:
            n = 1
        max_tokens = _integer(req, "max_completion_tokens") or _integer(req, "max_tokens")
        seed = req.get("seed")
        deterministic = seed is not None or req.get("temperature") == 0

        hint = HINT.search(prompt)
        listed = CANDIDATES.search(prompt)
        listed = [c.strip() for c in listed.group(1).split(";") if c.strip()] if listed else []
        # The last image is the query (few-shot prompts put their examples first).
        reading, reason, _, _ = images[-1] if images else (None, "no image was sent", 0, 0)
        truth_class = self._class_of(reading.super_category, reading.attributes) if reading else None

        choices, truths = [], []
        for index in range(n):
            rng = random.Random(f"{key}:{'' if deterministic else occurrence}:{index}")
            text, truth = self._choice(rng, reading, reason, truth_class, hint, listed)
            finish = "stop"
            if truth["format_error"] == "truncated":
                finish = "length"
            if max_tokens is not None and rationale.count_tokens(text) > max_tokens:
                text, finish = rationale.truncate_tokens(text, max_tokens), "length"
                truth["format_error"] = "truncated"
            truth["index"] = index
            choices.append({"index": index, "finish_reason": finish, "logprobs": None,
                            "message": {"role": "assistant", "content": text}})
            truths.append(truth)
        image_tokens = sum(math.ceil(w / 28) * math.ceil(h / 28) + 2 for _, _, w, h in images)
        usage = {"prompt_tokens": rationale.count_tokens(prompt) + image_tokens,
                 "completion_tokens": sum(rationale.count_tokens(c["message"]["content"])
                                          for c in choices)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self._account(len(images), hint is not None, truths, usage)
        return {"id": f"chatcmpl-{key[:24]}", "object": "chat.completion",
                "created": int(time.time()), "model": req.get("model") or self.behaviour.model,
                "system_fingerprint": "finecot-synthetic", "choices": choices, "usage": usage,
                "finecot_truth": truths}

    def _choice(self, rng, reading, reason, truth_class, hint, listed) -> tuple[str, dict]:
        b = self.behaviour
        truth = {"perceived_class": None, "true_class": truth_class and truth_class["name"],
                 "answer": "unknown", "hinted": hint is not None, "misperceived": False,
                 "format_error": None, "leak": None}
        u_perceive, u_format, u_leak = rng.random(), rng.random(), rng.random()
        if hint is None and truth_class is None:
            return rationale.write_unknown(reason or "no matching bird", rng), truth
        format_error = rng.choice(rationale.FORMAT_ERRORS) if u_format < b.format_error_rate else None
        if hint is not None:  # rationalise toward the given label, whatever the pixels say
            answer = hint.group(1).strip()
            target = self.by_normal.get(normalize(answer))
            answer = target["name"] if target else answer
            seen = dict(target["attributes"]) if target else dict(reading.attributes) if reading else {}
            leak = rng.choice(rationale.LEAKS) if u_leak < b.leak_rate else None
            perceived = truth_class
        else:
            perceived = truth_class
            if u_perceive < b.perception_error_rate:
                perceived = self._confusable(truth_class, rng)
                truth["misperceived"] = perceived["name"] != truth_class["name"]
            target, answer, leak = perceived, perceived["name"], None
            seen = dict(perceived["attributes"])
        candidates = self._candidates(target, answer, listed, rng)
        text = rationale.write(seen, answer, candidates, rng, format_error=format_error, leak=leak)
        truth.update(perceived_class=perceived and perceived["name"], answer=answer,
                     format_error=format_error, leak=leak)
        return text, truth

    def _candidates(self, target, answer: str, listed: list[str], rng: random.Random) -> list[str]:
        """2-6 names of the predicted class's super-category, the prediction included: from the
        prompt's `Candidates:` line when it has one, else the closest rivals."""
        rivals = [c["name"] for c in self._rivals(target)] if target is not None else []
        if listed:
            kind = target["super_category"] if target else None
            same = [c for c in listed if kind is None or self.by_normal.get(normalize(c), {})
                    .get("super_category", kind) == kind]
            names = list(dict.fromkeys([answer, *same]))[: rng.randint(2, 6)]
        else:
            names = [answer, *rivals[: rng.randint(1, 4)]]
        if len(names) < 2:
            names += [n for n in rivals if n not in names][:1]
        rng.shuffle(names)
        return names

    def _account(self, images: int, hinted: bool, truths: list[dict], usage: dict) -> None:
        c = self.counts
        c["images"] += images
        c["hinted"] += hinted
        c["choices"] += len(truths)
        c["prompt_tokens"] += usage["prompt_tokens"]
        c["completion_tokens"] += usage["completion_tokens"]
        c["unknown_images"] += sum(t["true_class"] is None for t in truths)
        c["misperceived"] += sum(t["misperceived"] for t in truths)
        c["format_errors"] += sum(t["format_error"] is not None for t in truths)
        c["leaks"] += sum(t["leak"] is not None for t in truths)

    def attempt(self, key: str) -> int:
        """How many times this exact request body was seen before (faults are transient)."""
        count = self._attempts.pop(key, 0)
        self._attempts[key] = count + 1
        if len(self._attempts) > 200_000:
            self._attempts.popitem(last=False)
        return count
