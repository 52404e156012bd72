"""The TAPO experiment's data: the synthetic world run through the curation pipeline.

`build_cot(out, world_per_class, test_per_class)` draws the world (24 compositional classes,
3 super-categories), marks the first `test_per_class` images of every class as test
(`splits.csv`), and runs ingest -> split (compositional: 18 seen, 6 unseen classes) -> draft
(the scripted teacher, with the demo's error rates) -> filter -> export, as `finecot demo` does.
The CoT SFT rows are the pipeline's own accepted rationales; the `rl` rows its triplets; the
`eval_open` / `eval_closed` rows its held-out test images of seen and unseen classes.

`training_sets(export, out)` writes the two SFT datasets the experiment compares, each a copy
of the export (same rl, eval_open, eval_closed and registry.json):

- `out/cot`: the accepted rationales;
- `out/direct`: the same rows with the rationale removed: the assistant turn is
  `<think>\\n</think>\\n<answer>CLASS</answer>` (the format kept, the reasoning empty), so the
  only difference between the two SFT runs is the rationale.

`base_set(world, out, per_class)` is the base model's pretraining data (bench/tapo_runs.py `train_base`):
`per_class` newly drawn images of every class of the world, seen and unseen, each with the
question "Describe this bird." and a sentence naming all its attributes (`base_caption`: the
world's description or a teacher's visual-analysis phrasing). No class name appears in it,
and its images are drawn from another random stream than the world's, so none is a training
or test image.

In both, half of the SFT rows (seeded) ask the closed-world question `finecot eval` asks
(train/eval/evaluate.py `prompt`: the release's option template, 4 options) instead of the
open one: a model trained from scratch knows no instruction it was not trained on, and the
Qwen2.5-VL models of the paper had learned to pick among options before Fine-R1 trained them.
The distractors are 3 other seen classes of the row's super-category: no unseen class name
is ever trained on.

    .venv/bin/python bench/tapo_data.py runs/tapo-data        # ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import random
import shutil
from pathlib import Path

import datasets
import numpy as np

from curation.demo import DEMO_TEACHER, demo_recipe
from curation.export.stage import IMAGES, MESSAGES
from curation.pipeline import run_recipe
from curation.synthetic.draw import render
from curation.synthetic.rationale import visual_analysis
from curation.synthetic.teacher import TeacherServer
from curation.synthetic.world import describe as describe_class
from curation.synthetic.world import make_world

log = logging.getLogger(__name__)

CLASSES = 24  # 8 per super-category: a 3x3 grid of two varying attributes, minus one cell
IMAGE_SIZE = 128  # the world's drawing size (the model's processor resizes)
# What this experiment sets in the demo recipe: every seen pool image gets one accepted
# rationale, two candidate classes in the prompt keep rationales short (~150 tokens: the
# RL rollouts and the evaluation generate them on a CPU), no report stage.
RECIPE = [
    "stages=[ingest,split,draft,filter,export]",
    "prompts.candidates=2",
    "export.rl_image_size=128",
    "export.eval_overlap=drop",
]


def write_splits(world: Path, classes: list[dict], test_per_class: int) -> None:
    """splits.csv: the first `test_per_class` images of each class are test, the rest train."""
    with (world / "splits.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split"])
        for info in classes:
            for index, path in enumerate(sorted((world / info["folder"]).iterdir())):
                writer.writerow([f"{info['folder']}/{path.name}",
                                 "test" if index < test_per_class else "train"])


def build_cot(out: str | Path, world_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """Run the pipeline under `out` (a run folder); return its exported dataset folder."""
    out = Path(out)
    dataset = out / "dataset"
    if (dataset / "data" / "eval_closed").is_dir():
        return dataset
    shots = world_per_class - test_per_class
    world = out / "world"
    if not (world / "splits.csv").exists():
        classes = make_world(world, classes=CLASSES, per_class=world_per_class, seed=seed,
                             size=IMAGE_SIZE)
        write_splits(world, classes, test_per_class)
    with TeacherServer(**DEMO_TEACHER, world=str(world)) as teacher:
        recipe = demo_recipe(out, teacher.base_url, [
            *RECIPE, f"split.k={shots}", f"split.seed={seed}", f"draft.target_per_class={shots}",
            f"draft.max_per_class={3 * shots}",
        ])
        run_recipe(recipe)
    shutil.copyfile(out / "registry.json", dataset / "registry.json")  # travels with the data
    return dataset


def without_rationale(row: dict) -> dict:
    """The SFT row with an empty `<think>` and the same `<answer>`.

    >>> row = {"messages": [{"role": "user", "content": []}, {"role": "assistant", "content": [
    ...     {"type": "text", "text": "<think>\\nred crown\\n</think>\\n<answer>A B</answer>"}]}]}
    >>> without_rationale(row)["messages"][1]["content"][0]["text"]
    '<think>\\n</think>\\n<answer>A B</answer>'
    """
    from train.rewards import extract_answer

    messages = []
    for message in row["messages"]:
        if message["role"] == "assistant":
            answer = extract_answer(message["content"][-1]["text"])
            if answer is None:
                raise ValueError(f"an accepted SFT row without <answer>: {row.get('id')}")
            text = f"<think>\n</think>\n<answer>{answer}</answer>"
            message = {**message, "content": [{"type": "text", "text": text}]}
        messages.append(message)
    return {"messages": messages}


def closed_world_question(row: dict, rivals: list[str], rng: random.Random) -> str:
    """The closed-world prompt `finecot eval` sends for this row's image: the gold and three of
    `rivals` (other seen classes of its super-category), shuffled."""
    from train.eval.evaluate import Item, prompt

    options = [row["label"], *rng.sample(rivals, min(3, len(rivals)))]
    rng.shuffle(options)
    item = Item(id=row["id"], dataset=row["dataset"], label=row["label"], class_split="seen",
                question=row["question"], image=b"", options=options,
                answer_index=options.index(row["label"]), image_sha256=row["image_sha256"])
    return prompt(item, "closed")


def ask_some_closed(rows: datasets.Dataset, share: float, seed: int) -> datasets.Dataset:
    """`share` of the SFT rows (seeded by row id) asked the closed-world question."""
    kinds: dict[str, set[str]] = {}
    for label, kind in zip(rows["label"], rows["super_category"], strict=True):
        kinds.setdefault(kind, set()).add(label)

    def ask(row: dict) -> dict:
        rng = random.Random(f"{seed}:{row['id']}")
        if rng.random() >= share:
            return {}
        rivals = sorted(kinds[row["super_category"]] - {row["label"]})
        text = closed_world_question(row, rivals, rng)
        messages = []
        for message in row["messages"]:
            if message["role"] == "user":
                content = [dict(part, text=text) if part["type"] == "text" else part
                           for part in message["content"]]
                message = {**message, "content": content}
            messages.append(message)
        return {"messages": messages}

    return rows.map(ask)


def training_sets(export: str | Path, out: str | Path, closed_share: float = 0.5,
                  seed: int = 0) -> dict[str, Path]:
    """out/cot and out/direct (see the module doc); each is written once, then reused."""
    export, out = Path(export), Path(out)
    made = {}
    for name, rationale in (("cot", True), ("direct", False)):
        target = out / name
        made[name] = target
        if (target / "data" / "sft").is_dir():
            continue
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(export, partial, ignore=shutil.ignore_patterns("sft", "assets", "README.md"))
        for shard in sorted((export / "data" / "sft").glob("*.parquet")):
            rows = ask_some_closed(datasets.Dataset.from_parquet(str(shard)), closed_share, seed)
            if not rationale:
                rows = rows.map(without_rationale)
            shard_out = partial / "data" / "sft" / shard.name
            shard_out.parent.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(str(shard_out))
        partial.rename(target)
    return made


BASE_PROMPT = "Describe this bird."


def base_caption(super_category: str, attributes: dict[str, str], rng: random.Random) -> str:
    """What the base model learns to say of a bird: every attribute, in one of five
    phrasings, the world's sentence or one of the four a teacher uses for its visual
    analysis (curation/synthetic/rationale.py), never a class name. Taught one phrasing
    only, the base's reading of an image did not carry over to the rationales' (see
    docs/tapo_experiment.md).

    >>> from curation.synthetic.world import world_classes
    >>> c = world_classes(6)[0]
    >>> base_caption(c["super_category"], c["attributes"], random.Random(1))
    'A warbler with an olive body, a crimson crown, orange wings, a golden breast, a broad pale wing bar, a rounded tail and a long bill.'
    >>> base_caption(c["super_category"], c["attributes"], random.Random(0))[:48]
    'The image shows a perched bird; it has an olive '
    """
    if rng.random() < 0.2:
        return describe_class(super_category, attributes)
    return visual_analysis(attributes, rng)


def base_set(world: str | Path, out: str | Path, per_class: int, seed: int = 0) -> Path:
    """The base model's pretraining set under `out` (see the module doc); written once."""
    world, out = Path(world), Path(out)
    shard = out / "data" / "sft" / "train-00000-of-00001.parquet"
    if shard.exists():
        return out
    classes = json.loads((world / "classes.json").read_text(encoding="utf-8"))
    rows = []
    for index, info in enumerate(classes):
        for j in range(per_class):
            caption = base_caption(info["super_category"], info["attributes"], random.Random(f"{seed}/{index}/{j}"))
            # a 4-part seed: a random stream no make_world(seed, ...) image comes from
            image = render(info["attributes"], np.random.default_rng([seed, index, j, 1]), IMAGE_SIZE)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            rows.append({
                "messages": [
                    {"role": "user", "content": [{"type": "image", "text": None},
                                                 {"type": "text", "text": BASE_PROMPT}]},
                    {"role": "assistant", "content": [{"type": "text", "text": caption}]},
                ],
                "images": [{"bytes": buffer.getvalue(), "path": f"{index:03d}_{j:04d}.png"}],
            })
    partial = shard.with_suffix(".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"messages": MESSAGES, "images": IMAGES})
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(partial))
    partial.rename(shard)
    return out


def describe(dataset: str | Path) -> dict[str, int]:
    """Row counts per config, and seen / unseen test images."""
    from train.data import load_config

    counts = {c: len(load_config(dataset, c, s)) for c, s in (("sft", "train"), ("rl", "train"))}
    test = load_config(dataset, "eval_open", "test")
    sides = list(test["class_split"])
    return {**counts, "test_seen": sides.count("seen"), "test_unseen": sides.count("unseen")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--world-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    export = build_cot(args.out / "run", args.world_per_class, args.test_per_class)
    training_sets(export, args.out)
    print(json.dumps(describe(export)))


if __name__ == "__main__":
    main()
