"""The run report: funnel, yield, accuracy and cost figures, from the stage tables.

    finecot report --run runs/birds     # -> runs/birds/report/index.html + *.png

`run_stats(recipe, run)` reads the tables (drafts, accepted, rejected, reviewed, split.json,
items, quarantine) into one plain dict of numbers; the dataset card (curation/export/card.py) and
the report both render that dict, so they cannot disagree. `write_report` draws the plots
with matplotlib (Agg, no display) and writes one self-contained HTML page: every PNG is
embedded as base64, so the page can be mailed or opened from anywhere.

Plots: the funnel, rejection reasons, accepted per class vs target, rationale length,
teacher accuracy (blind drafts) per class and per super-category, cost over time.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display here, and none needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from curation.core import lineage  # noqa: E402
from curation.core.config import Recipe  # noqa: E402
from curation.core.labels import Registry, match  # noqa: E402
from curation.core.rundir import RunDir  # noqa: E402
from curation.core.tables import read_json, write_text_atomic  # noqa: E402
from curation.export.filter_docs import definition, settings_text  # noqa: E402

log = logging.getLogger(__name__)


def _read(run: RunDir, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    path = run.path(name)
    if not path.exists():
        return None
    if columns:
        have = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in have]
    return pd.read_parquet(path, columns=columns)


def _words(text: Any) -> int:
    return len(str(text).split()) if isinstance(text, str) else 0


def _think_words(path: Path) -> list[int]:
    """Words in each accepted rationale's <think>, read batch by batch."""
    if not path.exists() or "think" not in pq.read_schema(path).names:
        return []
    out: list[int] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["think"]):
        out.extend(_words(t) for t in batch.column(0).to_pylist())
    return out


# (unit, seconds per unit, longest span shown in it): a demo takes seconds, a run days
_TIME_UNITS = (("seconds", 1.0, 120.0), ("minutes", 60.0, 7200.0), ("hours", 3600.0, float("inf")))


def _cost_curve(run: RunDir, drafts: pd.DataFrame) -> dict[str, list[float]]:
    """Cumulative cost over wall-clock time from the ledger when it has timestamps, else over
    requests in draft order (x = request number)."""
    ledger = run.ledger
    if ledger.exists():
        try:
            with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
                cols = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
                stamp = next(
                    (c for c in ("finished_at", "updated_at", "created_at") if c in cols), None
                )
                if stamp and "cost_usd" in cols:
                    rows = conn.execute(
                        f"SELECT {stamp}, cost_usd FROM requests WHERE cost_usd IS NOT NULL "
                        f"ORDER BY {stamp}"
                    ).fetchall()
                    if rows:
                        t0 = float(rows[0][0])
                        span = float(rows[-1][0]) - t0
                        unit, scale = next((u, s) for u, s, longest in _TIME_UNITS if span <= longest)
                        total, xs, ys = 0.0, [], []
                        for t, c in rows:
                            total += float(c)
                            xs.append((float(t) - t0) / scale)
                            ys.append(total)
                        return {"x": xs, "y": ys, "x_label": f"{unit} since first request"}
        except (sqlite3.Error, ValueError, TypeError) as err:
            log.info("report: ledger timestamps not usable (%s); cost over requests", err)
    costs = (
        drafts["cost_usd"].fillna(0).astype(float)
        if "cost_usd" in drafts
        else pd.Series([], dtype=float)
    )
    return {"x": list(range(1, len(costs) + 1)), "y": costs.cumsum().tolist(), "x_label": "request"}


def run_stats(recipe: Recipe, run: RunDir) -> dict[str, Any]:
    """Every number the card and the report show, from the run's tables."""
    stats: dict[str, Any] = {"run": str(run.root)}
    split = read_json(run.split) if run.split.exists() else {}
    stats["split"] = split
    items = _read(run, "items.parquet", ["dataset", "label", "super_category"])
    quarantine = _read(run, "quarantine.parquet", ["dataset", "reason"])
    # The sources as ingest read them (absolute root, licence); runs ingested before
    # sources.json existed fall back to the recipe's.
    sources = read_json(run.path("sources.json")) if run.path("sources.json").exists() else [
        {"dataset": s.dataset or s.kind, "kind": s.kind, "root": s.root} for s in recipe.sources
    ]
    stats["sources"] = [
        {
            **source,
            "n_items": int((items["dataset"] == source["dataset"]).sum())
            if items is not None
            else 0,
            "classes": int(items.loc[items["dataset"] == source["dataset"], "label"].nunique())
            if items is not None
            else 0,
        }
        for source in sources
    ]
    stats["items"] = 0 if items is None else len(items)
    stats["quarantine"] = {} if quarantine is None else dict(Counter(quarantine["reason"]))

    # Only the small columns are read: the texts are streamed (rationale lengths below), so
    # memory does not grow with the rationales' size.
    meta = [
        "item_id",
        "dataset",
        "label",
        "super_category",
        "strategy",
        "answer",
        "status",
        "teacher_model",
        "prompt_template",
        "prompt_sha",
        "sampling",
        "cost_usd",
        "prompt_tokens",
        "completion_tokens",
        "reasons",
        "review_status",
    ]
    drafts = _read(run, "drafts.parquet", meta)
    drafts = pd.DataFrame() if drafts is None else drafts
    accepted = _read(run, "accepted.parquet", meta)
    accepted = pd.DataFrame() if accepted is None else accepted
    rejected = _read(run, "rejected.parquet", meta)
    rejected = pd.DataFrame() if rejected is None else rejected
    reviewed = _read(run, "reviewed.parquet", meta)

    def counts(frame: pd.DataFrame, column: str) -> dict[str, int]:
        return (
            {str(k): int(v) for k, v in Counter(frame[column]).most_common()}
            if column in frame
            else {}
        )

    stats["drafts"] = len(drafts)
    stats["status"] = counts(drafts, "status")
    stats["strategy"] = counts(drafts, "strategy")
    stats["teacher_models"] = counts(drafts, "teacher_model")
    stats["templates"] = (
        drafts[["prompt_template", "prompt_sha"]].drop_duplicates().to_dict("records")
        if {"prompt_template", "prompt_sha"} <= set(drafts.columns)
        else []
    )
    stats["sampling"] = sorted(set(drafts["sampling"])) if "sampling" in drafts else []
    stats["cost_usd"] = float(drafts["cost_usd"].fillna(0).sum()) if "cost_usd" in drafts else 0.0
    for col in ("prompt_tokens", "completion_tokens"):
        stats[col] = int(drafts[col].fillna(0).sum()) if col in drafts else 0

    reasons: Counter = Counter()
    if "reasons" in rejected:
        for row in rejected["reasons"]:
            reasons.update(list(row) if row is not None else [])
    stats["rejection_reasons"] = dict(reasons.most_common())
    stats["accepted"] = len(accepted)
    stats["rejected"] = len(rejected)
    # A reply cut at max_tokens is not an answer (the format filter rejects it): counted apart.
    stats["answered_full"] = int(stats["status"].get("ok", 0))
    stats["truncated"] = int(stats["status"].get("length", 0))
    # The filter's own funnel (funnel.json): drafts left after each filter, in the order they
    # run, with the settings they ran with.
    filtered = read_json(run.path("funnel.json")) if run.path("funnel.json").exists() else {}
    stats["cascade"] = [(c["filter"], int(c["remaining"])) for c in filtered.get("cascade", [])
                        if c["filter"] != "drafts"]
    stats["failed_by_filter"] = filtered.get("failed_by_filter", {})
    stats["filter_settings"] = filtered.get("settings", {})
    funnel = [("drafts", len(drafts)), ("teacher answered in full", stats["answered_full"]),
              ("cut at max_tokens", stats["truncated"])]
    funnel += [(f"after {name}", n) for name, n in stats["cascade"]]
    funnel += [("accepted", len(accepted))]
    stats["review"] = {}
    if reviewed is not None:
        status = reviewed.get("review_status", pd.Series(["kept"] * len(reviewed)))
        kept = int((~status.astype(str).str.lower().isin(["rejected", "reject"])).sum())
        funnel.append(("kept after review", kept))
        stats["review"] = review_coverage(run, reviewed)
    stats["funnel"] = funnel
    summary = read_json(run.path("export.json")) if run.path("export.json").exists() else {}
    stats["exported"] = {name: c["rows"] for name, c in summary.get("configs", {}).items()}

    # per-class coverage of the seen classes against the target
    target = recipe.draft.target_per_class or recipe.split.k
    stats["target_per_class"] = target
    seen = [(d, c) for d, lists in split.get("datasets", {}).items() for c in lists.get("seen", [])]
    have = (
        Counter(zip(accepted["dataset"], accepted["label"], strict=True))
        if len(accepted)
        else Counter()
    )
    coverage = [{"dataset": d, "label": c, "accepted": int(have.get((d, c), 0))} for d, c in seen]
    stats["coverage"] = coverage
    stats["short_classes"] = [r for r in coverage if r["accepted"] < target]

    lengths = _think_words(run.path("accepted.parquet"))
    stats["rationale_words"] = lengths
    stats["rationale_words_median"] = float(pd.Series(lengths).median()) if lengths else 0.0

    # teacher accuracy on blind drafts (the teacher did not see the label)
    judged = pd.concat([accepted, rejected], ignore_index=True)
    accuracy_class, accuracy_super = [], []
    if len(judged) and "strategy" in judged and run.registry.exists():
        blind = judged[judged["strategy"] == "blind"]
        registry = Registry.load(run.registry)
        correct = [
            match(a, label, registry, dataset).correct
            for a, label, dataset in zip(
                blind["answer"], blind["label"], blind["dataset"], strict=True
            )
        ]
        blind = blind.assign(correct=correct)
        for (d, c), g in blind.groupby(["dataset", "label"]):
            accuracy_class.append(
                {"dataset": d, "label": c, "n": len(g), "accuracy": float(g["correct"].mean())}
            )
        for s, g in blind.groupby("super_category"):
            accuracy_super.append(
                {"super_category": s, "n": len(g), "accuracy": float(g["correct"].mean())}
            )
        stats["blind_accuracy"] = float(blind["correct"].mean()) if len(blind) else None
    stats["accuracy_class"] = accuracy_class
    stats["accuracy_super"] = accuracy_super
    stats["cost_curve"] = _cost_curve(run, drafts)
    return stats


def review_coverage(run: RunDir, reviewed: pd.DataFrame) -> dict[str, Any]:
    """The review's numbers, exactly: rows sent through review apply, reviewed / unreviewed,
    accepted / fixed, excluded (rejected + flagged), label corrections (review_stats.json;
    counted from reviewed.parquet when an older run has no such file)."""
    path = run.path("review_stats.json")
    if path.exists():
        stats = read_json(path)
    else:
        status = Counter(reviewed.get("review_status", pd.Series(dtype=str)).astype(str))
        stats = {k: int(status.get(k, 0)) for k in ("unreviewed", "accepted", "fixed")}
        stats.update(rejected=0, flagged=0, label_corrections=0,
                     reviewed=stats["accepted"] + stats["fixed"], rows=len(reviewed))
    keys = ("rows", "reviewed", "unreviewed", "accepted", "fixed", "rejected", "flagged",
            "label_corrections")
    out = {k: int(stats.get(k) or 0) for k in keys}
    out["excluded"] = out["rejected"] + out["flagged"]
    out["rejected_by_reason"] = stats.get("rejected_by_reason") or {}
    out["flagged_by_reason"] = stats.get("flagged_by_reason") or {}
    out["verdict_agreement"] = (stats.get("teacher_vs_reviewer") or {}).get("verdict_agreement")
    return out


# -- plots ---------------------------------------------------------------------------------


def _barh(path: Path, labels: list[str], values: list[float], title: str, xlabel: str, target=None):
    height = max(2.5, 0.28 * len(labels) + 1.2)
    fig, ax = plt.subplots(figsize=(7, min(height, 30)))
    ax.barh(range(len(labels)), values, color="#4c72b0")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    if target is not None:
        ax.axvline(target, color="#c44e52", linestyle="--", label=f"target {target}")
        ax.legend(loc="lower right")
    if not labels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _funnel_plot(path: Path, funnel: list[tuple[str, int]]) -> None:
    """The cascade: rows left after each step (drafts, each filter in order, accepted, kept,
    exported), with the drafts cut at max_tokens in red and each step's loss written on it."""
    labels = [name for name, _ in funnel]
    values = [n for _, n in funnel]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(labels) + 1.2)))
    side = {"teacher answered in full": "#8c8c8c", "cut at max_tokens": "#c44e52"}  # not steps
    ax.barh(range(len(labels)), values, color=[side.get(name, "#4c72b0") for name in labels])
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    previous = None
    for i, (name, n) in enumerate(funnel):
        lost = "" if previous is None or name in side or n >= previous else f"  -{previous - n}"
        ax.text(n, i, f" {n}{lost}", va="center", fontsize=7)
        if name not in side:
            previous = n
    if not labels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Funnel: drafts, each filter in order, dataset rows")
    ax.set_xlabel("rows left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_plots(stats: dict[str, Any], folder: Path) -> dict[str, Path]:
    """All plots as PNG files in `folder`; returns {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        name: folder / f"{name}.png"
        for name in (
            "funnel",
            "reasons",
            "coverage",
            "lengths",
            "accuracy_class",
            "accuracy_super",
            "cost",
        )
    }
    _funnel_plot(out["funnel"], stats["funnel"])
    reasons = stats["rejection_reasons"]
    _barh(out["reasons"], list(reasons), list(reasons.values()), "Rejection reasons", "drafts")
    cov = stats["coverage"]
    _barh(
        out["coverage"],
        [r["label"] for r in cov],
        [r["accepted"] for r in cov],
        "Accepted rationales per class",
        "accepted",
        target=stats["target_per_class"],
    )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    lengths = stats["rationale_words"]
    ax.hist(lengths or [0], bins=min(30, max(5, len(set(lengths)))), color="#55a868")
    ax.set_title("Rationale length (accepted, words in <think>)")
    ax.set_xlabel("words")
    fig.tight_layout()
    fig.savefig(out["lengths"], dpi=90)
    plt.close(fig)
    acc = stats["accuracy_class"]
    _barh(
        out["accuracy_class"],
        [r["label"] for r in acc],
        [r["accuracy"] for r in acc],
        "Teacher accuracy per class (blind drafts)",
        "accuracy",
    )
    sup = stats["accuracy_super"]
    _barh(
        out["accuracy_super"],
        [r["super_category"] for r in sup],
        [r["accuracy"] for r in sup],
        "Teacher accuracy per super-category (blind drafts)",
        "accuracy",
    )
    curve = stats["cost_curve"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(curve["x"] or [0], curve["y"] or [0], color="#8172b2")
    ax.set_title("Cumulative teacher cost")
    ax.set_xlabel(curve["x_label"])
    ax.set_ylabel("USD")
    fig.tight_layout()
    fig.savefig(out["cost"], dpi=90)
    plt.close(fig)
    return out


# -- the page ------------------------------------------------------------------------------

CAPTIONS = {
    "funnel": "How many drafts survived each step: the drafts, then each filter in the order it "
              "runs, review and export (each bar's loss beside it); the grey and red bars split the "
              "teacher's replies into complete ones and those cut at max_tokens.",
    "reasons": "Why drafts were rejected (a draft can have several reasons).",
    "coverage": "Accepted rationales per seen class; the dashed line is the target.",
    "lengths": "Distribution of rationale length.",
    "accuracy_class": "How often the teacher named the right class without seeing the label.",
    "accuracy_super": "The same, per super-category.",
    "cost": "Cumulative teacher cost.",
}


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _cell(value: object) -> str:
    """`value` as HTML; the markdown code spans of the filter definitions (filter_docs.py,
    written for the dataset card) as <code>."""
    return _CODE_SPAN.sub(r"<code>\1</code>", html.escape(str(value)))


def _table(anchor: str, title: str | None, head: tuple[str, ...], rows: list[tuple]) -> str:
    cells = "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{_cell(v)}"
                                      f"</{'th' if i == 0 else 'td'}>" for i, v in enumerate(row))
                    + "</tr>" for row in rows)
    header = "" if not any(head) else "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    heading = f"<h2>{html.escape(title)}</h2>" if title else ""
    return f'<section id="{anchor}">{heading}<table>{header}{cells}</table></section>'


def _stale_banner(lines: list[str]) -> str:
    if not lines:
        return ""
    items = "".join(f"<li>stale: {html.escape(line)}</li>" for line in lines)
    return (f'<div id="stale" role="alert">Out of date: these products are older than what they '
            f"were built from.<ul>{items}</ul></div>")


def write_report(recipe: Recipe, run: RunDir) -> Path:
    """Write run/report/*.png and the self-contained run/report/index.html; return its path.

    Tables older than what they were built from (drafts changed since `filter`, a review
    applied since `export`, ...) are warned about, in the log and at the top of the page."""
    stale = lineage.stale_warnings(run, ("split", "filter", "review apply", "export"))
    for line in stale:
        log.warning("report: %s", line)
    stats = run_stats(recipe, run)
    folder = run.path("report")
    plots = draw_plots(stats, folder)
    summary = [
        ("drafts", stats["drafts"]),
        ("teacher answered in full", stats["answered_full"]),
        ("cut at max_tokens (rejected by the format filter)", stats["truncated"]),
        ("accepted", stats["accepted"]),
        ("rejected", stats["rejected"]),
        ("classes short of target", len(stats["short_classes"])),
        ("teacher cost (USD)", f"{stats['cost_usd']:.4f}"),
        ("prompt / completion tokens", f"{stats['prompt_tokens']} / {stats['completion_tokens']}"),
        ("median rationale words", stats["rationale_words_median"]),
    ]
    figures = []
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figures.append(
            f'<figure id="{name}"><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
        )
    filters = [(name, definition(name), settings_text(name, stats["filter_settings"]),
                stats["failed_by_filter"].get(name, 0), left) for name, left in stats["cascade"]]
    sections = [
        _table("summary", None, ("", ""), summary),
        _table("filters", "Filters, in the order they run",
               ("filter", "what it checks", "settings", "drafts it rejects", "drafts left"), filters),
        _table("exported", "Exported rows per config",
               ("config", "rows"), list(stats["exported"].items()) or [("(not exported yet)", 0)]),
    ]
    review = stats["review"]
    if review:
        coverage = [(k.replace("_", " "), review[k]) for k in
                    ("rows", "reviewed", "unreviewed", "accepted", "fixed", "excluded",
                     "rejected", "flagged", "label_corrections")]
        coverage.append(("filter and reviewer agree", review["verdict_agreement"]))
        reasons = [(f"rejected: {r}", n) for r, n in review["rejected_by_reason"].items()]
        reasons += [(f"flagged: {r}", n) for r, n in review["flagged_by_reason"].items()]
        sections.append(_table("review", "Human review (review apply)", ("", "rows"),
                               coverage + reasons))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>finecot report: {html.escape(recipe.name)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}
#stale{{background:#fdecea;border:2px solid #c44e52;padding:.6em 1em;font-weight:bold}}</style>
</head><body>
<h1>finecot report: {html.escape(recipe.name)}</h1>
{_stale_banner(stale)}
{"".join(sections)}
{"".join(figures)}
<script>
// marks the page once every plot has decoded, for headless checks
window.addEventListener("load", () => {{
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images-ok", ok);
}});
</script>
</body></html>
"""
    index = folder / "index.html"
    write_text_atomic(index, page)
    lineage.record(run, "report", recipe)
    return index
