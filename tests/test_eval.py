"""`finecot eval` end to end on the synthetic world: the scripted teacher through its endpoint,
a tiny local checkpoint through transformers, a first-option endpoint, the paper's lists.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_eval.py

Servers are real aiohttp servers on 127.0.0.1 (the scripted teacher, and below a minimal
OpenAI-compatible double that always answers the first listed option). Relative similarity
uses the model-free hashed n-gram embedder (no text model is loaded). The tiny model is
random-init (train/tiny.py): its answers are noise, which is fine for checking that the
metrics equal what the test computes from its raw answers.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import re
import threading
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from PIL import Image
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import TeacherConfig
from curation.core.labels import ClassInfo, Registry, match
from curation.export.prompts import closed_prompt_text
from curation.export.stage import EVAL_CLOSED_FEATURES, EVAL_OPEN_FEATURES
from curation.export.triplets import shuffled_options
from train.eval import evaluate as ev
from train.eval.metrics import hashed_ngram_embed
from train.eval.models import EndpointModel, LocalModel

FIXTURES = Path(__file__).parent / "fixtures" / "fine_r1_eval"
QUESTION = "What is the specific sub-category of the bird in this image?"


# -- an exported eval set of the synthetic world ---------------------------------------------


@pytest.fixture(scope="module")
def export(synthetic_world, tmp_path_factory) -> Path:
    """eval_open / eval_closed shards (the export's features) + registry.json: 24 classes x 4
    images, every third class unseen, options = gold + 3 classes of its super-category."""
    out = tmp_path_factory.mktemp("eval-export")
    infos = json.loads((synthetic_world / "classes.json").read_text())
    Registry(ClassInfo(i, c["name"], "synthetic", c["super_category"], aliases=tuple(c.get("aliases", ())))
             for i, c in enumerate(infos)).save(out / "registry.json")
    opens, closeds = [], []
    for i, info in enumerate(infos):
        others = [o["name"] for o in infos if o["super_category"] == info["super_category"] and o is not info]
        for k, path in enumerate(sorted((synthetic_world / info["folder"]).iterdir())):
            data = path.read_bytes()
            row = {"id": f"{info['folder']}/{path.name}", "question": QUESTION, "answer": info["name"],
                   "images": [{"bytes": data, "path": path.name}],
                   "class_split": "unseen" if i % 3 == 2 else "seen", "dataset": "synthetic",
                   "label": info["name"], "label_id": i, "super_category": info["super_category"],
                   "image_sha256": hashlib.sha256(data).hexdigest()}
            opens.append(row)
            distractors = [others[(k + j) % len(others)] for j in range(3)]
            options, index = shuffled_options([info["name"], *distractors], info["name"], 0, row["id"])
            closeds.append({**row, "options": options, "answer_index": index,
                            "options_method": "test", "options_seed": 0,
                            "prompt": closed_prompt_text(QUESTION, options)})
    for config, rows, features in (("eval_open", opens, EVAL_OPEN_FEATURES),
                                   ("eval_closed", closeds, EVAL_CLOSED_FEATURES)):
        target = out / "data" / config / "test-00000-of-00001.parquet"
        target.parent.mkdir(parents=True)
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(target))
    return out


@pytest.fixture(scope="module")
def loaded(export):
    items = {mode: ev.load_exported(export, f"eval_{mode}") for mode in ev.MODES}
    return items, ev.exported_registry(export)


def _answer(text: str | None) -> str:
    found = re.findall(r"<answer>(.*?)</answer>", text or "", re.S)
    return found[-1].strip() if found else (text or "").strip()


def _by_cell(rows, value) -> dict[tuple[str, str], float]:
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["class_split"]), []).append(value(r))
    return {k: sum(v) / len(v) for k, v in cells.items()}


def _cells(block, metric) -> dict[tuple[str, str], float]:
    return {(d, s): c[metric] for d, sides in block["cells"].items() for s, c in sides.items()}


# -- the scripted teacher through its endpoint -------------------------------------------------


def test_endpoint_metrics_equal_an_independent_scoring_and_a_rerun_is_free(start_teacher, loaded, tmp_path):
    items, registry = loaded
    server = start_teacher(perception_error_rate=0.3)
    backend = EndpointModel(TeacherConfig(model="scripted", base_urls=[server.base_url],
                                          temperature=0, concurrency=8))
    counts = {}
    for mode in ev.MODES:  # one mode at a time: the server's counts are per mode
        server.reset_stats()
        ev.evaluate({mode: items[mode]}, registry, backend, tmp_path / mode, ev.Settings())
        counts[mode] = server.stats(log=False)["counts"]
        assert counts[mode]["requests"] == len(items[mode]) == 96

    # open-world: accuracy by THE matcher over the raw answers; the teacher's own account of
    # its misperceptions says how many can be right
    metrics = json.loads((tmp_path / "open" / "metrics.json").read_text())["results"]["open"]
    rows = pq.read_table(tmp_path / "open" / "responses_open.parquet").to_pylist()
    assert len(rows) == 96 and all(r["response"] for r in rows)
    correct = [match(_answer(r["response"]), r["label"], registry, "synthetic").correct for r in rows]
    assert sum(correct) == 96 - counts["open"]["misperceived"] > 0
    assert counts["open"]["misperceived"] > 0
    assert _cells(metrics, "accuracy") == pytest.approx(
        _by_cell(rows, lambda r: float(match(_answer(r["response"]), r["label"], registry).correct)))

    def rel(r):  # the paper's formula, by hand, with the coarse word = the super-category
        pred, gold, coarse = hashed_ngram_embed([_answer(r["response"]), r["label"], r["coarse"]])
        return max(0.0, (pred @ gold - coarse @ gold) / (1 - coarse @ gold))

    supers = {i.id: i.super_category for i in items["open"]}
    assert all(r["coarse"] == supers[r["id"]] for r in rows)
    assert _cells(metrics, "relative_similarity") == pytest.approx(_by_cell(rows, rel))
    seen, unseen = (np.mean([v for (d, s), v in _by_cell(rows, rel).items() if s == side])
                    for side in ("seen", "unseen"))
    assert metrics["averages"]["relative_similarity"] == pytest.approx(
        {"S-Avg": seen, "U-Avg": unseen, "Avg": (seen + unseen) / 2})

    # closed-world: correct = the answer is the gold option's name and no other option's
    closed = json.loads((tmp_path / "closed" / "metrics.json").read_text())["results"]["closed"]
    rows = pq.read_table(tmp_path / "closed" / "responses_closed.parquet").to_pylist()

    def picked(r):
        named = [i for i, o in enumerate(r["options"]) if o.lower() in _answer(r["response"]).lower()]
        return named[0] if len(named) == 1 else -1

    assert _cells(closed, "accuracy") == pytest.approx(
        _by_cell(rows, lambda r: float(picked(r) == r["gold_index"])))
    assert sum(picked(r) == r["gold_index"] for r in rows) == 96 - counts["closed"]["misperceived"]
    assert closed["position"]["accuracy"] == pytest.approx(
        np.mean([picked(r) == r["gold_index"] for r in rows]))

    # the rerun: zero new requests, same numbers
    server.reset_stats()
    again = ev.evaluate(items, registry, backend, tmp_path / "open", ev.Settings(),
                        ledger_path=tmp_path / "open" / "ledger.sqlite")
    assert server.stats(log=False)["counts"]["requests"] == 96  # only closed was new to this ledger
    server.reset_stats()
    again = ev.evaluate(items, registry, backend, tmp_path / "open", ev.Settings(),
                        ledger_path=tmp_path / "open" / "ledger.sqlite")
    assert server.stats(log=False)["counts"]["requests"] == 0
    assert again["ledger"]["new_keys"] == 0
    assert again["results"]["open"]["averages"] == metrics["averages"]
    assert (tmp_path / "open" / "plot.png").stat().st_size > 1000
    assert "most confused pairs" in (tmp_path / "open" / "report.md").read_text()


def test_budget_stops_sending_and_a_rerun_finishes(start_teacher, loaded, tmp_path):
    items, registry = loaded
    server = start_teacher()
    backend = EndpointModel(TeacherConfig(model="scripted", base_urls=[server.base_url],
                                          temperature=0, concurrency=1))
    tight = ev.Settings(budget_tokens=1)  # spent after the first answer
    first = ev.evaluate({"open": items["open"]}, registry, backend, tmp_path, tight)
    sent = server.stats(log=False)["counts"]["requests"]
    assert 1 <= sent < 96 and first["results"]["open"]["not_answered"] == 96 - sent
    done = ev.evaluate({"open": items["open"]}, registry, backend, tmp_path, ev.Settings())
    assert done["results"]["open"]["not_answered"] == 0
    assert server.stats(log=False)["counts"]["requests"] == 96  # nothing was asked twice


def test_reasoning_outside_content_scores_as_direct(start_teacher, loaded, tmp_path):
    """Behind a server that moves <think> to message.reasoning_content (LiteLLM, vLLM
    reasoning parsers), the format and accuracy scores are those of going direct."""
    items, registry = loaded
    scores = {}
    for name, flags in (("direct", {}), ("moved", {"reasoning_field": "reasoning_content"})):
        server = start_teacher(perception_error_rate=0.3, **flags)
        backend = EndpointModel(TeacherConfig(model="scripted", base_urls=[server.base_url],
                                              temperature=0, concurrency=8))
        result = ev.evaluate({mode: items[mode] for mode in ev.MODES}, registry, backend,
                             tmp_path / name, ev.Settings())
        scores[name] = {mode: result["results"][mode]["averages"] for mode in ev.MODES}
    assert scores["moved"] == scores["direct"]
    assert all(s["format"]["Avg"] == 1.0 for s in scores["moved"].values())


# -- an endpoint that always answers the first option ------------------------------------------


class FirstOptionServer:
    """A minimal OpenAI-compatible chat server (a test double at the HTTP boundary): it reads
    the options list out of the prompt and always answers the first one."""

    def __init__(self):
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        text = "".join(p.get("text", "") for m in body["messages"] for p in m["content"]
                       if isinstance(p, dict))
        options = ast.literal_eval(re.search(r"options provided in (\[.*?\])", text).group(1))
        content = f"<think>The first one.</think> <answer>{options[0]}</answer>"
        return web.json_response({"choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": content}}],
                                  "usage": {"prompt_tokens": 10, "completion_tokens": 5}})

    def __enter__(self) -> FirstOptionServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def test_a_first_option_model_scores_about_a_quarter_after_shuffling(loaded, tmp_path):
    items, registry = loaded
    with FirstOptionServer() as server:
        backend = EndpointModel(TeacherConfig(model="first", base_urls=[server.base_url], temperature=0))
        metrics = ev.evaluate({"closed": items["closed"]}, registry, backend, tmp_path, ev.Settings())
        assert server.requests == 96
    pos = metrics["results"]["closed"]["position"]
    gold_first = sum(i.answer_index == 0 for i in items["closed"]) / 96
    assert pos["accuracy"] == pytest.approx(gold_first)
    assert 0.1 < pos["accuracy"] < 0.4  # about a quarter, not 100%
    assert pos["debiased_accuracy"] == pytest.approx(0.25)  # exactly 1/4: 1, 0, 0, 0 by position
    assert pos["picked"]["0"] == 1.0


def _fine_r1_images(root: Path, present: int = 1) -> Path:
    """JPEGs at the paper's image paths for the first `present` lines of each fixture file."""
    for file in FIXTURES.glob("*.jsonl"):
        for n, line in enumerate(file.read_text().splitlines()):
            if n < present:
                target = root / json.loads(line)["image_path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 30), (n * 40, 90, 160)).save(target, format="JPEG")
    return root


def test_paper_lists_keep_order_versus_shuffled(tmp_path):
    """The paper's files put the gold first: a first-option model gets 100% unshuffled."""
    from curation.ingest.split import fine_r1_registry

    root = _fine_r1_images(tmp_path / "images", present=2)
    roots = {d: root for d in ("aircraft", "bird", "car", "dog", "flower", "pet")}
    registry, _ = fine_r1_registry()
    with FirstOptionServer() as server:
        backend = EndpointModel(TeacherConfig(model="first", base_urls=[server.base_url], temperature=0))
        _, kept, _ = ev.load_fine_r1(FIXTURES, roots, seed=0, shuffle=False)
        plain = ev.evaluate({"closed": kept}, registry, backend, tmp_path / "kept", ev.Settings())
        _, shuffled, _ = ev.load_fine_r1(FIXTURES, roots, seed=0, shuffle=True)
        fair = ev.evaluate({"closed": shuffled}, registry, backend, tmp_path / "shuffled", ev.Settings())
    assert plain["results"]["closed"]["position"]["accuracy"] == 1.0
    assert plain["results"]["closed"]["position"]["gold"]["0"] == 1.0  # the bias, reported
    fair_pos = fair["results"]["closed"]["position"]
    assert fair_pos["accuracy"] == pytest.approx(np.mean([i.answer_index == 0 for i in shuffled]))
    assert fair_pos["accuracy"] < 1.0
    # the shuffle is recorded by its seed: the same seed gives the same options
    assert [i.options for i in ev.load_fine_r1(FIXTURES, roots, seed=0)[1]] == [i.options for i in shuffled]
    assert [i.options for i in ev.load_fine_r1(FIXTURES, roots, seed=1)[1]] != [i.options for i in shuffled]


def test_paper_lists_skip_missing_images_and_paper_compat_coarse_words(start_teacher, tmp_path):
    from curation.ingest.split import fine_r1_registry

    root = _fine_r1_images(tmp_path / "images", present=1)
    opens, closeds, skipped = ev.load_fine_r1(FIXTURES, {"bird": root, "car": root, "dog": root})
    assert len(opens) == len(closeds) == 6  # first line of each file present, second missing
    assert Counter(s["reason"] for s in skipped) == {"image_missing": 6}
    assert all(i.options[i.answer_index] == i.label for i in closeds)
    registry, _ = fine_r1_registry()
    backend = EndpointModel(TeacherConfig(model="scripted", base_urls=[start_teacher().base_url],
                                          temperature=0))
    for compat, expected in ((False, {"bird": "bird", "car": "car", "dog": "dog"}),
                             (True, {"bird": "object", "car": "car", "dog": "object"})):
        out = tmp_path / f"compat-{compat}"
        metrics = ev.evaluate({"open": opens}, registry, backend, out,
                              ev.Settings(paper_compat=compat), skipped=skipped)
        rows = pq.read_table(out / "responses_open.parquet").to_pylist()
        assert {r["dataset"]: r["coarse"] for r in rows} == expected
        assert ("paper_accuracy" in metrics["results"]["open"]["metrics"]) is compat
        if compat:  # the release's rule, by hand: gold substring (cars: minus the last 2 words)
            def rule(r):
                gold = r["label"].lower()
                gold = " ".join(gold.split()[:-2]) if r["dataset"] == "car" else gold
                return float(gold in _answer(r["response"]).lower())

            assert _cells(metrics["results"]["open"], "paper_accuracy") == pytest.approx(_by_cell(rows, rule))
        assert metrics["skipped_count"] == 6
        assert metrics["settings"]["template_sha"] == ev.template_sha(compat)
    assert ev.prompt(opens[0], "open", True) != ev.prompt(opens[0], "open", False)
    assert ev.prompt(opens[0], "open", False).endswith(ev.FORMAT_INSTRUCTION)


def test_paper_compat_scores_a_closed_answer_without_tags_wrong(loaded):
    from curation.core.ledger import Entry

    items, registry = loaded
    item = items["closed"][0]
    gold = item.options[item.answer_index]
    responses = {"tagless": f"It is the {gold}.", "tagged": f"<think>.</think><answer>{gold}</answer>"}
    rows = {}
    for compat in (False, True):
        for name, text in responses.items():
            entry = Entry(key=name, model="m", status="ok", response=text)
            rows[compat, name] = ev.score([item], {item.id: entry}, "closed", registry, None, compat)[0]
    # the release's eval/evaluation.py: extract_answer() finds no <answer> -> not counted
    assert rows[True, "tagless"]["correct"] == 0.0 and rows[True, "tagless"]["paper_accuracy"] == 0.0
    assert rows[False, "tagless"]["correct"] == 1.0  # default: the whole text names the gold alone
    assert rows[True, "tagged"]["correct"] == rows[False, "tagged"]["correct"] == 1.0


def test_one_prompt_for_training_and_evaluation(loaded):
    """Open-world evaluation asks exactly what TAPO trains on; closed-world adds the options;
    SFT keeps the release's Stage-1 layout (system prompt + question) unless rl_prompt."""
    from curation.export.stage import FINE_R1_SYSTEM, rl_prompt_text
    from train.data import as_rl_prompt

    items, _ = loaded
    item = items["closed"][0]
    question = item.question
    assert ev.prompt(item, "open") == rl_prompt_text(question) == f"{question}\n\n{ev.FORMAT_INSTRUCTION}"
    closed = ev.prompt(item, "closed")
    assert closed.endswith(f"\n\n{ev.FORMAT_INSTRUCTION}") and all(o in closed for o in item.options)
    sft = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": FINE_R1_SYSTEM}]},
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<think>t</think><answer>a</answer>"}]}]}
    asked = as_rl_prompt(sft)["messages"][0]["content"][1]["text"]
    assert asked == ev.prompt(item, "open")


# -- a tiny local checkpoint through transformers --------------------------------------------


def test_tiny_local_model_batched_greedy(loaded, tmp_path):
    from train.tiny import build_tiny_model

    items, registry = loaded
    subset = {mode: items[mode][::12] for mode in ev.MODES}  # 8 items per mode
    tiny = build_tiny_model(tmp_path / "tiny", [f"<answer>{c.name}</answer>" for c in registry])
    backend = LocalModel(tiny, batch_size=4, max_new_tokens=12)
    metrics = ev.evaluate(subset, registry, backend, tmp_path / "out", ev.Settings())
    rows = pq.read_table(tmp_path / "out" / "responses_open.parquet").to_pylist()
    assert len(rows) == 8 and all(r["status_request"] in ("ok", "length", "empty") for r in rows)
    assert _cells(metrics["results"]["open"], "accuracy") == pytest.approx(
        _by_cell(rows, lambda r: float(match(_answer(r["response"]), r["label"], registry).correct)))
    # greedy: answering one at a time gives the same texts as the batches of 4
    single = LocalModel(tiny, batch_size=1, max_new_tokens=12)
    again = ev.evaluate({"open": subset["open"]}, registry, single, tmp_path / "single", ev.Settings())
    rows_single = pq.read_table(tmp_path / "single" / "responses_open.parquet").to_pylist()
    assert [r["response"] for r in rows_single] == [r["response"] for r in rows]
    assert again["ledger"]["new_keys"] == 8
    rerun = ev.evaluate(subset, registry, backend, tmp_path / "out", ev.Settings())
    assert rerun["ledger"]["new_keys"] == 0
    assert rerun["results"]["closed"]["averages"] == metrics["results"]["closed"]["averages"]


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_run_and_compare_with_the_paper_rows(teacher_server, export, tmp_path):
    runner = CliRunner()
    out = tmp_path / "teacher-eval"
    result = runner.invoke(app, ["eval", "run", "--data", str(export), "--endpoint",
                                 teacher_server.base_url, "--endpoint-model", "scripted",
                                 "--out", str(out), "--limit", "20"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"open", "closed"}
    assert metrics["results"]["open"]["n"] == 20
    assert metrics["settings"]["sampling"]["max_tokens"] == 1024
    compat = runner.invoke(app, ["eval", "run", "--data", str(export), "--endpoint",
                                 teacher_server.base_url, "--endpoint-model", "scripted",
                                 "--out", str(tmp_path / "compat"), "--limit", "2", "--paper-compat"])
    assert compat.exit_code == 0, compat.output
    settings = json.loads((tmp_path / "compat" / "metrics.json").read_text())["settings"]
    # the release's eval/eval_closed.sh and eval_open.sh: MAX_NEW_TOKENS=2048
    assert settings["sampling"]["max_tokens"] == 2048 and settings["paper_compat"]
    result = runner.invoke(app, ["eval", "compare", str(out), "--paper", "--out", str(tmp_path / "cmp.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cmp.md").read_text()
    closed = text.split("## closed-world accuracy (%)")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): line for line in closed.splitlines() if line.startswith("| ")}
    assert "91.71" in rows["paper: Fine-R1-7B"] and "88.71" in rows["paper: Fine-R1-7B"]
    ours = next(line for name, line in rows.items() if name.startswith("teacher-eval"))
    avg = metrics["results"]["closed"]["averages"]["accuracy"]["Avg"]
    assert ours.rstrip(" |").endswith(f"{100 * avg:.2f}")
    assert "synthetic (S)" in closed  # the run's own dataset gets its column next to the paper's
    assert "2602.07605" in text  # the attribution travels with the figures
    open_part = text.split("## open-world relative_similarity (%)")[1]
    assert "74.80" in open_part  # Fine-R1-7B's open-world Avg
    bad = runner.invoke(app, ["eval", "run", "--data", str(export), "--out", str(out)])
    assert bad.exit_code != 0 and "either --model" in bad.output
    missing = runner.invoke(app, ["eval", "run", "--data", str(tmp_path / "nothing"), "--endpoint",
                                  teacher_server.base_url, "--out", str(out)])
    assert missing.exit_code == 2 and "run `finecot export`" in missing.output


def test_a_usd_budget_without_a_price_is_refused_before_any_request(teacher_server, export,
                                                                     tmp_path):
    before = teacher_server.stats(log=False)["counts"]["requests"]
    result = CliRunner().invoke(app, ["eval", "run", "--data", str(export), "--endpoint",
                                      teacher_server.base_url, "--endpoint-model", "scripted",
                                      "--budget-usd", "1", "--out", str(tmp_path / "e")])
    assert result.exit_code != 0 and "--budget-usd needs the price of 'scripted'" in result.output
    assert teacher_server.stats(log=False)["counts"]["requests"] == before


def test_a_wrong_endpoint_stops_the_evaluation_with_the_reason(teacher_server, export, tmp_path):
    wrong = teacher_server.root_url + "/no-such-api/v1"  # answers 404 to every request
    result = CliRunner().invoke(app, ["eval", "run", "--data", str(export), "--endpoint", wrong,
                                      "--out", str(tmp_path / "ev"), "--concurrency", "2"])
    assert result.exit_code == 2 and "refused the requests (http 404" in result.output
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_a_real_export_is_evaluated(tmp_path):
    """What `finecot export` writes (eval_open / eval_closed of a run) feeds `finecot eval run`."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from export_fixtures import make_run

    from curation.export.stage import export_stage

    run, recipe = make_run(tmp_path / "run")
    export_stage(recipe, run)
    closed = ev.load_exported(run.root, "eval_closed")
    registry = ev.exported_registry(run.root)
    assert len(registry) == len(Registry.load(run.registry))  # the run's registry.json is used
    with FirstOptionServer() as server:
        result = CliRunner().invoke(app, ["eval", "run", "--data", str(run.root), "--endpoint",
                                          server.base_url, "--mode", "closed", "--out", str(tmp_path / "ev")])
        assert result.exit_code == 0, result.output
        assert server.requests == len(closed) > 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["results"]["closed"]
    assert metrics["position"]["accuracy"] == pytest.approx(np.mean([i.answer_index == 0 for i in closed]))
    assert {r["class_split"] for r in metrics["per_class"]} == {i.class_split for i in closed}


def test_an_unreadable_image_fails_its_item_and_the_run_goes_on(start_teacher, loaded, tmp_path):
    items, registry = loaded
    broken = ev.Item(id="broken", dataset="synthetic", label=items["open"][0].label, class_split="seen",
                     question=QUESTION, image=b"not an image at all", super_category="bird")
    server = start_teacher()
    backend = EndpointModel(TeacherConfig(model="scripted", base_urls=[server.base_url], temperature=0))
    metrics = ev.evaluate({"open": [broken, *items["open"][:5]]}, registry, backend, tmp_path, ev.Settings())
    block = metrics["results"]["open"]
    assert block["n"] == 6 and block["not_answered"] == 1
    assert sum(c["n"] for sides in block["cells"].values() for c in sides.values()) == 5
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "responses_open.parquet").to_pylist()}
    assert rows["broken"]["status_request"] == "failed" and rows["broken"]["response"] is None
    assert server.stats(log=False)["counts"]["requests"] == 5


def test_a_repeated_image_and_question_is_asked_once_and_scored_twice(start_teacher, loaded, tmp_path):
    items, registry = loaded
    first = items["open"][0]
    twin = ev.Item(**{**first.__dict__, "id": "twin"})
    server = start_teacher()
    backend = EndpointModel(TeacherConfig(model="scripted", base_urls=[server.base_url], temperature=0))
    metrics = ev.evaluate({"open": [first, twin]}, registry, backend, tmp_path, ev.Settings())
    assert server.stats(log=False)["counts"]["requests"] == 1
    rows = pq.read_table(tmp_path / "responses_open.parquet").to_pylist()
    assert rows[0]["response"] == rows[1]["response"] is not None
    assert metrics["results"]["open"]["not_answered"] == 0


def test_exported_items_stream_in_chunks_with_the_same_results(start_teacher, export, loaded, tmp_path):
    """A generator of items in chunks of 7 scores exactly like the whole list at once."""
    items, registry = loaded
    assert ev.count_exported(export, "eval_open") == 96 and ev.count_exported(export, "eval_open", 10) == 10
    assert len(ev.exported_registry(export)) == 24
    server = start_teacher(perception_error_rate=0.3)
    backend = EndpointModel(TeacherConfig(model="scripted", base_urls=[server.base_url], temperature=0))
    whole = ev.evaluate({"open": items["open"]}, registry, backend, tmp_path / "whole", ev.Settings())
    streamed = ev.evaluate({"open": ev.iter_exported(export, "eval_open")}, registry, backend,
                           tmp_path / "streamed", ev.Settings(), chunk_size=7)
    assert streamed["results"]["open"]["cells"] == whole["results"]["open"]["cells"]
    assert server.stats(log=False)["counts"]["requests"] == 2 * 96  # two ledgers: asked twice
