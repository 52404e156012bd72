"""The run directory: everything one run makes lives under one folder.

    runs/NAME/
      recipe.yaml         the resolved recipe
      items.parquet       ingested items (one row per usable image)
      quarantine.parquet  inputs that could not be used, each with a reason code
      registry.json       the class registry (names, aliases, levels, descriptions)
      split.json          the split manifest (seed, ratio, class lists, counts, hygiene)
      pool.parquet        the k-shot pool of seen classes (what the teacher drafts on)
      test.parquet        held-out items for evaluation (seen and unseen classes)
      ledger.sqlite       every teacher request and response
      ...                 one Parquet table per later stage, dataset/, report/
"""

from __future__ import annotations

from pathlib import Path

from curation.core.config import Recipe, dump_recipe
from curation.core.tables import write_text_atomic


class RunDir:
    """Paths of one run's files. Nothing is written on creation: the folder appears with the
    first file a stage writes (so a mistyped --run leaves no empty folder behind)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def items(self) -> Path:
        return self.root / "items.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.parquet"

    @property
    def registry(self) -> Path:
        return self.root / "registry.json"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def pool(self) -> Path:
        return self.root / "pool.parquet"

    @property
    def test(self) -> Path:
        return self.root / "test.parquet"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    def save_recipe(self, recipe: Recipe) -> None:
        write_text_atomic(self.recipe, dump_recipe(recipe))

    def require(self, path: Path, stage: str) -> Path:
        """`path`, or a clear error naming the stage that makes it."""
        if not path.exists():
            if not self.root.is_dir():  # (a mistyped --run is the likelier cause)
                raise FileNotFoundError(
                    f"run directory {self.root} does not exist: check --run, or start the "
                    f"run with `finecot ingest --run {self.root}`"
                )
            raise FileNotFoundError(
                f"{path} does not exist: run `finecot {stage}` on {self.root} first"
            )
        return path
