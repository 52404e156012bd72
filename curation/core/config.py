"""Recipes: the typed description of a run, loaded from YAML, overridden with `--set`.

Every section refuses unknown fields (a typo must not silently fall back to a default), and
the error names the field and the allowed ones:

    >>> try:
    ...     parse_recipe({"split": {"seen_ration": 0.5}})
    ... except RecipeError as err:
    ...     print(err)
    recipe error at split.seen_ration: unknown field; allowed: mode, seed, seen_ratio, k, strict, phash_distance
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SourceKind = Literal[
    "cub200",
    "stanford_cars",
    "fgvc_aircraft",
    "stanford_dogs",
    "oxford_flowers",
    "oxford_pets",
    "imagefolder",
    "manifest",
    "hf",
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(Section):
    """One dataset to ingest."""

    kind: SourceKind
    root: str = Field(description="folder of the dataset (or manifest file / HF dataset path or id)")
    dataset: str | None = Field(None, description="dataset name in the tables; default: the kind")
    super_category: str | None = Field(None, description="e.g. bird; default: per kind, or 'object'")
    synonyms: str | None = Field(None, description="YAML/JSON file {class: [synonym, ...]}")
    image_column: str = "image"
    label_column: str = "label"
    split_column: str | None = None
    hf_split: str | None = Field(None, description="HF dataset split to read (default: all)")
    aircraft_level: Literal["variant", "family", "manufacturer"] = "variant"
    max_pixels: int = Field(89_478_485, description="larger images are quarantined (bombs)")


class SplitConfig(Section):
    """Seen/unseen class split and the k-shot pool."""

    mode: Literal["random", "fine-r1", "compositional"] = "random"
    seed: int = 0
    seen_ratio: float = Field(0.6, gt=0, le=1)
    k: int = Field(4, ge=1, description="shots per seen class (the paper: 4)")
    strict: bool = Field(False, description="fail the stage on hygiene warnings")
    phash_distance: int = Field(4, ge=0, description="near-duplicate threshold (bits of 64)")


class ExportConfig(Section):
    """The exported dataset (Hub folder, other formats), its triplets and closed-world options."""

    formats: list[Literal["hf", "llamafactory", "easyr1"]] = Field(
        default_factory=lambda: ["hf"], description="hf: Parquet shards + card (always written)"
    )
    shard_mb: int = Field(500, ge=1, description="upper bound of one Parquet shard, in MB")
    rl_image_size: int = Field(448, ge=16, description="anchor/positive/negative resized to this square")
    rl_image_fit: Literal["letterbox", "stretch"] = Field(
        "letterbox", description="letterbox: keep the aspect ratio, pad with grey (a fine-grained "
        "class lives in its proportions); stretch: squash to the square")
    triplet_method: Literal["auto", "model", "confusions", "pixels", "super_category"] = Field(
        "auto", description="auto: model if triplet_model, else confusions, else pixels"
    )
    triplet_model: str | None = Field(None, description="LOCAL path of a transformers image/CLIP model")
    images_per_class: int = Field(8, ge=1, description="images per class for class-mean embeddings")
    seed: int = Field(0, description="seed of option shuffles, positives and negatives")
    fine_r1_eval: str | None = Field(
        None, description="folder of Fine-R1's eval/*.jsonl: the paper's closed-world options"
    )
    system_prompt: str | None = Field(None, description="SFT system prompt (default: Fine-R1's)")
    license: str | None = Field(None, description="card license id (default: from the sources)")
    eval_overlap: Literal["refuse", "drop"] = Field(
        "refuse", description="an eval image that is also a training image (sha256 or pHash "
        "within split.phash_distance): refuse the export, or drop those eval rows")


class ReviewConfig(Section):
    """Human review in Label Studio (curation/review/push_pull.py): what goes, how images travel."""

    url: str | None = Field(None, description="Label Studio URL; default: env LABEL_STUDIO_URL")
    api_key_env: str = Field("LABEL_STUDIO_API_KEY", description="env var holding the token")
    project_title: str | None = Field(None, description="the run's project title, a label (at most 41 "
                                      "characters); default: finecot NAME · FOLDER · RUN ID")
    project_id: int | None = Field(None, description="use this existing project (e.g. another run's) "
                                   "instead of the run's own; verdicts apply only to identical texts")
    select: Literal["accepted", "rejected", "all"] = Field(
        "accepted", description="accepted rows, filter-rejected rows (audit), or both"
    )
    reasons: list[str] = Field(default_factory=list, description="only rows with one of these reason codes")
    sample_size: int | None = Field(None, ge=1, description="seeded random sample of this many rows")
    sample_fraction: float | None = Field(None, gt=0, le=1, description="or of this fraction")
    seed: int = 0
    image_mode: Literal["upload", "local-files", "data-url"] = Field(
        "upload", description="upload to the server, serve from a shared disk, or inline data URLs"
    )
    document_root: str | None = Field(
        None, description="local-files: the server's LOCAL_FILES_DOCUMENT_ROOT (default: that env var)"
    )
    data_url_max_bytes: int = Field(256_000, ge=1, description="data-url: larger images are refused")
    batch_size: int = Field(500, ge=1, description="tasks per import request")
    overlap: int = Field(1, ge=1, description="annotations wanted per task (agreement needs 2+)")
    rule: Literal["latest", "majority", "any_reject"] = Field(
        "latest", description="how several annotations of one task combine"
    )
    timeout_s: float = Field(120, gt=0, description="HTTP timeout per request")


class Price(Section):
    """USD per million tokens of one model, online and through a batch API."""

    input_per_m: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    output_per_m: float = Field(0.0, ge=0, description="USD per 1M completion tokens")
    batch_discount: float = Field(
        0.5, ge=0, le=1, description="teacher.mode batch: share of the online price taken off "
        "(OpenAI's Batch API and most providers': 0.5, half price); unused when the batch "
        "prices below are given")
    batch_input_per_m: float | None = Field(None, ge=0, description="batch USD per 1M prompt tokens")
    batch_output_per_m: float | None = Field(None, ge=0, description="batch USD per 1M completion tokens")

    def rates(self, batch: bool = False) -> tuple[float, float]:
        """(input, output) USD per million tokens, online or through a batch API.

        >>> Price(input_per_m=2, output_per_m=8).rates(batch=True)
        (1.0, 4.0)
        >>> Price(input_per_m=2, output_per_m=8, batch_output_per_m=5).rates(batch=True)
        (1.0, 5.0)
        """
        if not batch:
            return self.input_per_m, self.output_per_m
        keep = 1.0 - self.batch_discount
        return (self.batch_input_per_m if self.batch_input_per_m is not None else self.input_per_m * keep,
                self.batch_output_per_m if self.batch_output_per_m is not None
                else self.output_per_m * keep)


class BatchConfig(Section):
    """teacher.mode batch: the batch files and how their batches are watched
    (curation/draft/batch.py). Limits default to OpenAI's published ones (Batch API: 50,000
    requests and 200 MB per input file)."""

    max_lines: int = Field(50_000, ge=1, description="requests per batch file at most")
    max_bytes: int = Field(200 * 1024 * 1024, ge=1024, description="bytes per batch file at most")
    completion_window: str = Field("24h", description="sent with each batch (OpenAI: only 24h)")
    poll_s: float = Field(15.0, gt=0, description="--wait: first wait between two status checks")
    poll_max_s: float = Field(300.0, gt=0, description="--wait: the wait doubles up to this")
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra HTTP headers of the Files/Batches calls, e.g. "
        "{x-litellm-model: NAME} for LiteLLM's proxy in front of vLLM (written to recipe.yaml: "
        "never a key here; the key comes from teacher.api_key_env)")


class TeacherConfig(Section):
    """The teacher endpoint(s) and how hard to drive them (curation/teacher/client.py)."""

    model: str = Field("teacher", description="model name sent to the endpoint")
    base_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        description="OpenAI-compatible base URLs (…/v1); requests spread over all of them",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the API key")
    transport: Literal["aiohttp", "sdk"] = Field(
        "aiohttp", description="aiohttp: pre-built bodies on the SDK's config (fast); sdk: client.post"
    )
    concurrency: int = Field(64, ge=1, description="requests in flight at most")
    rpm: float | None = Field(None, gt=0, description="requests per minute (token bucket)")
    tpm: float | None = Field(None, gt=0, description="tokens per minute (token bucket)")
    timeout_s: float = Field(120.0, gt=0, description="per-attempt timeout")
    max_attempts: int = Field(5, ge=1, description="attempts per request before it is failed")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay (doubles, with jitter)")
    backoff_max_s: float = Field(60.0, ge=0, description="retry delay cap")
    use_n: bool = Field(True, description="ask for several samples with `n` (detected per endpoint)")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    seed: int | None = Field(0, description="sampling seed (sample i of an item sends seed+i)")
    image_max_side: int = Field(768, ge=16, description="images are resized to fit this side")
    image_max_pixels: int = Field(768 * 768, ge=256, description="and this many pixels")
    jpeg_quality: int = Field(90, ge=1, le=100)
    prices: dict[str, Price] = Field(
        default_factory=dict, description="model -> {input_per_m, output_per_m} USD"
    )
    mode: Literal["online", "batch"] = Field(
        "online", description="online: chat completions as they go; batch: JSONL batch files "
        "through the endpoint's Files/Batches API (or offline: `finecot batch build|import`)")
    batch: BatchConfig = Field(default_factory=BatchConfig)


class PromptConfig(Section):
    """Drafting prompts (prompts/*.jinja) and the question bank."""

    system: str = Field("draft_system.jinja", description="system prompt template")
    user: str = Field("draft_user.jinja", description="user prompt template")
    directory: str | None = Field(None, description="template folder (default: the project's prompts/)")
    questions: str | None = Field(None, description="question bank YAML (default: prompts/questions.yaml)")
    candidates: int = Field(0, ge=0, description=(
        "show N candidate classes: the gold + N-1 classes of the pool, same super-category "
        "first (held-out classes are never named); 0: none"))
    describe: bool = Field(False, description="hinted: also show the class description/attributes")


class DraftConfig(Section):
    """The draft stage (curation/draft/stage.py): strategy, samples, quota and budget."""

    strategy: Literal["blind", "hinted", "blind-then-hinted"] = Field(
        "blind", description="blind: label hidden; hinted: label given; blind-then-hinted: "
        "hint only items whose blind drafts all failed"
    )
    samples: int = Field(1, ge=1, description="samples per item in the first round")
    target_per_class: int | None = Field(
        None, ge=1, description="keep drafting until each class has this many accepted"
    )
    max_per_class: int = Field(64, ge=1, description="quota loop: samples per class at most")
    budget_usd: float | None = Field(None, ge=0, description="stop sending at this total cost")
    budget_tokens: int | None = Field(None, ge=0, description="or at this many total tokens")
    retry_failed: bool = Field(True, description="re-send requests the ledger holds as failed")
    min_usable_share: float = Field(
        0.5, ge=0, le=1, description="a run whose drafts are usable (answered, not empty, not "
        "truncated) below this share exits non-zero with a summary (0: never)"
    )


class FilterConfig(Section):
    """Rationale filters (curation/filter/filters.py): which run and their thresholds."""

    disabled: list[str] = Field(
        default_factory=list, description="filters to skip, e.g. [language, duplicate]"
    )
    min_candidates: int = Field(2, ge=0, description="fewest candidate sub-categories")
    max_candidates: int = Field(6, ge=1, description="most candidate sub-categories")
    max_hallucinated_share: float = Field(
        0.5, ge=0, le=1, description="reject when more of the candidates than this share are "
        "not registry classes (0: any such candidate rejects)"
    )
    unseen_mention: Literal["flag", "reject"] = Field(
        "reject", description="a rationale naming an unseen-split class: flag it or reject it"
    )
    off_domain_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="super-category -> built-in domain (aircraft, car, bird, dog, cat, flower)",
    )
    min_words: int = Field(40, ge=0, description="fewest words in <think>")
    max_words: int = Field(2000, ge=1, description="most words in <think>")
    max_repeated_share: float = Field(
        0.3, gt=0, le=1, description="repetition: reject when more than this share of <think> "
        "is repeated text (4-word chunks or whole sentences seen before)"
    )
    max_repeated_run: int = Field(3, ge=1, description="repetition: most copies of one sentence in a row")
    language: str = Field("en", description="expected language (en; 'any' skips the check)")
    min_stopword_share: float = Field(0.12, ge=0, le=1, description="share of common words")
    duplicate_threshold: float = Field(0.85, gt=0, le=1, description="MinHash Jaccard for near-duplicates")
    duplicate_scope: Literal["image", "class"] = Field(
        "image", description="near-duplicates of an accepted rationale of the same image or class"
    )
    judge: bool = Field(False, description="second teacher call checking the visual analysis")


class Recipe(Section):
    """A whole run: where it lives, which stages run, and each stage's settings."""

    name: str = "run"
    run_dir: str | None = Field(None, description="default: runs/NAME")
    stages: list[str] = Field(
        default_factory=lambda: ["ingest", "split", "draft", "filter", "export", "report"],
        description="stages `finecot run` runs, in order (default: the whole pipeline)",
    )
    sources: list[SourceConfig] = Field(default_factory=list)
    split: SplitConfig = Field(default_factory=SplitConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    draft: DraftConfig = Field(default_factory=DraftConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)

    @property
    def directory(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")


class RecipeError(ValueError):
    """A recipe that cannot be used, with a message that says which field and why."""


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model that `loc` (minus its last element) points into."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        if inner:  # list[Model], Model | None
            annotation = next((a for a in inner if hasattr(a, "model_fields")), annotation)
        current = annotation
    return list(getattr(current, "model_fields", {}))


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_fields(Recipe, e["loc"]))
            lines.append(f"recipe error at {where}: unknown field; allowed: {allowed}")
        else:
            lines.append(f"recipe error at {where}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_recipe(data: dict[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(data or {})
    except ValidationError as err:
        raise RecipeError(_format_errors(err)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are read as YAML scalars (numbers, bools, lists).

    >>> apply_overrides({"split": {"k": 4}}, ["split.k=8", "sources.0.root=/data"])
    {'split': {'k': 8}, 'sources': [{'root': '/data'}]}
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        value = yaml.safe_load(raw) if raw else ""
        parts = key.split(".")
        node: Any = data
        for part, nxt in zip(parts, parts[1:], strict=False):
            node = _child(node, part, list if nxt.isdigit() else dict)
        _assign(node, parts[-1], value)
    return data


def _child(node: Any, part: str, kind: type) -> Any:
    if isinstance(node, list):
        index = int(part)
        while len(node) <= index:
            node.append(kind())
        return node[index]
    if node.get(part) is None:
        node[part] = kind()
    return node[part]


def _assign(node: Any, part: str, value: Any) -> None:
    if isinstance(node, list):
        index = int(part)
        while len(node) <= index:
            node.append(None)
        node[index] = value
    else:
        node[part] = value


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML file (or start from defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise RecipeError(f"recipe file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"recipe {path} must be a mapping at the top level")
    return parse_recipe(apply_overrides(data, overrides or []))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
