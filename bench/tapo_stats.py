"""Means with 95% confidence intervals over seeds, paired differences, and the results table.

A seed is one run of the whole chain (SFT, then RL from that SFT) on the same data; the
test set is fixed, so the intervals say how much training randomness moves a number, not
how much another test set would. Intervals are Student-t over seeds; a difference between
two models is paired by seed (same SFT checkpoint, same data order) and called significant
when its interval excludes 0.

    >>> summary([0.5, 0.7, 0.6])
    {'mean': 0.6, 'low': 0.3516, 'high': 0.8484, 'n': 3}
    >>> paired([0.5, 0.7, 0.6, 0.6], [0.4, 0.5, 0.5, 0.5])["significant"]
    True
    >>> paired([0.5, 0.7, 0.6], [0.4, 0.5, 0.5])["significant"]  # +0.13, but [-0.01, 0.28]
    False
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

# What the table shows: finecot eval's accuracy (THE matcher), per world and class side.
METRICS = {
    "open_seen": "open seen",
    "open_unseen": "open unseen",
    "closed_seen": "closed seen",
    "closed_unseen": "closed unseen",
    "format": "format",
}


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and 95% t-interval of `values` (no interval for fewer than 2)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": round(mean, 4), "low": None, "high": None, "n": n}
    half = float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4), "n": n}


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | bool | None]:
    """a - b paired by position (seed): mean, 95% interval, and whether it excludes 0.

    >>> paired([0.5, 0.6], [0.5, 0.6])["significant"]
    False
    """
    if len(a) != len(b):
        raise ValueError(f"paired differences need as many values on each side ({len(a)} != {len(b)})")
    result = summary([x - y for x, y in zip(a, b, strict=True)])
    low, high = result["low"], result["high"]
    significant = low is not None and (low > 0 or high < 0)
    return {**result, "significant": significant}


def cell(s: dict) -> str:
    """'0.612 [0.55, 0.67]' (or the mean alone for one seed).

    >>> cell({"mean": 0.6123, "low": 0.55, "high": 0.674, "n": 5})
    '0.612 [0.550, 0.674]'
    """
    if s["mean"] is None:
        return "-"
    if s["low"] is None:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}]"


def table(per_seed: dict[str, dict[int, dict[str, float]]], order: Sequence[str]) -> str:
    """Markdown table: one row per model, mean [95% CI] of every metric over its seeds."""
    lines = ["| model | seeds | " + " | ".join(METRICS.values()) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for model in order:
        runs = per_seed.get(model, {})
        cells = [cell(summary([r[k] for r in runs.values() if r.get(k) is not None])) for k in METRICS]
        lines.append(f"| {model} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences(per_seed: dict[str, dict[int, dict[str, float]]],
                pairs: Sequence[tuple[str, str]]) -> tuple[str, list[dict]]:
    """Markdown table of paired differences (a - b) on the seeds both models have, and the rows."""
    keys = [k for k in METRICS if k != "format"]
    lines = ["| difference | seeds | " + " | ".join(METRICS[k] for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    rows = []
    for a, b in pairs:
        seeds = sorted(set(per_seed.get(a, {})) & set(per_seed.get(b, {})))
        if not seeds:
            continue
        cells = []
        for key in keys:
            d = paired([per_seed[a][s][key] for s in seeds], [per_seed[b][s][key] for s in seeds])
            rows.append({"a": a, "b": b, "metric": key, **d})
            cells.append(cell(d) + (" *" if d["significant"] else ""))
        lines.append(f"| {a} - {b} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines), rows
