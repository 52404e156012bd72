"""What the draft stage asks the teacher: messages, request keys, images, and acceptance.

    requests = Requests(recipe, registry, pool_rows)
    requests.keys(row, "blind", [0, 1])          # request keys, without reading any image
    url = await ImageCache(recipe).get(path, width, height)
    requests.for_send(row, "blind", url)         # the messages JSON that goes out

A request key is the sha256 of the canonical JSON of the model, the messages (the image as
its file sha256 plus the resize settings), the sampling params, the sample index and the
prompt templates' sha: everything that shapes the answer, nothing that does not.

    >>> reg = Registry([ClassInfo(0, "Laysan Albatross", "cub", "bird")])
    >>> accept = fallback_accept(reg)
    >>> accept({"status": "ok", "label": "Laysan Albatross", "dataset": "cub",
    ...         "response": "<think>...</think><answer>laysan albatross</answer>"})
    True
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from curation.core.config import Recipe
from curation.core.labels import ClassInfo, Registry, match
from curation.core.rundir import RunDir
from curation.filter.filters import judge, make_context
from curation.teacher.images import image_data_url
from curation.teacher.prompts import load_prompts, load_questions, pick_candidates, pick_question

log = logging.getLogger(__name__)

# -- acceptance ------------------------------------------------------------------------------

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)


def fallback_accept(registry: Registry) -> Callable[[Mapping[str, Any]], bool]:
    """FALLBACK acceptance, used only when the run's registry.json is missing: the last
    <answer> of a finished draft names the gold (curation.core.labels.match)."""

    def accept(draft: Mapping[str, Any]) -> bool:
        if draft.get("status") != "ok":
            return False
        answers = _ANSWER.findall(draft.get("response") or "")
        if not answers:
            return False
        return match(answers[-1], draft["label"], registry, draft.get("dataset")).correct

    return accept


def make_accept(recipe: Recipe, run: RunDir, registry: Registry) -> Callable[[Mapping], bool]:
    """The filter's verdict (curation.filter.filters); without a registry.json, the fallback."""
    if not run.registry.exists():
        log.info("%s missing: the filters need it; accepting drafts whose <answer> matches the "
                 "gold", run.registry)
        return fallback_accept(registry)
    context = make_context(recipe, run)
    return lambda draft: judge(draft, context).accepted


def pool_registry(run: RunDir, pool: list[dict]) -> Registry:
    """The run's registry, or (no ingest here) one built from the pool's own labels."""
    if run.registry.exists():
        return Registry.load(run.registry)
    seen: dict[tuple[str, str], ClassInfo] = {}
    for row in pool:
        key = (row["dataset"], row["label"])
        if key not in seen:
            seen[key] = ClassInfo(int(row["label_id"]), row["label"], row["dataset"],
                                  row.get("super_category") or "object")
    return Registry(seen.values())


# -- requests: what is asked, and its key ------------------------------------------------------


class Requests:
    """Renders each item's messages and computes request keys (no image is read for a key)."""

    def __init__(self, recipe: Recipe, registry: Registry, pool: list[dict]):
        self.recipe, self.registry, self.pool = recipe, registry, pool
        cfg, teacher = recipe.prompts, recipe.teacher
        self.prompts = load_prompts(cfg.system, cfg.user, cfg.directory)
        self.bank = load_questions(cfg.questions)
        self.sampling = {"temperature": teacher.temperature, "top_p": teacher.top_p,
                         "max_tokens": teacher.max_tokens, "seed": teacher.seed}
        self.sampling_json = json.dumps(self.sampling, sort_keys=True)
        self.image_spec = f"fit={teacher.image_max_side}x{teacher.image_max_pixels};q={teacher.jpeg_quality}"
        self._model = json.dumps(teacher.model)
        self._systems: dict[str, str] = {}
        self._encoded: dict[tuple[int, str], str] = {}
        self._users: dict[str, str] = {}
        # Candidates come from the pool's (seen) classes only: naming a held-out class in a
        # prompt would put it into training rationales. Same super-category first.
        pool_classes = {(r["dataset"], r.get("super_category") or "object", r["label"]) for r in pool}
        self._rivals: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._names: dict[str, list[str]] = defaultdict(list)
        for dataset, domain, label in sorted(pool_classes):
            self._rivals[dataset, domain].append(label)
            self._names[dataset].append(label)

    def question(self, row: dict) -> str:
        return pick_question(self.bank, row.get("super_category") or "object", str(row["item_id"]))

    def messages(self, row: dict, strategy: str, image_url: str) -> list[dict]:
        domain = row.get("super_category") or "object"
        system = self._systems.get(domain)
        if system is None:
            system = self._systems[domain] = self.prompts.system.render(super_category=domain)
        hinted = strategy == "hinted"
        info = self.registry.resolve(row["label"], row["dataset"]) if hinted else None
        describe = hinted and self.recipe.prompts.describe and info is not None
        variables = dict(
            question=self.question(row),
            super_category=domain,
            hint=row["label"] if hinted else None,
            description=(info.description or None) if describe else None,
            attributes=(info.attributes or None) if describe else None,
            candidates=pick_candidates(row["label"], self._rivals[row["dataset"], domain],
                                       self.recipe.prompts.candidates, str(row["item_id"]),
                                       fallback=self._names[row["dataset"]]),
        )
        # Blind prompts repeat (a few questions per domain): render each distinct one once.
        signature = json.dumps(variables, sort_keys=True)
        user = self._users.get(signature)
        if user is None:
            if len(self._users) > 4096:
                self._users.clear()
            user = self._users[signature] = self.prompts.user.render(**variables)
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": user},
            ]},
        ]

    def image_ref(self, row: dict) -> str:
        return f"sha256:{row['image_sha256']};{self.image_spec}"

    def encoded(self, row: int, strategy: str) -> str:
        """The messages as canonical JSON, the image standing as its ref (cached until sent)."""
        cached = self._encoded.get((row, strategy))
        if cached is None:
            item = self.pool[row]
            messages = self.messages(item, strategy, self.image_ref(item))
            cached = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            self._encoded[(row, strategy)] = cached
        return cached

    def keys(self, row: int, strategy: str, indices: Iterable[int]) -> list[str]:
        """Request keys: sha256 of the canonical JSON of everything that shapes the answer."""
        head = (f'{{"messages":{self.encoded(row, strategy)},"model":{self._model},'
                f'"sampling":{self.sampling_json},"template_sha":"{self.prompts.sha}",')
        return [hashlib.sha256(f'{head}"sample_index":{i}}}'.encode()).hexdigest() for i in indices]

    def for_send(self, row: int, strategy: str, data_url: str) -> str:
        """The messages JSON to send: the image ref swapped for the data URL (base64: no
        escaping needed), built from the same text the key was computed from."""
        encoded = self.encoded(row, strategy)
        del self._encoded[(row, strategy)]  # sent once per round: no need to keep it
        return encoded.replace(self.image_ref(self.pool[row]), data_url, 1)

    def release(self, row: int, strategy: str) -> None:
        """Drop one cached message text (nothing to send for it)."""
        self._encoded.pop((row, strategy), None)

    def forget(self) -> None:
        """Drop the cached message texts (end of a round): memory stays bounded."""
        self._encoded.clear()


_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def _fast_data_url(path: str, width: int, height: int, max_side: int, max_pixels: int) -> str | None:
    """The file as-is when the pool's size fits and it is a JPEG without EXIF or a PNG: no
    decode at all (the pool already knows the size). None: take the careful path."""
    if not (0 < width <= max_side and 0 < height <= max_side and width * height <= max_pixels):
        return None
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(_PNG):
        mime = "image/png"
    elif data.startswith(_JPEG) and b"Exif\x00\x00" not in data[:65536]:  # EXIF may rotate it
        mime = "image/jpeg"
    else:
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class ImageCache:
    """Encoded data URLs, least recently used out first, bounded in bytes."""

    def __init__(self, recipe: Recipe, max_bytes: int = 64 << 20):
        self.teacher, self.max_bytes, self.size = recipe.teacher, max_bytes, 0
        self._urls: OrderedDict[str, str] = OrderedDict()

    async def get(self, path: str, width: int = 0, height: int = 0) -> str:
        """The image's data URL. A file that fits goes as-is (no decode, in the loop); one
        that needs resizing is done in a worker thread (PIL releases the GIL), so a large
        photo never stalls the requests in flight."""
        url = self._urls.get(path)
        if url is not None:
            self._urls.move_to_end(path)
            return url
        t = self.teacher
        url = _fast_data_url(path, width or 0, height or 0, t.image_max_side, t.image_max_pixels)
        if url is None:
            url = await asyncio.to_thread(image_data_url, path, t.image_max_side,
                                          t.image_max_pixels, t.jpeg_quality)
        self._urls[path] = url
        self.size += len(url)
        while self.size > self.max_bytes and len(self._urls) > 1:
            self.size -= len(self._urls.popitem(last=False)[1])
        return url
