"""The exported finecot dataset, loaded into the rows TRL's trainers want.

A source is any of: an exported dataset folder (`runs/NAME/dataset`, with
`data/<config>/<split>-NNNNN-of-MMMMM.parquet`), a run directory (its `dataset/` is used),
a Parquet file or glob of shards, or a Hugging Face Hub id.

    sft = load_sft("runs/birds/dataset")     # columns: messages, images
    rl = load_rl("runs/birds/dataset")       # prompt, answer, images, positive_images, negative_images, ...

SFT rows: `messages` (system, user with an image part + question, assistant with
`<think>...</think><answer>...</answer>`) + `images`. TAPO rows: conversational `prompt`
(image part + question + the paper's format instruction, written by the exporter), `answer`,
and anchor / positive / negative images of one size. Image size limits (min/max pixels)
belong to the processor: see train/tiny.py `load_processor`.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import datasets

from curation.core.labels import ClassInfo, Registry

log = logging.getLogger(__name__)

REQUIRED = {
    "sft": ("messages", "images"),
    "rl": ("prompt", "answer", "images", "positive_images", "negative_images"),
    "eval_open": ("question", "answer", "images"),
    "eval_closed": ("question", "options", "answer", "images"),
}


def dataset_root(source: str | Path) -> Path | None:
    """The exported dataset folder of `source` (a dataset or run folder), or None."""
    path = Path(source)
    for candidate in (path, path / "dataset"):
        if (candidate / "data").is_dir():
            return candidate
    return None


def shard_files(source: str | Path, config: str, split: str) -> list[str]:
    """Parquet files of (config, split) under `source`, or of the file/glob `source` itself."""
    root = dataset_root(source)
    if root is not None:
        files = sorted(glob.glob(str(root / "data" / config / f"{split}-*.parquet")))
        if not files:
            raise FileNotFoundError(
                f"no {config}/{split} shards under {root / 'data'}; run `finecot export` first "
                f"(found configs: {sorted(p.name for p in (root / 'data').iterdir())})"
            )
        return files
    text = str(source)
    if text.endswith(".parquet") or any(ch in text for ch in "*?["):
        files = sorted(glob.glob(text))
        if not files:
            raise FileNotFoundError(f"no Parquet files match {text}")
        return files
    return []


def load_config(source: str | Path, config: str, split: str = "train") -> datasets.Dataset:
    """One config/split of the exported dataset as a `datasets.Dataset` (images decoded lazily)."""
    files = shard_files(source, config, split)
    if files:
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split)
    elif Path(source).exists():
        raise FileNotFoundError(
            f"{source} is neither an exported dataset (no data/ folder) nor Parquet shards"
        )
    else:  # a Hub id
        ds = datasets.load_dataset(str(source), config, split=split)
    missing = [c for c in REQUIRED.get(config, ()) if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"the {config!r} rows of {source} lack column(s) {missing}; "
            f"has: {ds.column_names}. Re-export it with `finecot export`."
        )
    if len(ds) == 0:
        raise ValueError(f"the {config!r} config of {source} has no rows")
    log.info("%s/%s: %d rows from %s", config, split, len(ds), source)
    return ds


def load_sft(source: str | Path, split: str = "train", rl_prompt: bool = False) -> datasets.Dataset:
    """SFT rows: `messages` + `images` only (provenance columns dropped for the collator).

    rl_prompt: ask each question as the `rl` config does (no system prompt; the answer-format
    instruction after the question), for a model too small to carry the format from one
    prompt layout to the other (the tiny CPU loop)."""
    rows = load_config(source, "sft", split).select_columns(list(REQUIRED["sft"]))
    return rows.map(as_rl_prompt) if rl_prompt else rows


def text_length(messages: list[dict]) -> int:
    """Characters of text in a conversation: the length `group_by_length` batches SFT rows by
    (a row's image tokens are the same for every row, so text decides its padding).

    >>> text_length([{"role": "user", "content": [{"type": "image", "text": None},
    ...     {"type": "text", "text": "Q?"}]}, {"role": "assistant", "content": [{"type": "text", "text": "abc"}]}])
    5
    """
    return sum(len(part["text"] or "") for m in messages for part in m["content"] if part["type"] == "text")


def as_rl_prompt(row: dict) -> dict:
    """An SFT row asked as the `rl` config asks: system turn dropped, the question followed by
    a blank line and the format instruction (curation.export.stage.rl_prompt_text).

    >>> row = {"messages": [{"role": "system", "content": [{"type": "text", "text": "S"}]},
    ...     {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Q?"}]},
    ...     {"role": "assistant", "content": [{"type": "text", "text": "<think>t</think><answer>a</answer>"}]}]}
    >>> [m["role"] for m in as_rl_prompt(row)["messages"]]
    ['user', 'assistant']
    >>> as_rl_prompt(row)["messages"][0]["content"][1]["text"].startswith("Q?\\n\\nYou first think")
    True
    """
    from curation.export.stage import FORMAT_INSTRUCTION, rl_prompt_text

    messages = []
    for message in row["messages"]:
        if message["role"] == "system":
            continue
        if message["role"] == "user":
            content = [dict(part) for part in message["content"]]
            for part in content:
                if part["type"] == "text" and FORMAT_INSTRUCTION not in part["text"]:
                    part["text"] = rl_prompt_text(part["text"])
            message = {**message, "content": content}
        messages.append(message)
    return {"messages": messages}


def load_rl(source: str | Path, split: str = "train") -> datasets.Dataset:
    """TAPO rows: prompt, answer, the three images, and `dataset` when the export has it."""
    ds = load_config(source, "rl", split)
    keep = [*REQUIRED["rl"], *(c for c in ("dataset", "negative_label") if c in ds.column_names)]
    return ds.select_columns(keep)


def load_registry(source: str | Path, rows: datasets.Dataset) -> Registry:
    """The run's registry.json when the source is a run's dataset, else one built from answers.

    The reward's matcher needs every class a completion could name; classes absent from
    the rows (e.g. unseen ones) are unknown to a registry built from answers.
    """
    root = dataset_root(source)
    if root is not None:
        for candidate in (root / "registry.json", root.parent / "registry.json"):
            if candidate.exists():
                log.info("class registry: %s", candidate)
                return Registry.load(candidate)
    answers = list(rows["answer"])
    scopes = list(rows["dataset"]) if "dataset" in rows.column_names else ["data"] * len(answers)
    pairs = list(zip(scopes, answers, strict=True))
    if "negative_label" in rows.column_names:
        pairs += [(s, n) for s, n in zip(scopes, rows["negative_label"], strict=True) if n]
    classes = dict.fromkeys(pairs)
    counters: dict[str, int] = {}
    infos = []
    for scope, name in sorted(classes):
        infos.append(ClassInfo(counters.get(scope, 0), name, scope, scope))
        counters[scope] = counters.get(scope, 0) + 1
    log.info("class registry built from the rows: %d classes", len(infos))
    return Registry(infos)


def text_corpus(source: str | Path, limit: int = 5000) -> list[str]:
    """Texts of the SFT/RL rows (questions, rationales, answers) to train a tiny tokenizer on."""
    texts: list[str] = []
    for config, column in (("sft", "messages"), ("rl", "prompt")):
        try:
            ds = load_config(source, config).select_columns([column])
        except (FileNotFoundError, ValueError):
            continue
        for messages in ds.select(range(min(limit, len(ds))))[column]:
            for message in messages:
                for part in message["content"]:
                    if part.get("text"):
                        texts.append(part["text"])
    return texts
