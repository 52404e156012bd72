"""The dataset card: README.md of the exported folder, with a Hub YAML header.

`write_card(recipe, run, folder, summary, triplets)` renders dataset_cards/dataset_card.md.jinja
(StrictUndefined: a missing number is an error, never a blank) from `run_stats()` (the same
numbers the report shows) and the export summary, copies the key plots into `assets/`, and
checks that the header parses with `huggingface_hub.DatasetCard`.

The YAML header declares each config's data_files, the features (from the shards' own
schema), license, task categories, tags and size category, so the Hub viewer and
`load_dataset(folder, config)` read the same thing.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import jinja2
import pandas as pd
import pyarrow.parquet as pq
import yaml
from huggingface_hub import DatasetCard

from curation.core.config import Recipe
from curation.core.rundir import RunDir
from curation.core.tables import write_text_atomic
from curation.export.filter_docs import definition, settings_text
from curation.export.report import draw_plots, run_stats
from curation.filter.filters import REASONS
from curation.ingest.sources.common import source_licence

TEMPLATES = Path(__file__).resolve().parents[2] / "dataset_cards"

CONFIG_TEXT = {
    "sft": "a rationale: system/user(image, question)/assistant(`<think>`+`<answer>`) + provenance",
    "rl": "a TAPO triplet: conversational prompt, answer, anchor/positive/negative images",
    "eval_open": "a held-out test image, its question and answer",
    "eval_closed": "the same with 4 shuffled options (gold + 3 hard negatives) and the ready `prompt` listing them",
}


def size_category(rows: int) -> str:
    """The Hub's size bucket.

    >>> size_category(999), size_category(1000), size_category(2_000_000)
    ('n<1K', '1K<n<10K', '1M<n<10M')
    """
    for bound, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < bound:
            return name
    return "n>10M"


LICENSE_NAME = "finecot-mixed-sources"  # the Hub asks for license_name + license_link with `other`
LICENSE_FILE = "LICENSE.md"


def yaml_header(folder: Path, summary: dict[str, Any], license_id: str) -> dict[str, Any]:
    """configs + dataset_info (features read back from each config's first shard)."""
    configs, infos = [], []
    for name, info in summary["configs"].items():
        if not info["rows"]:
            continue  # nothing to load (see ShardWriter.close)
        split = info["split"]
        configs.append(
            {
                "config_name": name,
                "data_files": [{"split": split, "path": f"data/{name}/{split}-*"}],
            }
        )
        shard = sorted((folder / "data" / name).glob("*.parquet"))[0]
        features = datasets.Features.from_arrow_schema(pq.read_schema(shard))
        yaml_info = datasets.DatasetInfo(features=features)._to_yaml_dict()
        infos.append(
            {
                "config_name": name,
                "features": yaml_info["features"],
                "splits": [
                    {"name": split, "num_bytes": info["bytes"], "num_examples": info["rows"]}
                ],
            }
        )
    rows = max((c["rows"] for c in summary["configs"].values()), default=0)
    other = {"license_name": LICENSE_NAME, "license_link": LICENSE_FILE} if license_id == "other" else {}
    return {
        "license": license_id,
        **other,
        "task_categories": [
            "image-text-to-text",
            "visual-question-answering",
            "image-classification",
        ],
        "language": ["en"],
        "tags": ["fine-grained", "chain-of-thought", "reasoning", "finecot", "fine-r1", "tapo"],
        "pretty_name": None,
        "size_categories": [size_category(rows)],
        "configs": configs,
        "dataset_info": infos,
    }


def card_context(
    recipe: Recipe, run: RunDir, folder: Path, summary: dict[str, Any], triplets: pd.DataFrame
) -> dict[str, Any]:
    """Everything the template shows."""
    stats = run_stats(recipe, run)
    license_id = recipe.export.license or "other"  # mixed sources: the body lists each one
    for source in stats["sources"]:  # sources.json has it since ingest; older runs: now
        source.setdefault("license", source_licence(source["kind"], source["root"]))
    header = yaml_header(folder, summary, license_id)
    header["pretty_name"] = recipe.name
    closed = sorted((folder / "data" / "eval_closed").glob("*.parquet"))
    options_methods: Counter = Counter()
    for shard in closed:
        options_methods.update(
            pq.read_table(shard, columns=["options_method"])["options_method"].to_pylist()
        )
    split = stats["split"] or {}
    split_counts = {
        d: {"seen": len(v.get("seen", [])), "unseen": len(v.get("unseen", []))}
        for d, v in split.get("datasets", {}).items()
    }
    leak_reasons = {
        r: n
        for r, n in stats["rejection_reasons"].items()
        if "leak" in r or "unseen" in r or r == "side_information"
    }
    hygiene = split.get("hygiene") or {}
    hygiene_rows = {  # lists are shown by their length (the pairs are in split.json)
        k: (len(v) if isinstance(v, list) else v)
        for k, v in hygiene.items()
        if k != "warnings" and isinstance(v, list | int | float | str)
    }
    funnel = [*stats["funnel"], ("exported sft rows", summary["configs"]["sft"]["rows"])]
    settings = stats["filter_settings"]
    filters = [
        {"name": name, "what": definition(name), "settings": settings_text(name, settings),
         "rejected": stats["failed_by_filter"].get(name, 0), "left": left}
        for name, left in stats["cascade"]
    ]
    reasons = {code: text for code, (_, text) in REASONS.items()}
    return {
        **stats,
        "funnel": funnel,
        "name": recipe.name,
        "repo_hint": f"OWNER/{recipe.name}",
        "license": license_id,
        "yaml_header": yaml.safe_dump(header, sort_keys=False, allow_unicode=True),
        "configs": [
            {"name": n, **c, "what": CONFIG_TEXT[n]} for n, c in summary["configs"].items()
        ],
        # fine-r1 mode has no seen ratio (the paper's lists decide): "n/a", never "None"
        "split": {k: "n/a" if split.get(k) is None else split[k] for k in ("mode", "seed", "seen_ratio", "k")},
        "split_counts": split_counts,
        "fine_r1_split": split.get("mode") == "fine-r1",
        "hygiene": hygiene_rows,
        "hygiene_warnings": hygiene.get("warnings") or [],
        "leak_reasons": leak_reasons,
        "review": stats.get("review") or {},
        "filters": filters,
        "disabled_filters": settings.get("disabled") or [],
        "reason_text": reasons,
        "license_file": LICENSE_FILE if license_id == "other" else None,
        "hinted": int(stats["strategy"].get("hinted", 0)),
        "rl_image_size": recipe.export.rl_image_size,
        "rl_image_fit": recipe.export.rl_image_fit,
        "triplet_methods": dict(Counter(triplets["triplet_method"]).most_common())
        if len(triplets)
        else {},
        "triplet_model": recipe.export.triplet_model,
        "fine_r1_prompts": recipe.export.system_prompt is None,
        "eval_in_train": summary.get("eval_in_train", 0),
        "options_seed": recipe.export.seed,
        "options_methods": dict(options_methods.most_common()),
    }


def render_card(context: dict[str, Any], template: str = "dataset_card.md.jinja") -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(**context)


def check_card(text: str) -> DatasetCard:
    """The offline checks of the Hub's dataset-card metadata: the header parses as
    `DatasetCardData`, its `configs` and `dataset_info` load with `datasets`' own readers, and
    `license: other` comes with `license_name` and `license_link` (the Hub's card spec).
    (`RepoCard.validate` asks the Hub itself, online: `finecot publish` pushes through it.)"""
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    card = DatasetCard(text)  # raises on a header the Hub would not read
    data = card.data
    if not data.to_dict().get("configs"):
        raise ValueError("dataset card header has no configs: the export is incomplete")
    MetadataConfigs.from_dataset_card_data(data)  # raises on a malformed configs field
    DatasetInfosDict.from_dataset_card_data(data)
    if data.license == "other" and not (data.get("license_name") and data.get("license_link")):
        raise ValueError("dataset card: license other needs license_name and license_link")
    if data.get("license_name") and not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", data.license_name):
        raise ValueError(f"dataset card: license_name {data.license_name!r} must be lower-case "
                         "letters, digits, '-' and '.'")
    return card


def write_card(
    recipe: Recipe, run: RunDir, folder: Path, summary: dict[str, Any], triplets: pd.DataFrame
) -> Path:
    """Render README.md into `folder` with its key plots in assets/; validate the header."""
    context = card_context(recipe, run, folder, summary, triplets)
    plots = draw_plots(context, run.path(".card-plots"))
    (folder / "assets").mkdir(parents=True, exist_ok=True)
    for name in ("funnel", "coverage"):
        shutil.copyfile(plots[name], folder / "assets" / f"{name}.png")
    shutil.rmtree(run.path(".card-plots"), ignore_errors=True)
    text = render_card(context)
    check_card(text)
    if context["license_file"]:
        write_text_atomic(folder / LICENSE_FILE, render_card(context, "license.md.jinja"))
    path = folder / "README.md"
    write_text_atomic(path, text)  # with the user's umask, as every file of a run
    return path
