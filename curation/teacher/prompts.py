"""Teacher prompts: Jinja templates from prompts/ rendered with StrictUndefined.

Each template starts with a Jinja comment (purpose, variables) that never reaches the
teacher; the sha256 of the template *source* goes into every request key, so editing a
template re-requests exactly the drafts it touches.

    >>> prompts = load_prompts()
    >>> text = prompts.user.render(question="What kind of bird is this?", super_category="bird",
    ...                            hint="Laysan Albatross", description=None, attributes=None,
    ...                            candidates=["Laysan Albatross", "Sooty Albatross"])
    >>> print(text.splitlines()[0])
    What kind of bird is this?
    >>> 'the correct sub-category is "Laysan Albatross"' in text
    True
    >>> "Candidates: Laysan Albatross; Sooty Albatross" in text
    True
    >>> len(prompts.sha)
    64
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
STRATEGIES = ("blind", "hinted", "blind-then-hinted")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Template:
    """One template: its name, source text, source sha256 and compiled form."""

    name: str
    source: str
    sha: str
    compiled: jinja2.Template

    def render(self, **variables: Any) -> str:
        """Render; a variable the template uses but the caller left out is an error."""
        try:
            return self.compiled.render(**variables).strip()
        except jinja2.UndefinedError as err:
            raise ValueError(
                f"prompt template {self.name}: {err.message}; pass every variable listed "
                "in its header comment (None where it does not apply)"
            ) from None


def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # plain text prompts, not HTML
    )


@lru_cache(maxsize=64)
def load_template(name: str, directory: str | None = None) -> Template:
    """Load `name` (e.g. "draft_user.jinja") from `directory` (default: the project's prompts/)."""
    folder = Path(directory) if directory else PROMPTS_DIR
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"prompt template {path} not found; templates in {folder}: "
                                f"{', '.join(sorted(p.name for p in folder.glob('*.jinja')))}")
    source = path.read_text(encoding="utf-8")
    try:
        compiled = _environment(folder).from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"prompt template {path} line {err.lineno}: {err.message}") from None
    return Template(name=name, source=source, sha=_sha256(source), compiled=compiled)


@dataclass(frozen=True)
class Prompts:
    """The system + user templates of one drafting recipe; `sha` covers both sources."""

    system: Template
    user: Template

    @property
    def sha(self) -> str:
        return _sha256(self.system.sha + self.user.sha)

    @property
    def name(self) -> str:
        return self.user.name.removesuffix(".jinja")


def load_prompts(
    system: str = "draft_system.jinja", user: str = "draft_user.jinja", directory: str | None = None
) -> Prompts:
    return Prompts(load_template(system, directory), load_template(user, directory))


# -- the question bank ------------------------------------------------------------------------


@lru_cache(maxsize=8)
def load_questions(path: str | None = None) -> dict[str, tuple[str, ...]]:
    """The per-domain bank {super_category: phrasings}; must hold a "generic" entry."""
    file = Path(path) if path else PROMPTS_DIR / "questions.yaml"
    data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not data.get("generic"):
        raise ValueError(f"question bank {file} must map domains to lists and hold 'generic'")
    bank = {str(k).lower(): tuple(str(q) for q in v) for k, v in data.items() if v}
    return bank


def pick_question(bank: Mapping[str, Sequence[str]], super_category: str, item_id: str) -> str:
    """One phrasing for the item, chosen by a stable hash of item_id (not Python's hash()).

    >>> bank = {"bird": ["A?", "B?"], "generic": ["What {super_category} is it?"]}
    >>> pick_question(bank, "bird", "x1") in ("A?", "B?")
    True
    >>> pick_question(bank, "Moth", "x1")
    'What Moth is it?'
    """
    domain = (super_category or "").lower()
    choices = bank.get(domain) or bank["generic"]
    index = int(hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:8], 16) % len(choices)
    return choices[index].replace("{super_category}", super_category or "object")


def pick_candidates(gold: str, rivals: Sequence[str], size: int, item_id: str,
                    fallback: Sequence[str] = ()) -> list[str] | None:
    """`size` candidates: the gold plus `rivals` (its super-category's classes), topped up from
    `fallback` (the dataset's other classes) when there are too few, in an item-seeded order.

    >>> pick_candidates("A", ["B", "C", "D"], 3, "i") == pick_candidates("A", ["D", "C", "B"], 3, "i")
    True
    >>> "A" in pick_candidates("A", ["B", "C", "D"], 2, "i")
    True
    >>> sorted(pick_candidates("A", ["B"], 3, "i", fallback=["B", "X", "Y"]))[:2]
    ['A', 'B']
    >>> pick_candidates("A", ["B"], 0, "i") is None
    True
    """
    if size <= 0:
        return None
    rng = random.Random(_sha256(item_id))
    pool = sorted(set(rivals) - {gold})
    chosen = rng.sample(pool, min(size - 1, len(pool)))
    spare = sorted(set(fallback) - {gold} - set(chosen))
    chosen += rng.sample(spare, min(size - 1 - len(chosen), len(spare))) + [gold]
    rng.shuffle(chosen)
    return chosen
