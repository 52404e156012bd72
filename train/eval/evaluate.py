"""Evaluation: open- and closed-world accuracy on seen and unseen classes, as the paper reports it.

    finecot eval run --data runs/birds/dataset --model runs/birds/tapo --out runs/birds/eval/tapo
    finecot eval run --data runs/birds --endpoint http://127.0.0.1:8000/v1 --endpoint-model qwen \
        --out runs/birds/eval/qwen
    finecot eval run --fine-r1 ../shared/fine-r1/eval --fine-r1-root bird=/data/fine-r1 ...
    finecot eval compare runs/birds/eval/qwen runs/birds/eval/tapo --paper

Inputs: the exported `eval_open` / `eval_closed` configs (`finecot export`), or the paper's
own lists (eval/*.jsonl of the Fine-R1 release) with a local copy of each dataset's images
laid out as their `image_path` says (`--fine-r1-root DATASET=FOLDER`). The paper's files put
the gold first and its script never shuffles: here options are shuffled with a recorded seed
(`--keep-order` reproduces the paper's order), and the report gives the position-debiased
accuracy and where the answers fell.

Prompts (`prompt`): open-world asks exactly as TAPO trains (the question, a blank line, the
release's format instruction); closed-world is the release's closed template with its 4
options, then the same instruction. `--paper-compat`: the release's evaluation templates
alone (eval/evaluation.py), a closed-world answer without `<answer>` tags scored wrong, and
2048 new tokens, as the paper's numbers were measured.
Every answer is cached in a ledger (SQLite, curation/core/ledger.py) by request key: model, image
sha256, prompt text, sampling. A rerun sends nothing already answered; a budget stops it.

Writes to OUT: responses_{open,closed}.parquet (one row per item: raw response, parsed
answer, verdict), metrics.json, report.md, plot.png, ledger.sqlite (default ledger).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.labels import ClassInfo, Registry
from curation.core.ledger import Entry, Ledger, cost_usd
from curation.core.tables import write_json_atomic, write_parquet_atomic
from curation.export.prompts import (
    CLOSED_TEMPLATE,
    FORMAT_INSTRUCTION,
    OPEN_TEMPLATE,
    RL_PROMPT_SEPARATOR,  # noqa: F401 (the doctest of prompt)
    closed_prompt_text,
    rl_prompt_text,
)
from curation.export.triplets import shuffled_options
from curation.ingest.split import FINE_R1_DATASETS
from curation.teacher.answers import Completion
from train.eval import metrics as m
from train.eval.models import Request

log = logging.getLogger(__name__)

MODES = ("open", "closed")
PAPER_MAX_NEW_TOKENS = 2048  # the release's eval/eval_closed.sh and eval_open.sh: MAX_NEW_TOKENS=2048


@dataclass
class Item:
    """One evaluation image with its gold, seen/unseen side and (closed-world) options."""

    id: str
    dataset: str
    label: str
    class_split: str
    question: str
    image: bytes | Path  # encoded file bytes, or a file read only when the item is sent
    super_category: str | None = None
    options: list[str] | None = None
    answer_index: int | None = None
    paper_path: str | None = None  # the paper's image_path (its coarse-word rule reads it)
    image_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.image_sha256:
            self.image_sha256 = file_sha256(self.image)


def file_sha256(image: bytes | Path) -> str:
    """sha256 of image bytes, or of a file read in 1 MB chunks (bounded memory)."""
    if isinstance(image, bytes):
        return hashlib.sha256(image).hexdigest()
    digest = hashlib.sha256()
    with open(image, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Settings:
    """How answers are judged and paid for (the CLI's options)."""

    paper_compat: bool = False
    embedder: str = "hashed"
    budget_usd: float | None = None
    budget_tokens: int | None = None
    retry_failed: bool = True
    prices: dict[str, Any] = field(default_factory=dict)


class EvalProgress:
    """Counters; the CLI's rich bar overrides the hooks."""

    def start(self, mode: str, total: int | None) -> None:
        """A mode begins: `total` items (None: unknown)."""

    def advance(self, count: int = 1) -> None:
        """`count` more items done (answered now, or found in the ledger)."""

    def close(self) -> None:
        """The run is over."""


# -- inputs: exported configs ------------------------------------------------------------------


def exported_files(source: str | Path, config: str) -> list[str]:
    from train.data import shard_files

    files = shard_files(source, config, "test")
    if not files:
        raise FileNotFoundError(f"{source}: no exported dataset or Parquet shards; run `finecot export`")
    return files


def count_exported(source: str | Path, config: str, limit: int | None = None) -> int:
    """Rows of an exported config, from the shards' footers (no data read)."""
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in exported_files(source, config))
    return total if limit is None else min(total, limit)


def _seeded(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def sample_ids(rows: Iterable[dict[str, Any]], limit: int, seed: int = 0) -> set[str]:
    """`limit` row ids spread over seen and unseen classes and over classes: seen and unseen
    take turns, each side goes round its classes (in a seeded order) taking one row of each
    (a seeded pick) before a second of any. The same seed gives the same rows.

    >>> rows = [{"id": f"{c}{i}", "label": c, "class_split": "unseen" if c == "z" else "seen"}
    ...         for c in "abz" for i in range(5)]
    >>> sorted({i[0] for i in sample_ids(rows, 3)})
    ['a', 'b', 'z']
    """
    by_class: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        key = (str(row.get("class_split") or "seen"), str(row.get("dataset") or ""), str(row["label"]))
        by_class.setdefault(key, []).append(str(row["id"]))
    sides: dict[str, list[str]] = {}
    for side in sorted({k[0] for k in by_class}):
        classes = sorted((k for k in by_class if k[0] == side), key=lambda k: _seeded(seed, "|".join(k)))
        queues = [sorted(by_class[k], key=lambda i: _seeded(seed, i)) for k in classes]
        sides[side] = [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]
    order = [ids[r] for r in range(max(map(len, sides.values()), default=0))
             for ids in sides.values() if r < len(ids)]
    return set(order[:limit])


def iter_exported(source: str | Path, config: str, limit: int | None = None,
                  seed: int = 0) -> Iterator[Item]:
    """Items of an exported eval_open / eval_closed config, streamed 256 rows at a time (an
    item's image bytes live only while its chunk is evaluated). `limit`: a seeded sample
    across seen/unseen and classes (`sample_ids`), never the first rows (one class)."""
    wanted = None
    if limit is not None:
        columns = ["id", "label", "class_split", "dataset"]
        meta = [row for file in exported_files(source, config)
                for row in pq.read_table(file, columns=[c for c in columns
                                                        if c in pq.read_schema(file).names]).to_pylist()]
        wanted = sample_ids(meta, limit, seed)
    count = 0
    for file in exported_files(source, config):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                if wanted is not None and str(row.get("id")) not in wanted:
                    continue
                images = row.get("images") or []
                if not images or not images[0].get("bytes"):
                    log.warning("%s: row %s has no image bytes: skipped", file, row.get("id"))
                    continue
                options = row.get("options")
                index = row.get("answer_index")
                if options is not None and index is None:
                    index = list(options).index(row["answer"])
                yield Item(
                    id=str(row.get("id") or count), dataset=row.get("dataset") or "data",
                    label=row["answer"], class_split=row.get("class_split") or "seen",
                    question=row["question"], image=images[0]["bytes"],
                    super_category=row.get("super_category"), options=options,
                    answer_index=index, image_sha256=row.get("image_sha256") or "",
                )
                count += 1
                if limit is not None and count >= limit:
                    return


def load_exported(source: str | Path, config: str, limit: int | None = None,
                  seed: int = 0) -> list[Item]:
    """All items of an exported config in memory (tests, small sets); see iter_exported."""
    return list(iter_exported(source, config, limit, seed))


def exported_registry(source: str | Path, configs: Sequence[str] = ("eval_open", "eval_closed")) -> Registry:
    """The run's registry.json next to the export, else one built from the golds and options
    of the exported configs (their text columns only)."""
    from train.data import dataset_root

    root = dataset_root(source)
    for candidate in ([root / "registry.json", root.parent / "registry.json"] if root else []):
        if candidate.exists():
            return Registry.load(candidate)
    names: dict[str, dict[str, str | None]] = {}
    for config in configs:
        try:
            files = exported_files(source, config)
        except FileNotFoundError:
            continue
        for file in files:
            have = set(pq.read_schema(file).names)
            wanted = [c for c in ("answer", "options", "dataset", "super_category") if c in have]
            for row in pq.read_table(file, columns=wanted).to_pylist():
                dataset = row.get("dataset") or "data"
                for name in [row["answer"], *(row.get("options") or [])]:
                    names.setdefault(dataset, {}).setdefault(name, row.get("super_category"))
    return Registry(ClassInfo(i, name, dataset, sc or dataset)
                    for dataset, found in names.items()
                    for i, (name, sc) in enumerate(sorted(found.items())))


# -- inputs: the paper's lists -------------------------------------------------------------------


def load_fine_r1(folder: str | Path, roots: dict[str, Path], seed: int = 0, shuffle: bool = True,
                 limit: int | None = None) -> tuple[list[Item], list[Item], list[dict]]:
    """(open items, closed items, skipped) from the paper's eval/*.jsonl for the datasets in
    `roots` (short name -> folder holding the paper's image_path layout). Options shuffled per
    item with `seed` (the files put the gold first). Missing images are skipped with a reason.
    Images stay on disk (hashed once here, read again only when sent): memory stays small."""
    folder = Path(folder)
    unknown = set(roots) - set(m.COARSE)
    if unknown:
        raise ValueError(f"--fine-r1-root: unknown dataset(s) {sorted(unknown)}; use {sorted(m.COARSE)}")
    opens, closeds, skipped = [], [], []
    for short, root in sorted(roots.items()):
        for side in m.SPLITS:
            file = folder / f"{short}_{side}.jsonl"
            if not file.exists():
                raise FileNotFoundError(f"{file} missing: --fine-r1 takes the release's eval folder")
            taken = 0
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines()):
                if not line.strip() or (limit is not None and taken >= limit):
                    continue
                row = json.loads(line)
                path = Path(root) / row["image_path"]
                try:
                    sha = file_sha256(path)
                except OSError as err:
                    skipped.append({"file": file.name, "line": number + 1, "image_path": str(path),
                                    "reason": "image_missing", "detail": type(err).__name__})
                    continue
                taken += 1
                options, gold = list(row["options"]), row["ground_truth"]
                item_id = f"{short}/{row['image_path']}"
                index = options.index(gold)
                if shuffle:
                    options, index = shuffled_options(options, gold, seed, item_id)
                common = dict(id=item_id, dataset=short, label=gold, class_split=side,
                              question=row["question"], image=path, super_category=short,
                              paper_path=row["image_path"], image_sha256=sha)
                opens.append(Item(**common))
                closeds.append(Item(**common, options=options, answer_index=index))
    if skipped:
        log.warning("%d Fine-R1 items skipped: image missing under the given roots (first: %s)",
                    len(skipped), skipped[0]["image_path"])
    return opens, closeds, skipped


# -- prompts and keys ------------------------------------------------------------------------------


def prompt(item: Item, mode: str, paper_compat: bool = False) -> str:
    """The prompt for `item`: by default the one TAPO trains with, else the paper's own.

    Default: open-world asks exactly as the `rl` config does (the question, a blank line, the
    format instruction: curation.export.stage.rl_prompt_text); closed-world is the release's
    closed template (it must list the options) followed by the same blank line and
    instruction. `paper_compat`: the release's evaluation templates alone, as its published
    numbers were measured.

    >>> it = Item("1", "bird", "A", "seen", "Which bird is this?", b"x", options=["A", "B"])
    >>> prompt(it, "closed", paper_compat=True)[:80]
    "Given the question: Which bird is this?, based on the options provided in ['A', "
    >>> prompt(it, "open").startswith("Which bird is this?" + RL_PROMPT_SEPARATOR + "You first think")
    True
    """
    question = item.question.replace(FORMAT_INSTRUCTION, "").strip()
    if paper_compat and mode == "closed":
        return CLOSED_TEMPLATE.format(question=question, options=list(item.options or []))
    if paper_compat:
        return OPEN_TEMPLATE.format(question=question)
    if mode == "closed":
        return closed_prompt_text(question, item.options or [])
    return rl_prompt_text(question)


def template_sha(paper_compat: bool) -> str:
    text = OPEN_TEMPLATE + CLOSED_TEMPLATE + ("" if paper_compat else rl_prompt_text("{question}"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request_key(model_id: str, image_ref: str, text: str, sampling: dict[str, Any]) -> str:
    """sha256 of everything that shapes the answer: model, image (sha + resize), text, sampling."""
    canonical = json.dumps({"model": model_id, "image": image_ref, "text": text,
                            "sampling": sampling, "sample_index": 0}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- the run ---------------------------------------------------------------------------------------


def answer(items: Sequence[Item], mode: str, backend, ledger: Ledger, settings: Settings,
           progress: EvalProgress) -> dict[str, Entry]:
    """{item id: ledger entry} for every answered item; asks the backend only what is new."""
    requests: dict[str, Request] = {}  # key -> request: a repeated image + question asks once
    by_key: dict[str, list[str]] = {}
    for item in items:
        text = prompt(item, mode, settings.paper_compat)
        key = request_key(backend.model_id, f"sha256:{item.image_sha256};{backend.image_spec}",
                          text, backend.sampling)
        requests.setdefault(key, Request(key, item.image, text))
        by_key.setdefault(key, []).append(item.id)
    known = ledger.get_many(by_key)
    todo = [r for r in requests.values() if r.key not in known
            or (settings.retry_failed and known[r.key].status == "failed")]
    progress.advance(len(items) - sum(len(by_key[r.key]) for r in todo))  # answered already

    def over_budget() -> bool:
        spent, tokens = ledger.totals()
        return ((settings.budget_usd is not None and spent >= settings.budget_usd)
                or (settings.budget_tokens is not None and tokens >= settings.budget_tokens))

    def record(request: Request, c: Completion) -> None:
        cost = cost_usd(settings.prices, backend.model_id, c.prompt_tokens, c.completion_tokens)
        ledger.record(c.entry(request.key, backend.model_id, cost,
                              {"item_id": by_key[request.key][0], "purpose": f"eval-{mode}"}))
        progress.advance(len(by_key[request.key]))

    if todo:
        backend.run(todo, on_result=record, gate=over_budget)
    found = ledger.get_many(by_key)
    return {item_id: e for k, e in found.items() for item_id in by_key[k]}


def score(items: Sequence[Item], entries: dict[str, Entry], mode: str, registry: Registry,
          embed: m.Embed | None, paper_compat: bool = False) -> list[dict[str, Any]]:
    """One row per item: the raw response, the parsed answer and every metric's value."""
    from train.rewards import FORMAT_PATTERN

    rows = []
    for item in items:
        entry = entries.get(item.id)
        response = entry.text if entry is not None else None
        row: dict[str, Any] = {
            "id": item.id, "dataset": item.dataset, "label": item.label,
            "class_split": item.class_split, "question": item.question,
            "request_key": entry.key if entry else None,
            "status_request": entry.status if entry else "not_sent",
            "response": response,
            "format": float(bool(response and FORMAT_PATTERN.search(response))),
        }
        if mode == "closed":
            ans, status, picked = m.judge_closed(response, item.options, item.answer_index,
                                                 registry, item.dataset, require_tag=paper_compat)
            predicted = item.options[picked] if picked >= 0 else ""
            row.update(options=list(item.options), gold_index=item.answer_index, picked=picked)
        else:
            ans, status, predicted = m.judge_open(response, item.label, registry, item.dataset)
            gold = registry.resolve(item.label, item.dataset)
            for level, hit in m.level_hits(ans, gold, registry).items():
                row[f"level_{level}"] = float(hit)
        row.update(answer=ans, status=status, predicted=predicted,
                   correct=float(status == "correct"))
        short = FINE_R1_DATASETS.get(item.dataset)
        if paper_compat:  # the release's substring rule, next to THE matcher's accuracy
            row["paper_accuracy"] = float(m.paper_rule_correct(response, item.label, mode, short))
        if mode == "open" and embed is not None:
            coarse = m.coarse_word(short, item.super_category, paper_compat, item.paper_path)
            row.update(coarse=coarse,
                       relative_similarity=m.relative_similarity(ans, item.label, coarse, embed))
        rows.append(row)
    return rows


def cached_embed(embed: m.Embed) -> m.Embed:
    """The embedder with a per-text cache (golds and coarse words repeat across items)."""
    import numpy as np

    memo: dict[str, Any] = {}

    def run(texts: Sequence[str]):
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        if new:
            memo.update(zip(new, embed(new), strict=True))
        return np.stack([memo[t] for t in texts])

    return run


def summarise(rows: Sequence[dict[str, Any]], mode: str) -> dict[str, Any]:
    """metrics.json's block of one mode: the table, per-class accuracy, confusions, positions."""
    # not sent (budget) or failed (unreadable image, endpoint errors): reported, not scored,
    # and asked again by a rerun
    answered = [r for r in rows if r["status_request"] not in ("not_sent", "failed")]
    metrics = ["accuracy", "format"]
    metrics += ["paper_accuracy"] if any("paper_accuracy" in r for r in answered) else []
    for r in answered:
        r["accuracy"] = r["correct"]
    if mode == "open":
        metrics += ["relative_similarity"] if any("relative_similarity" in r for r in answered) else []
        metrics += sorted({k for r in answered for k in r if k.startswith("level_")})
    block = {**m.table(answered, metrics), "metrics": metrics, "n": len(rows),
             "not_answered": len(rows) - len(answered),
             "per_class": m.per_class(answered), "confusions": m.confusions(answered)}
    if mode == "closed":
        block["position"] = m.position_stats(answered)
        block["position_by_dataset"] = {
            d: m.position_stats([r for r in answered if r["dataset"] == d])
            for d in sorted({r["dataset"] for r in answered})}
        for dataset, sides in block["cells"].items():  # debiased accuracy per cell, then averaged
            for side, cell in sides.items():
                cell["debiased_accuracy"] = m.position_stats(
                    [r for r in answered if r["dataset"] == dataset and r["class_split"] == side]
                ).get("debiased_accuracy")
        block["averages"]["debiased_accuracy"] = _averages(block["cells"], "debiased_accuracy")
        block["metrics"].append("debiased_accuracy")
    return block


def _averages(cells: dict[str, Any], metric: str) -> dict[str, float | None]:
    seen = m.mean_of(c["seen"][metric] for c in cells.values() if "seen" in c)
    unseen = m.mean_of(c["unseen"][metric] for c in cells.values() if "unseen" in c)
    return {"S-Avg": seen, "U-Avg": unseen, "Avg": m.mean_of([seen, unseen])}


def chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def evaluate(items: dict[str, Iterable[Item]], registry: Registry, backend, out: str | Path,
             settings: Settings, ledger_path: str | Path | None = None,
             progress: EvalProgress | None = None, source: str = "",
             skipped: Sequence[dict] = (), totals: dict[str, int] | None = None,
             chunk_size: int = 1024) -> dict[str, Any]:
    """Answer, score and report every mode in `items` ({"open": items, "closed": items}).

    Items stream through in chunks of `chunk_size` (lists or generators such as
    iter_exported): only a chunk's images are in memory. `totals` sizes the progress bars."""
    from train.eval.report import write_reports

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = progress or EvalProgress()
    embed = None
    if "open" in items:
        from train.eval.models import load_text_embedder

        embed = cached_embed(load_text_embedder(settings.embedder))
    results: dict[str, Any] = {}
    with Ledger(ledger_path or out / "ledger.sqlite") as ledger:
        before = ledger.stats()["requests"]
        for mode, mode_items in items.items():
            total = len(mode_items) if isinstance(mode_items, Sequence) else (totals or {}).get(mode)
            progress.start(mode, total)
            rows: list[dict[str, Any]] = []
            for chunk in chunks(mode_items, chunk_size):
                entries = answer(chunk, mode, backend, ledger, settings, progress)
                rows += score(chunk, entries, mode, registry, embed, settings.paper_compat)
            write_parquet_atomic(out / f"responses_{mode}.parquet", pa.Table.from_pylist(rows))
            results[mode] = summarise(rows, mode)
        spent, tokens = ledger.totals()
        new_requests = ledger.stats()["requests"] - before
    progress.close()
    metrics = {
        "model": backend.model_id, "backend": type(backend).__name__, "source": source,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {**asdict(settings), "prices": None, "template_sha": template_sha(settings.paper_compat),
                     "sampling": backend.sampling},
        "ledger": {"new_keys": new_requests, "cost_usd": spent, "tokens": tokens},
        "skipped": list(skipped)[:100], "skipped_count": len(skipped),
        "results": results,
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_reports(out, metrics)
    return metrics
