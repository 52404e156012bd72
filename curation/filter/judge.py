"""The optional judge: a second teacher call that checks a visual analysis against its image.

Off by default (`filters.judge: false`). When on, the filter stage (curation/filter/stage.py)
first runs every local filter, then shows the teacher each draft that passed them all: the
image and the draft's visual analysis, asking whether every statement in it is true of the
image, `<answer>yes</answer>` or `<answer>no</answer>`. "no" rejects the draft
(`judge_mismatch`); a judgement that failed, could not be read or was not sent because the
budget was spent rejects it too (`judge_failed`): nothing unchecked passes a gate that was
asked for.

The calls go through the drafting machinery: the same client (curation/teacher/client.py:
endpoints, concurrency, rate limits, retries), the same ledger (curation/core/ledger.py: keys
"judge:<sha256>", so a rerun asks nothing twice and the cost is accounted) and the same
budget (`draft.budget_usd` / `draft.budget_tokens` over the whole ledger). The judge runs in
the filter stage only: the draft quota loop calls the local filters (filters.judge()).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from curation.core.config import Recipe
from curation.core.ledger import Ledger, cost_usd
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.teacher.answers import Completion
from curation.teacher.client import TeacherClient
from curation.teacher.images import image_data_url

log = logging.getLogger(__name__)

SYSTEM = (
    "You check descriptions of images. You are shown an image and a description of the "
    "object in it. Decide whether every statement of the description is true of the image. "
    "Think briefly inside <think></think>, then answer yes or no alone inside <answer></answer>."
)
USER = (
    "Description to check:\n{visual}\n\nIs every statement of this description true of the "
    "image? Answer <answer>yes</answer> or <answer>no</answer>."
)
TEMPLATE_SHA = hashlib.sha256(f"{SYSTEM}\n{USER}".encode()).hexdigest()
_ANSWER = re.compile(r"<\s*answer\s*>\s*(yes|no)\b", re.IGNORECASE)


def judge_key(model: str, image_sha256: str, visual: str, sampling: Mapping[str, Any]) -> str:
    """The ledger key of one judgement: what shapes the answer, hashed (the image by sha256)."""
    canonical = json.dumps({"kind": "judge", "model": model, "image": image_sha256,
                            "visual": visual, "template": TEMPLATE_SHA, "sampling": sampling},
                           sort_keys=True, ensure_ascii=False)
    return "judge:" + hashlib.sha256(canonical.encode()).hexdigest()


def read_judgement(text: str | None) -> bool | None:
    """True (yes), False (no) or None (no readable answer).

    >>> read_judgement("<think>the crown is red</think><answer> Yes </answer>")
    True
    >>> read_judgement("<answer>no</answer>"), read_judgement("Crimson Warbler")
    (False, None)
    """
    found = _ANSWER.findall(text or "")
    return found[-1].lower() == "yes" if found else None


def _messages(row: Mapping, recipe: Recipe) -> list[dict]:
    t = recipe.teacher
    url = image_data_url(row["image_path"], t.image_max_side, t.image_max_pixels, t.jpeg_quality)
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": USER.format(visual=row["visual_analysis"])}]}]


def judge_rows(
    recipe: Recipe, run: RunDir, rows: Sequence[Mapping], progress: Progress | None = None
) -> dict[str, str | None]:
    """{draft_id: None (the judge agrees) or a reason code} for rows that passed the filters.

    Rows need draft_id, image_path, image_sha256 and visual_analysis.
    """
    return asyncio.run(_judge_rows(recipe, run, rows, progress))


async def _judge_rows(
    recipe: Recipe, run: RunDir, rows: Sequence[Mapping], progress: Progress | None
) -> dict[str, str | None]:
    t, budget = recipe.teacher, recipe.draft
    sampling = {"temperature": t.temperature, "top_p": t.top_p, "max_tokens": t.max_tokens}
    keys = {row["draft_id"]: judge_key(t.model, str(row.get("image_sha256")),
                                       str(row["visual_analysis"]), sampling) for row in rows}
    out: dict[str, str | None] = {}
    with Ledger(run.ledger) as ledger:
        cached = ledger.get_many(keys.values(), meta=False)

        def verdict(completion_text: str | None, status: str) -> str | None:
            answer = read_judgement(completion_text) if status in ("ok", "length") else None
            return None if answer else "judge_mismatch" if answer is False else "judge_failed"

        todo = []
        for row in rows:
            entry = cached.get(keys[row["draft_id"]])
            if entry is not None and entry.status != "failed":
                out[row["draft_id"]] = verdict(entry.text, entry.status)
            else:
                todo.append(row)

        def spent() -> bool:
            cost, tokens = ledger.totals()
            return bool((budget.budget_usd is not None and cost >= budget.budget_usd)
                        or (budget.budget_tokens is not None and tokens >= budget.budget_tokens))

        done = len(out)
        async with TeacherClient(t) as client:

            async def one(row: Mapping) -> None:
                nonlocal done
                key = keys[row["draft_id"]]

                def record(_: int, c: Completion) -> None:
                    cost = cost_usd(t.prices, t.model, c.prompt_tokens, c.completion_tokens)
                    ledger.record(c.entry(key, t.model, cost, {"kind": "judge"}))
                    out[row["draft_id"]] = verdict(c.text, c.status)

                try:
                    messages = _messages(row, recipe)
                except (OSError, ValueError) as err:  # an unreadable image: no judgement
                    log.warning("judge: %s: %s", row["draft_id"], err)
                    messages = None
                if messages is not None and not client.refused:
                    await client.sample(messages, [0], record, gate=spent)
                out.setdefault(row["draft_id"], "judge_failed")  # not sent: budget, refused
                done += 1
                if progress:
                    progress("judge", done, len(rows))

            queue = list(reversed(todo))  # workers, not one task per row: images are
            # encoded when their turn comes, so memory stays bounded

            async def worker() -> None:
                while queue:
                    await one(queue.pop())

            await asyncio.gather(*(worker() for _ in range(max(1, min(t.concurrency, len(todo))))))
    log.info("judge: %d drafts, %d agreed", len(out), sum(v is None for v in out.values()))
    return out
