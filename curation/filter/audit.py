"""Audit an existing CoT corpus with the parser and the filters: how a user judges a dataset.

    finecot audit ../shared/fine-r1/stage1/Fine-R1-Stage1-data.json --split fine-r1
    finecot audit runs/birds/accepted.parquet --run runs/birds --out verdicts.parquet

Reads LLaMA-Factory ShareGPT JSON (a list of {"messages": [system, user, assistant],
"images"} or {"conversations": [{"from", "value"}]}), JSONL of the same records or of flat
rows, or our own Parquet tables (drafts, accepted, rejected: a `response` column). Each row
is parsed and judged like a draft; the result is a funnel (parse rate, section detection
rates, every filter's rejections, leak / unseen-mention / off-domain rates, the off-domain
rows listed) and one verdict row per input row.

The gold label: a row's own `label` when it has one (our tables); otherwise the corpus
carries no separate gold, so the `<answer>` is the claimed label, resolved with the class
registry (its dataset found from the question's domain word, "airplane" -> aircraft, or from
the one dataset whose registry knows the answer). Such rows cannot be "wrong", but they can
still hedge, leak, name unseen classes or describe the wrong kind of object; rows whose
answer no registry class resolves are counted as unresolved.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.config import FilterConfig
from curation.core.labels import Registry
from curation.core.stage import Progress
from curation.core.tables import write_parquet_atomic
from curation.filter.filters import FilterContext, build_context, dedup_key
from curation.filter.parallel import judge_all
from curation.filter.rationale import SECTIONS
from curation.filter.stage import PARSED_FIELDS, Funnel, vacuous_checks, verdict_columns

log = logging.getLogger(__name__)


# Parse errors that mean the response is not <think>...</think><answer>...</answer>.
TAG_ERRORS = frozenset({
    "empty_text", "unparseable", "no_think_tag", "think_unclosed", "no_answer_tag",
    "answer_unclosed", "multiple_answer_tags", "answer_before_think", "empty_answer",
})

# Question words -> super-categories they ask about (first: the most likely).
DOMAIN_WORDS: dict[str, tuple[str, ...]] = {
    "airplane": ("aircraft",), "aircraft": ("aircraft",), "plane": ("aircraft",),
    "aeroplane": ("aircraft",), "jet": ("aircraft",), "airliner": ("aircraft",),
    "car": ("car",), "vehicle": ("car",), "automobile": ("car",),
    "bird": ("bird",), "dog": ("dog", "pet"), "puppy": ("dog", "pet"),
    "cat": ("pet", "cat"), "kitten": ("pet", "cat"), "pet": ("pet", "dog", "cat"),
    "flower": ("flower",), "plant": ("flower",),
}
_WORDS = re.compile(r"[a-z]+")


# -- reading corpora ------------------------------------------------------------------------


def _turns(record: Mapping) -> list[tuple[str, str]]:
    """(role, text) of a ShareGPT record, in either of LLaMA-Factory's spellings."""
    if isinstance(record.get("messages"), list):
        return [(str(m.get("role", "")), _text(m.get("content"))) for m in record["messages"]]
    if isinstance(record.get("conversations"), list):
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        return [(roles.get(str(m.get("from")), str(m.get("from"))), _text(m.get("value")))
                for m in record["conversations"]]
    return []


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI/TRL content parts
        return "".join(p.get("text") or "" for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


def _row(record: Mapping, index: int) -> dict[str, Any]:
    """One corpus record as a draft-like row (response, question, label if known, image)."""
    turns = _turns(record)
    if turns:
        users = [t for r, t in turns if r == "user"]
        answers = [t for r, t in turns if r == "assistant"]
        images = record.get("images") or []
        return {
            "row": index,
            "question": users[-1].replace("<image>", "").strip() if users else "",
            "response": answers[-1] if answers else "",
            "label": record.get("label"),
            "dataset": record.get("dataset"),
            "image": str(images[0]) if images else None,
        }
    return {
        "row": index,
        "question": str(record.get("question") or record.get("prompt") or ""),
        "response": _text(record.get("response") or record.get("completion") or record.get("output")),
        "label": record.get("label"),
        "dataset": record.get("dataset"),
        "super_category": record.get("super_category"),
        "finish_reason": record.get("finish_reason"),
        "status": record.get("status"),
        "image": record.get("image_sha256") or record.get("image_path") or record.get("item_id"),
        "draft_id": record.get("draft_id"),
    }


def load_corpus(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ShareGPT JSON / JSONL / Parquet corpus; a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path}")
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        if "response" not in table.column_names and "messages" not in table.column_names:
            raise ValueError(f"{path}: a Parquet corpus needs a `response` or `messages` column")
        keep = [c for c in table.column_names if c not in ("images", "image")]
        return [_row(r, i) for i, r in enumerate(table.select(keep).to_pylist())]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err.msg} at line {err.lineno}); for JSON "
                             "lines use the .jsonl suffix") from None
    if isinstance(records, dict):
        records = records.get("data") or records.get("rows") or [records]
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise ValueError(f"{path}: expected a list of records (ShareGPT messages or flat rows)")
    return [_row(r, i) for i, r in enumerate(records)]


# -- the claimed label ----------------------------------------------------------------------


def _dataset_domains(registry: Registry) -> dict[str, str]:
    return {c.dataset: c.super_category for c in registry}


def resolve_gold(row: Mapping, registry: Registry, domains: Mapping[str, str]) -> dict[str, Any]:
    """label, dataset, super_category and label_source for one corpus row."""
    if row.get("label"):
        dataset = str(row.get("dataset") or "")
        info = registry.resolve(str(row["label"]), dataset or None)
        return {"label": info.name if info else row["label"], "dataset": dataset or
                (info.dataset if info else ""), "super_category": row.get("super_category")
                or (info.super_category if info else domains.get(dataset, "")),
                "label_source": "label", "resolved": info is not None}
    answer = _answer(str(row.get("response") or ""))
    wanted = [sc for w in _WORDS.findall(str(row.get("question") or "").lower())
              for sc in DOMAIN_WORDS.get(w, DOMAIN_WORDS.get(w.removesuffix("s"), ()))]
    by_domain = [d for sc in dict.fromkeys(wanted) for d, s in domains.items() if s == sc or d == sc]
    info = None
    for dataset in dict.fromkeys(by_domain):
        info = registry.resolve(answer, dataset)
        if info:
            break
    if info is None:
        anywhere = [c for d in sorted(domains) if (c := registry.resolve(answer, d))]
        if len({c.name for c in anywhere}) == 1:  # one name (English Setter: dog and pet)
            info = anywhere[0]
    if info is not None:
        return {"label": info.name, "dataset": info.dataset, "super_category": info.super_category,
                "label_source": "answer", "resolved": True}
    dataset = by_domain[0] if by_domain else ""
    return {"label": answer, "dataset": dataset, "super_category": domains.get(dataset, ""),
            "label_source": "answer", "resolved": False}


_ANSWER = re.compile(r"<\s*answer\s*>(.*?)(?:<\s*/\s*answer\s*>|$)", re.IGNORECASE | re.DOTALL)


def _answer(response: str) -> str:
    found = _ANSWER.findall(response)
    return found[-1].strip() if found else ""


# -- the audit ------------------------------------------------------------------------------


def audit_rows(
    rows: Iterable[Mapping], ctx: FilterContext, progress: Progress | None = None,
    workers: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, verdict rows) of a corpus; see the module docstring. `workers`: processes
    to judge over (None: one per core; the verdicts do not depend on it)."""
    rows = list(rows)
    domains = _dataset_domains(ctx.registry)
    funnel = Funnel(ctx.enabled)
    out: list[dict[str, Any]] = []
    tags_ok = sections_all = unresolved = 0
    found = dict.fromkeys(SECTIONS, 0)
    off_domain: list[dict[str, Any]] = []
    golds = [resolve_gold(row, ctx.registry, domains) for row in rows]
    drafts = [
        {
            "response": row.get("response") or "", "finish_reason": row.get("finish_reason"),
            "status": row.get("status"), "label": gold["label"], "dataset": gold["dataset"],
            "super_category": gold["super_category"], "item_id": row.get("image") or f"row{i}",
            "draft_id": row.get("draft_id") or f"row{row.get('row', i)}",
            "image_sha256": row.get("image"),
        }
        for i, (row, gold) in enumerate(zip(rows, golds, strict=True))
    ]
    keys = Counter(dedup_key(draft, ctx) for draft in drafts)
    funnel.vacuous = vacuous_checks(
        ctx, (g["dataset"] for g in golds), bool(golds) and all(g["label_source"] == "answer" for g in golds),
        max(keys.values(), default=0))
    for i, (row, gold, draft, v) in enumerate(
        zip(rows, golds, drafts, judge_all(drafts, ctx, workers), strict=True)
    ):
        funnel.add(draft, v)
        r = v.parsed
        tags_ok += not (TAG_ERRORS & set(r.errors))
        for name in SECTIONS:
            found[name] += bool(getattr(r, name))
        sections_all += all(getattr(r, name) for name in SECTIONS)
        unresolved += not gold["resolved"]
        if "off_domain" in v.reasons:
            off_domain.append({"row": row.get("row", i), "dataset": gold["dataset"],
                               "answer": r.answer, "phrase": v.evidence["off_domain"][0]})
        out.append({"row": row.get("row", i), "question": row.get("question"),
                    "response": row.get("response"), "image": row.get("image"),
                    **{k: gold[k] for k in ("label", "dataset", "super_category", "label_source")},
                    **verdict_columns(v)})
        if progress and (i % 256 == 0 or i + 1 == len(rows)):
            progress("audit", i + 1, len(rows))
    n = max(len(rows), 1)
    counts = funnel.as_dict()

    def rate(*codes: str) -> float:
        hit = sum(1 for o in out if set(codes) & set(o["reasons"] + o["flags"]))
        return round(hit / n, 4)

    summary = {
        "rows": len(rows),
        "parse_rate": round(tags_ok / n, 4),
        "all_sections_rate": round(sections_all / n, 4),
        "section_rates": {k: round(v / n, 4) for k, v in found.items()},
        "accepted_rate": round(counts["accepted"] / n, 4),
        "rates": {
            "label_leak": rate("label_leak"),
            "side_information": rate("side_information"),
            "leak_any": rate("label_leak", "side_information"),
            "unseen_mention": rate("unseen_mention"),
            "off_domain": rate("off_domain"),
            "hallucinated_candidates": rate("hallucinated_candidates"),
            "gold_not_in_candidates": rate("gold_not_in_candidates"),
            "prediction_inconsistent": rate("prediction_inconsistent"),
            "ambiguous_answer": rate("ambiguous_answer"),
            "prediction_hedged": rate("prediction_hedged"),
            "repetition": rate("repetition"),
        },
        "accepted": counts["accepted"],
        "vacuous": counts["vacuous"],
        "unresolved_answers": unresolved,
        "off_domain_rows": off_domain,
        "funnel": counts,
    }
    return summary, out


def write_verdicts(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Per-row verdicts as Parquet (atomic)."""
    head = [pa.field(n, pa.int64() if n == "row" else pa.string()) for n in
            ("row", "question", "response", "image", "label", "dataset", "super_category",
             "label_source")]
    schema = pa.schema(head + PARSED_FIELDS)
    write_parquet_atomic(path, pa.Table.from_pylist(rows, schema=schema))


def audit_file(
    path: str | Path,
    registry: Registry,
    splits: Mapping[str, Mapping[str, list[str]]] | None = None,
    settings: FilterConfig | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Audit one corpus file; write its verdicts to `out` when given; return the summary."""
    ctx = build_context(registry, settings, splits)
    summary, rows = audit_rows(load_corpus(path), ctx, progress, workers)
    if out is not None:
        write_verdicts(out, rows)
        summary["verdicts"] = str(out)
    return summary
