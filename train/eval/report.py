"""Evaluation reports: report.md + plot.png of one run, and `finecot eval compare` tables.

    write_reports("runs/birds/eval/tapo", metrics)       # what `finecot eval run` does
    print(compare(["runs/birds/eval/qwen", "runs/birds/eval/tapo"], paper=True))

Tables follow the paper's layout: one row per model, the datasets' seen columns and S-Avg,
the unseen columns and U-Avg, then Avg (arithmetic means, as the paper). The paper's own
rows ship in curation/data/paper_results.json with their attribution; `--paper` adds them
next to a run's rows (closed-world accuracy, open-world relative similarity).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from curation.core.tables import atomic_path, write_text_atomic
from curation.ingest.split import FINE_R1_DATASETS

PAPER_FILE = Path(__file__).resolve().parents[2] / "curation" / "data" / "paper_results.json"
PAPER_ORDER = ["aircraft", "bird", "car", "dog", "flower", "pet"]
HEADLINE = {"closed": ["accuracy", "debiased_accuracy", "paper_accuracy"],
            "open": ["relative_similarity", "accuracy"]}
# run metrics the paper's published rows go next to (paper_accuracy: --paper-compat runs)
PAPER_METRIC = {"closed": ("accuracy", "paper_accuracy"), "open": ("relative_similarity",)}


@lru_cache(maxsize=1)
def paper_results() -> dict[str, Any]:
    """The paper's published rows (percent), with the attribution that must travel with them."""
    return json.loads(PAPER_FILE.read_text(encoding="utf-8"))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def short_name(dataset: str) -> str:
    """The paper's column name for our dataset names (cub200 -> bird); others unchanged."""
    return FINE_R1_DATASETS.get(dataset, dataset)


# -- one run ---------------------------------------------------------------------------------


def run_row(block: dict[str, Any], metric: str) -> dict[str, Any]:
    """{"seen": {short dataset: value}, "unseen": {...}, "S-Avg", "U-Avg", "Avg"} (0..1)."""
    row: dict[str, Any] = {"seen": {}, "unseen": {}}
    for dataset, sides in block["cells"].items():
        for side in ("seen", "unseen"):
            value = sides.get(side, {}).get(metric)
            if value is not None:
                row[side][short_name(dataset)] = value
    row.update(block["averages"].get(metric, {}))
    return row


def markdown_table(rows: dict[str, dict[str, Any]], columns: Sequence[str], scale: float = 1.0) -> str:
    """Rows (model -> run_row) as the paper's table; `scale` 0.01 for rows already in percent."""
    head = ["Model", *[f"{c} (S)" for c in columns], "S-Avg", *[f"{c} (U)" for c in columns],
            "U-Avg", "Avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        def cell(value: float | None) -> str:
            return _pct(None if value is None else value * scale)
        values = [*[cell(row["seen"].get(c)) for c in columns], cell(row.get("S-Avg")),
                  *[cell(row["unseen"].get(c)) for c in columns], cell(row.get("U-Avg")),
                  cell(row.get("Avg"))]
        lines.append("| " + " | ".join([name, *values]) + " |")
    return "\n".join(lines)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    found = {c for r in rows for side in ("seen", "unseen") for c in r[side]}
    return [c for c in PAPER_ORDER if c in found] + sorted(found - set(PAPER_ORDER))


def report_markdown(metrics: dict[str, Any]) -> str:
    settings = metrics["settings"]
    lines = [f"# Evaluation of `{metrics['model']}`", "",
             f"- source: {metrics['source']}", f"- backend: {metrics['backend']}",
             f"- sampling: `{json.dumps(settings['sampling'])}`; paper-compat: {settings['paper_compat']};"
             f" text embedder: {settings['embedder']}",
             f"- new requests this run: {metrics['ledger']['new_keys']}; ledger cost so far: "
             f"${metrics['ledger']['cost_usd']:.4f}",
             f"- skipped inputs: {metrics['skipped_count']}", ""]
    if settings["embedder"] == "hashed":
        lines += ["Relative similarity uses the model-free hashed character n-gram embedder "
                  "(spelling overlap, not meaning): pass `--embedder PATH` of a local SigLIP for "
                  "the paper's figure.", ""]
    for mode, block in metrics["results"].items():
        lines += [f"## {mode}-world ({block['n']} items, {block['not_answered']} not answered)", ""]
        for metric in block["metrics"]:
            row = run_row(block, metric)
            lines += [f"### {metric}", "", markdown_table({metrics["model"]: row}, _columns([row])), ""]
        if mode == "closed" and block.get("position", {}).get("n"):
            pos = block["position"]
            lines += ["### option positions", "",
                      "| position | gold share | answer share | accuracy when gold here |", "|---|---|---|---|"]
            for p in sorted(pos["picked"], key=lambda k: (not k.isdigit(), k)):
                lines.append(f"| {p} | {_pct(pos['gold'].get(p))} | {_pct(pos['picked'][p])} | "
                             f"{_pct(pos['accuracy_by_gold_position'].get(p))} |")
            lines += ["", f"Over all items pooled: position-debiased accuracy "
                      f"{_pct(pos['debiased_accuracy'])}, plain {_pct(pos['accuracy'])} (the "
                      "tables above average per dataset and split, as the paper).", ""]
        worst = block["per_class"][:10]
        if worst:
            lines += ["### weakest classes", "", "| dataset | class | split | n | accuracy |", "|---|---|---|---|---|"]
            lines += [f"| {r['dataset']} | {r['label']} | {r['class_split']} | {r['n']} | {_pct(r['accuracy'])} |"
                      for r in worst]
            lines.append("")
        if block["confusions"]:
            lines += ["### most confused pairs", "", "| dataset | gold | answered | count |", "|---|---|---|---|"]
            lines += [f"| {r['dataset']} | {r['gold']} | {r['predicted']} | {r['count']} |"
                      for r in block["confusions"][:10]]
            lines.append("")
    return "\n".join(lines)


def write_plot(path: Path, metrics: dict[str, Any]) -> None:
    """Grouped bars: each mode's headline metric per dataset, seen vs unseen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(metrics["results"])
    fig, axes = plt.subplots(1, max(1, len(modes)), figsize=(6 * max(1, len(modes)), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=False):
        metric = HEADLINE[mode][0]
        block = metrics["results"][mode]
        if metric not in block["metrics"]:
            metric = "accuracy"
        row = run_row(block, metric)
        columns = _columns([row])
        xs = range(len(columns))
        for offset, side in ((-0.2, "seen"), (0.2, "unseen")):
            ax.bar([x + offset for x in xs], [100 * row[side].get(c, 0.0) for c in columns], width=0.4,
                   label=side)
        ax.set_xticks(list(xs), columns, rotation=30, ha="right")
        ax.set_ylim(0, 115)  # headroom for the legend above 100%
        ax.set_title(f"{mode}-world {metric} (%)")
        ax.legend(ncol=2, loc="upper center")
    fig.suptitle(metrics["model"][:80])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_reports(out: Path, metrics: dict[str, Any]) -> None:
    write_text_atomic(out / "report.md", report_markdown(metrics))
    write_plot(out / "plot.png", metrics)


# -- compare ---------------------------------------------------------------------------------


def load_metrics(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    file = file / "metrics.json" if file.is_dir() else file
    if not file.exists():
        raise FileNotFoundError(f"{file} missing: run `finecot eval run --out {path}` first")
    return json.loads(file.read_text(encoding="utf-8"))


def compare(runs: Sequence[str | Path], paper: bool = False,
            paper_models: Sequence[str] | None = None) -> str:
    """Markdown: per mode and headline metric, the runs side by side (+ the paper's rows)."""
    loaded = [(Path(r).name if Path(r).is_dir() else Path(r).parent.name, load_metrics(r)) for r in runs]
    sections = []
    for mode in ("closed", "open"):
        for metric in HEADLINE[mode]:
            rows: dict[str, dict[str, Any]] = {}
            for name, metrics in loaded:
                block = metrics["results"].get(mode)
                if block is not None and metric in block["metrics"]:
                    rows[f"{name} ({metrics['model'][:40]})"] = run_row(block, metric)
            if not rows:
                continue
            table_rows = dict(rows)
            published = paper_results()["tables"].get(mode) if paper else None
            columns = _columns(list(rows.values()))
            if published and metric in PAPER_METRIC[mode]:
                columns = [*PAPER_ORDER, *[c for c in columns if c not in PAPER_ORDER]]
                for model, prow in published["rows"].items():
                    if paper_models and model not in paper_models:
                        continue
                    table_rows[f"paper: {model}"] = {k: _scaled(v) for k, v in prow.items()}
            sections += [f"## {mode}-world {metric} (%)", "", markdown_table(table_rows, columns), ""]
            if published and metric in PAPER_METRIC[mode]:
                sections += [f"Paper protocol: {published['protocol']}.", ""]
    if not sections:
        return "no results to compare"
    if paper:
        sections += [f"Paper rows: {paper_results()['attribution']}", ""]
    return "\n".join(sections)


def _scaled(value: Any) -> Any:
    """Paper figures are percent; run rows are fractions: bring the paper's to fractions."""
    if isinstance(value, dict):
        return {k: v / 100 for k, v in value.items()}
    return value / 100
