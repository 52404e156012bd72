"""Training recipes: YAML files whose keys are fields of a TRL config dataclass.

    cfg = load_train_config(SFTRecipe, "train/recipes/sft_tiny_cpu.yaml", ["learning_rate=1e-3"])

Unknown keys are refused with the list of allowed ones (a typo must not fall back to a
default silently). `--set key=value` values are read as YAML scalars. Recipes shipped with
finecot live in train/recipes/ and can be named without the folder or the suffix:
`finecot train sft --recipe sft_qwen2_5_vl_3b`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

RECIPES = Path(__file__).parent / "recipes"
T = TypeVar("T")


def recipe_path(name: str | Path) -> Path:
    """A recipe file: a path, or the name of one shipped in train/recipes/."""
    path = Path(name)
    if path.exists():
        return path
    shipped = RECIPES / f"{Path(name).stem}.yaml"
    if shipped.exists():
        return shipped
    known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise FileNotFoundError(f"recipe {name} not found (a path, or one of: {known})")


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'} (values as YAML scalars).

    >>> parse_overrides(["learning_rate=0.5", "bf16=true", "report_to=[]"])
    {'learning_rate': 0.5, 'bf16': True, 'report_to': []}
    """
    values: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        values[key] = yaml.safe_load(raw) if raw else ""
    return values


def load_train_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None,
                      **defaults: Any) -> T:
    """Instantiate the dataclass `cls` from a recipe file (optional) + overrides."""
    data: dict[str, Any] = dict(defaults)
    if path is not None:
        file = recipe_path(path)
        loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"recipe {file} must be a mapping of config fields")
        data.update(loaded)
    data.update(parse_overrides(overrides))
    allowed = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(
            f"unknown recipe field(s) {unknown} for {cls.__name__}; see `finecot train --help` "
            f"and the TRL docs of {cls.__mro__[1].__name__} for the allowed fields"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in list(data.items()):
        default = fields[key].default
        # YAML 1.1 reads '1e-6' as a string: coerce to the field's numeric type.
        if isinstance(value, str) and isinstance(default, float | int) and not isinstance(default, bool):
            try:
                data[key] = type(default)(float(value)) if isinstance(default, int) else float(value)
            except ValueError:
                raise ValueError(f"recipe field {key} expects a number, got {value!r}") from None
    try:
        return cls(**data)
    except ValueError as err:
        if "bf16" in str(err):  # TRL's default precision on a machine without a GPU
            raise ValueError(f"{err} This machine has no GPU that does bf16: use a CPU recipe "
                             "(`--recipe sft_tiny_cpu` / `tapo_tiny_cpu`) or add `--set use_cpu=true "
                             "--set bf16=false`.") from None
        raise
