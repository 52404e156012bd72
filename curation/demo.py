"""`finecot demo`: the whole pipeline on the built-in synthetic world, no GPU and no API key.

    finecot demo                  # runs/demo: world -> ingest -> split -> draft -> filter
                                  #            -> export -> report, then prints where it all is
    finecot demo --train          # and trains the tiny model on the result (minutes on CPU)

The scripted teacher (curation/synthetic/teacher.py) runs in this process on a free
127.0.0.1 port, with error rates that are recorded in the run (`teacher_behaviour.json`), so
every number the demo prints can be explained: the filters should reject about as many
drafts as the teacher was told to spoil. It is a stand-in for a real teacher model, not a
substitute for one. Rerunning the demo resumes: answered requests come from the ledger.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from curation.core.config import Recipe, load_recipe
from curation.core.rundir import RunDir
from curation.core.tables import write_json_atomic
from curation.pipeline import Display, run_recipe
from curation.synthetic.teacher import TeacherServer
from curation.synthetic.world import make_world

log = logging.getLogger(__name__)

DEMO_RECIPE = Path(__file__).parent / "recipes" / "demo.yaml"

# What the scripted teacher is told to get wrong: a fifth of its perceptions, a few formats,
# and a quarter of hinted drafts leak the label -- the faults a real teacher makes.
DEMO_TEACHER = {
    "perception_error_rate": 0.2,
    "format_error_rate": 0.05,
    "leak_rate": 0.25,
    "latency": 0.01,
}
DEMO_WORLD = {"classes": 24, "per_class": 12, "seed": 0, "size": 128}


def demo_recipe(out: Path, teacher_url: str, overrides: list[str] | None = None) -> Recipe:
    """The shipped demo recipe with this machine's world folder and teacher URL filled in."""
    return load_recipe(
        DEMO_RECIPE,
        [
            f"run_dir={out}",
            f"sources.0.root={out / 'world'}",
            f"teacher.base_urls=[{teacher_url}]",
            *(overrides or []),
        ],
    )


def run_demo(
    out: str | Path = "runs/demo",
    train: bool = False,
    overrides: list[str] | None = None,
    teacher_flags: dict[str, Any] | None = None,
    display: Display | None = None,
) -> dict[str, Any]:
    """Run the demo end to end; return the paths and headline numbers it printed."""
    out = Path(out)
    world = out / "world"
    if not (world / "classes.json").exists():
        log.info("drawing the synthetic world into %s", world)
        make_world(world, **DEMO_WORLD)
    flags = {**DEMO_TEACHER, **(teacher_flags or {}), "world": str(world)}
    with TeacherServer(**flags) as teacher:
        recipe = demo_recipe(out, teacher.base_url, overrides)
        run = RunDir(recipe.directory)
        write_json_atomic(
            run.path("teacher_behaviour.json"),
            {k: v for k, v in asdict(teacher.behaviour).items() if k != "world"},
        )
        run_recipe(recipe, display=display)
    result = summarize(run)
    if train:
        from train.loop import run_tiny_loop

        dataset = run.path("dataset")
        result["train"] = run_tiny_loop(dataset, run.path("train"))
    return result


def summarize(run: RunDir) -> dict[str, Any]:
    """Where the demo's products are, and the funnel that made them."""
    funnel_path = run.path("funnel.json")
    funnel = json.loads(funnel_path.read_text()) if funnel_path.exists() else {}
    return {
        "run": str(run.root),
        "dataset": str(run.path("dataset")),
        "card": str(run.path("dataset") / "README.md"),
        "report": str(run.path("report") / "index.html"),
        "funnel": funnel,
    }
