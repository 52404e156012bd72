"""A small exported finecot dataset (sft, rl, eval_open) for the trainer tests and benches.

Same layout and features as `finecot export` writes (curation/export/stage.py):
`OUT/data/<config>/<split>-00000-of-00001.parquet`, images embedded as datasets Image bytes.
Images come from the synthetic world (curation/synthetic/world.py) when it is in the tree:
birds whose classes differ in one or two coloured parts; else from `_pillow_world`, discs
and squares whose classes differ in colour. Rationales are templated from the class description,
as a teacher that sees the image would write them.

    import sys; sys.path.insert(0, "tests")
    from train_fixtures import build_dataset
    build_dataset("runs/tiny-data", classes=6, per_class=4)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

from curation.export.stage import FINE_R1_SYSTEM, IMAGES, MESSAGES, RL_FEATURES, rl_prompt_text

QUESTION = "What is the specific sub-category of the bird in this image?"


def _cell(path: Path) -> dict:
    return {"bytes": path.read_bytes(), "path": path.name}


def _rationale(info: dict, rival: dict) -> str:
    """Short, as the tiny model must learn it on a CPU: what differs from the rival, then the class."""
    seen = ", ".join(
        f"{v} {a.split('_')[0]}" for a, v in info["attributes"].items() if rival["attributes"][a] != v
    )
    return (
        f"<think>\nI see {seen or 'its parts'}; not {rival['name']}.\n</think>\n"
        f"<answer>{info['name']}</answer>"
    )


def _pillow_world(out: Path, classes: int, per_class: int, seed: int, size: int) -> list[dict]:
    """Fallback images: a shape (super-category) of a colour (class) on a noisy background."""
    colours = {"red": (205, 24, 52), "orange": (240, 128, 24), "green": (22, 165, 80),
               "blue": (30, 110, 232), "violet": (135, 50, 205), "yellow": (240, 200, 28)}
    rng = random.Random(seed)
    infos = []
    for ci in range(classes):
        kind = ("disc", "square")[ci % 2]
        colour = list(colours)[(ci // 2) % len(colours)]
        info = {"name": f"{colour.title()} {kind.title()}", "folder": f"{ci:03d}", "super_category": kind,
                "attributes": {"colour": colour, "shape": kind}}
        folder = out / info["folder"]
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(90, 160) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            r = size // 3 + rng.randrange(-3, 4)
            box = (size // 2 - r, size // 2 - r, size // 2 + r, size // 2 + r)
            (draw.ellipse if kind == "disc" else draw.rectangle)(box, fill=colours[colour])
            image.save(folder / f"{ci:03d}_{j:04d}.png")
        infos.append(info)
    return infos


def build_dataset(
    out: str | Path,
    classes: int = 6,
    per_class: int = 4,
    seed: int = 0,
    size: int = 56,
    unseen: int = 0,
    test_per_class: int = 2,
    uniform_prompt: bool = False,
) -> Path:
    """Write the dataset under `out`; return `out`. The last `unseen` classes get no training rows.

    As exported, SFT prompts are system + question and RL prompts are question + format
    instruction (Fine-R1's layout). `uniform_prompt` gives every config the system prompt and
    the instruction, for a tiny model that cannot bridge the two.
    """
    out = Path(out)
    world = out / "world"
    try:
        from curation.synthetic.world import make_world
    except ImportError:
        infos = _pillow_world(world, classes, per_class + test_per_class, seed, size)
    else:
        infos = make_world(world, classes=classes, per_class=per_class + test_per_class, seed=seed,
                           size=size, unseen_fraction=0.0)
    rng = random.Random(seed)
    seen = infos[: len(infos) - unseen]
    images = {c["name"]: sorted((world / c["folder"]).iterdir()) for c in infos}

    def rival_of(info: dict) -> dict:
        same = [c for c in seen if c["super_category"] == info["super_category"] and c is not info]
        return rng.choice(same or [c for c in seen if c is not info])

    sft_question = rl_prompt_text(QUESTION) if uniform_prompt else QUESTION
    system = [{"role": "system", "content": [{"type": "text", "text": FINE_R1_SYSTEM}]}] if uniform_prompt else []
    sft, rl = [], []
    for info in seen:
        train_images = images[info["name"]][:per_class]
        for k, path in enumerate(train_images):
            rival = rival_of(info)
            sft.append({
                "id": f"{info['name']}#{k}",
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": FINE_R1_SYSTEM}]},
                    {"role": "user", "content": [{"type": "image", "text": None},
                                                 {"type": "text", "text": sft_question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": _rationale(info, rival)}]},
                ],
                "images": [_cell(path)],
                "label": info["name"],
                "class_split": "seen",
            })
            positive = train_images[(k + 1) % len(train_images)]
            negative = images[rival["name"]][k % per_class]
            rl.append({
                "id": f"{info['name']}#{k}",
                "prompt": [*system, {"role": "user", "content": [
                    {"type": "image", "text": None},
                    {"type": "text", "text": rl_prompt_text(QUESTION)}]}],
                "answer": info["name"],
                "images": [_cell(path)],
                "positive_images": [_cell(positive)],
                "negative_images": [_cell(negative)],
                "negative_label": rival["name"],
                "negative_label_id": infos.index(rival),
                "triplet_method": "fixture",
                "positive_item_id": positive.stem,
                "negative_item_id": negative.stem,
                "question": QUESTION,
                "dataset": "synthetic",
                "label": info["name"],
                "label_id": infos.index(info),
                "super_category": info["super_category"],
                "image_sha256": "",
                "original_label": None,  # (no reviewer corrected these labels)
                "label_corrected_by": None,
            })
    evals = []
    for info in infos:
        for path in images[info["name"]][per_class:]:
            evals.append({
                "id": path.stem, "question": QUESTION, "answer": info["name"],
                "images": [_cell(path)], "class_split": "seen" if info in seen else "unseen",
                "dataset": "synthetic",
            })
    sft_features = datasets.Features({
        "id": datasets.Value("string"), "messages": MESSAGES, "images": IMAGES,
        "label": datasets.Value("string"), "class_split": datasets.Value("string"),
    })
    eval_features = datasets.Features({
        "id": datasets.Value("string"), "question": datasets.Value("string"),
        "answer": datasets.Value("string"), "images": IMAGES,
        "class_split": datasets.Value("string"), "dataset": datasets.Value("string"),
    })
    for config, rows, features, split in (
        ("sft", sft, sft_features, "train"),
        ("rl", rl, RL_FEATURES, "train"),
        ("eval_open", evals, eval_features, "test"),
    ):
        target = out / "data" / config / f"{split}-00000-of-00001.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(target))
    (out / "classes.json").write_text(json.dumps([c["name"] for c in infos]), encoding="utf-8")
    return out
