"""The scripted teacher over real HTTP with the real `openai` client: answers from pixels,
four-part rationales, configured error rates, faults, n, max_tokens, usage and /stats.

    .venv/bin/pytest -q tests/test_teacher_server.py
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest
from PIL import Image

from curation.core.labels import normalize
from curation.synthetic.draw import render
from curation.synthetic.teacher import Behaviour
from curation.synthetic.world import all_classes, make_world, world_classes

CLASSES = world_classes(24)
HEADINGS = ("visual analysis", "candidate sub-categories", "comparison", "prediction")
HEADING = re.compile(r"^(?:#+\s*|\*\*)?(?:\d\.\s*)?(visual analysis|candidate sub-categories|"
                     r"comparison|prediction)\b:?(?:\*\*)?", re.IGNORECASE | re.MULTILINE)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _data_url(image: Image.Image, fmt: str = "PNG", **save) -> str:
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    mime = "jpeg" if fmt == "JPEG" else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def _image(k: int, j: int, size: int = 128) -> Image.Image:
    return render(CLASSES[k]["attributes"], np.random.default_rng([k, j, 5]), size)


@pytest.fixture(scope="module")
def urls() -> list[tuple[str, str]]:
    """(data URL, gold class name): 24 classes x 3 images, 128 px PNG."""
    return [(_data_url(_image(k, j)), CLASSES[k]["name"]) for k in range(24) for j in range(3)]


def _messages(url: str, text: str = "Which sub-category is this bird?") -> list[dict]:
    return [{"role": "system", "content": "You are an expert ornithologist."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def sections(text: str) -> dict[str, str]:
    """Heading name -> section body (a tiny parser for this test only)."""
    marks = [(m.group(1).lower(), m.start(), m.end()) for m in HEADING.finditer(text)]
    out = {}
    for i, (name, _, end) in enumerate(marks):
        stop = marks[i + 1][1] if i + 1 < len(marks) else text.find("</think>", end)
        out[name] = text[end: stop if stop >= 0 else len(text)].strip()
    return out


async def _many(base_url: str, jobs: list[dict], concurrency: int = 32, **client) -> list:
    """Run chat completions concurrently; return the completion or the exception per job."""
    api = openai.AsyncOpenAI(base_url=base_url, api_key="none", **client)
    gate = asyncio.Semaphore(concurrency)

    async def one(job):
        async with gate:
            try:
                return await api.chat.completions.create(model="teacher", **job)
            except Exception as err:  # the test counts each fault type
                return err

    try:
        return await asyncio.gather(*(one(j) for j in jobs))
    finally:
        await api.close()


def test_correct_class_and_well_formed_rationale(teacher_server, urls):
    results = asyncio.run(_many(teacher_server.base_url,
                                [{"messages": _messages(u), "seed": i} for i, (u, _) in enumerate(urls)]))
    known = all_classes()
    for (_, gold), completion in zip(urls, results, strict=True):
        choice = completion.choices[0]
        text = choice.message.content
        assert choice.finish_reason == "stop"
        assert text.startswith("<think>") and "</think>" in text
        assert ANSWER.findall(text) == [gold]
        parts = sections(text)
        assert list(parts) == list(HEADINGS), text
        names = [n.strip(" -") for n in re.split(r"[;\n]", parts["candidate sub-categories"]) if n.strip(" -")]
        assert gold in names and 2 <= len(names) <= 6
        assert all(known[n]["super_category"] == known[gold]["super_category"] for n in names)
        analysis = parts["visual analysis"]
        assert normalize(gold) not in normalize(analysis)  # blind: no label in the analysis
        for value in known[gold]["attributes"].values():
            if value not in ("barred", "plain"):
                assert value in analysis  # names what it saw
        assert gold in parts["prediction"]
        truth = completion.model_extra["finecot_truth"][0]
        assert truth["true_class"] == gold and not truth["misperceived"]
        assert completion.usage.completion_tokens > 50


def test_error_rates_match_the_configured_ones(start_teacher, urls):
    rates = {"perception_error_rate": 0.2, "format_error_rate": 0.15, "leak_rate": 0.4}
    server = start_teacher(**rates)
    jobs, golds = [], []
    for i in range(1000):
        url, gold = urls[i % len(urls)]
        hinted = i % 2 == 1
        text = f'Describe the bird. Hint: the correct sub-category is "{gold}".' if hinted else \
            "Which sub-category is this bird?"
        jobs.append({"messages": _messages(url, text), "seed": i, "max_tokens": 2000})
        golds.append((gold, hinted))
    results = asyncio.run(_many(server.base_url, jobs))

    wrong = answered = formats = leaks = clean_hinted = 0
    for (gold, hinted), completion in zip(golds, results, strict=True):
        choice, truth = completion.choices[0], completion.model_extra["finecot_truth"][0]
        text = choice.message.content
        # The format error, read from the text alone, must be the one the server reports.
        if choice.finish_reason == "length":
            seen = "truncated"
        elif not all(tag in text for tag in ("<think>", "</think>", "<answer>", "</answer>")):
            seen = "missing_tags"
        elif len(sections(text)) < 4:
            seen = "missing_section"
        else:
            seen = None
        assert seen == truth["format_error"], text
        formats += seen is not None
        answer = ANSWER.findall(text) or re.findall(r"The answer is (.+)\.$", text)
        if not hinted and answer:
            answered += 1
            wrong += answer[0] != gold
            assert (answer[0] != gold) == truth["misperceived"]
        if hinted:
            assert not answer or answer[0] == gold  # rationalises toward the given label
            if seen is None:
                analysis = sections(text)["visual analysis"]
                leaked = normalize(gold) in normalize(analysis) or bool(
                    re.search(r"as described|description provided", analysis, re.IGNORECASE))
                assert leaked == (truth["leak"] is not None)
                clean_hinted += 1
                leaks += leaked

    def close(measured: float, expected: float, n: int) -> bool:
        return abs(measured - expected) <= 4.5 * (expected * (1 - expected) / n) ** 0.5

    assert close(wrong / answered, 0.2, answered)
    assert close(formats / 1000, 0.15, 1000)
    assert close(leaks / clean_hinted, 0.4, clean_hinted)
    counts = server.stats(log=False)["counts"]
    assert counts["requests"] == 1000 and counts["format_errors"] == formats


def test_each_fault_type_is_observed_as_configured(start_teacher):
    flags = {"rate_429": 0.15, "rate_500": 0.1, "rate_503": 0.1, "rate_hang": 0.05,
             "rate_reset": 0.1, "rate_malformed": 0.1, "retry_after": 2.0, "hang_seconds": 30}
    server = start_teacher(**flags)
    jobs = [{"messages": [{"role": "user", "content": f"hello {i}"}], "seed": i} for i in range(400)]
    results = asyncio.run(_many(server.base_url, jobs, concurrency=64, max_retries=0, timeout=1.0))
    seen: dict[str, int] = {}
    for r in results:
        if isinstance(r, openai.RateLimitError):
            kind = "429"
            assert r.response.headers["Retry-After"] == "2"
            assert r.response.headers["retry-after-ms"] == "2000"
        elif isinstance(r, openai.InternalServerError):
            kind = str(r.status_code)
        elif isinstance(r, openai.APITimeoutError):
            kind = "hang"
        elif isinstance(r, openai.APIConnectionError):
            kind = "reset"
        elif isinstance(r, ValueError):  # json.JSONDecodeError: the body is not JSON
            kind = "malformed"
        else:
            assert r.choices[0].message.content.endswith("<answer>unknown</answer>")
            kind = "ok"
        seen[kind] = seen.get(kind, 0) + 1
    expected = {"429": 0.15, "500": 0.1, "503": 0.1, "hang": 0.05, "reset": 0.1,
                "malformed": 0.1, "ok": 0.4}
    for kind, rate in expected.items():
        got = seen.get(kind, 0) / 400
        assert abs(got - rate) <= 4.5 * (rate * (1 - rate) / 400) ** 0.5, (kind, seen)
    outcomes = server.stats(log=False)["outcomes"]
    assert {k: v for k, v in outcomes.items() if k != "ok"} == {k: v for k, v in seen.items() if k != "ok"}


def test_faults_are_transient_so_retries_succeed(start_teacher):
    server = start_teacher(rate_503=0.5, rate_429=0.3, retry_after=0.01)
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=30)
    done = [client.chat.completions.create(model="t", seed=i, messages=[
        {"role": "user", "content": f"q{i}"}]) for i in range(10)]
    assert all(d.choices for d in done)
    stats = server.stats()
    assert stats["counts"]["requests"] > 10  # faults happened and were retried
    assert {e["attempt"] for e in stats["log"]} > {0}


def test_resized_and_jpeg_images_are_read_correctly(teacher_server):
    """A client that halves 224 px images and re-encodes them as JPEG q75 gets the same answers."""
    jobs, golds = [], []
    for k, info in enumerate(world_classes(72)):
        for j in range(2):
            image = render(info["attributes"], np.random.default_rng([k, j, 9]), 224)
            image = image.resize((112, 112), Image.Resampling.BICUBIC)
            jobs.append({"messages": _messages(_data_url(image, "JPEG", quality=75)), "seed": 0})
            golds.append(info["name"])
    results = asyncio.run(_many(teacher_server.base_url, jobs))
    correct = sum(ANSWER.findall(r.choices[0].message.content) == [g] for r, g in zip(results, golds, strict=True))
    assert correct / len(golds) >= 0.97


def test_images_that_show_no_bird_get_an_honest_unknown(teacher_server):
    rng = np.random.default_rng(1)
    photos = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
              Image.new("RGB", (64, 64), (200, 200, 200)),
              Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((96, 96))]
    client = openai.OpenAI(base_url=teacher_server.base_url, api_key="none")
    for photo in photos:
        done = client.chat.completions.create(model="t", messages=_messages(_data_url(photo)))
        text = done.choices[0].message.content
        assert text.endswith("<answer>unknown</answer>") and "cannot" in text
        assert done.model_extra["finecot_truth"][0]["true_class"] is None


def test_n_max_tokens_usage_seed_and_file_urls(start_teacher, urls, tmp_path):
    server = start_teacher(perception_error_rate=0.5)
    client = openai.OpenAI(base_url=server.base_url, api_key="none")
    url, gold = urls[0]
    many = client.chat.completions.create(model="t", messages=_messages(url), n=4, seed=3)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    again = client.chat.completions.create(model="t", messages=_messages(url), n=4, seed=3)
    assert [c.message.content for c in again.choices] == [c.message.content for c in many.choices]
    answers = set()
    for seed in range(12):
        done = client.chat.completions.create(model="t", messages=_messages(url), seed=seed)
        answers.update(ANSWER.findall(done.choices[0].message.content))
    assert gold in answers and len(answers) > 1  # seeds change the scripted mistakes

    short = client.chat.completions.create(model="t", messages=_messages(url), max_tokens=20, seed=1)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens <= 20 and "</think>" not in short.choices[0].message.content
    small = client.chat.completions.create(model="t", messages=_messages(_data_url(_image(0, 0, 56))))
    assert many.usage.prompt_tokens - small.usage.prompt_tokens == (5 * 5 + 2) - (2 * 2 + 2)

    path = tmp_path / "bird.png"
    _image(3, 1).save(path)
    by_file = client.chat.completions.create(model="t", messages=_messages(path.as_uri()), seed=0,
                                             temperature=0)
    assert by_file.model_extra["finecot_truth"][0]["true_class"] == CLASSES[3]["name"]

    single = start_teacher(honour_n=False)
    one = openai.OpenAI(base_url=single.base_url, api_key="none").chat.completions.create(
        model="t", messages=_messages(url), n=3)
    assert len(one.choices) == 1
    with pytest.raises(openai.BadRequestError, match="data URL or a file"):
        client.chat.completions.create(model="t", messages=_messages("http://example.com/x.png"))
    with pytest.raises(openai.BadRequestError, match="n must be an integer"):
        client.chat.completions.create(model="t", messages=_messages(url), n="three")
    with pytest.raises(openai.BadRequestError, match="not a readable image"):
        client.chat.completions.create(model="t", messages=_messages("data:image/png;base64,AAAA"))
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError, match="400"):
        urllib.request.urlopen(request, timeout=10)
    assert server.stats(log=False)["outcomes"]["bad_request"] == 4


def test_models_list_the_flags_and_stats_count_and_reset(start_teacher, urls):
    server = start_teacher(leak_rate=0.25, max_concurrency=2, latency=0.05)
    client = openai.OpenAI(base_url=server.base_url, api_key="none")
    model = client.models.list().data[0]
    assert model.id == "finecot-synthetic-teacher"
    assert model.model_extra["finecot_behaviour"]["leak_rate"] == 0.25
    assert client.models.retrieve(model.id).model_extra["finecot_behaviour"]["max_concurrency"] == 2
    asyncio.run(_many(server.base_url, [{"messages": _messages(u)} for u, _ in urls[:12]], concurrency=12))
    stats = server.stats()
    assert stats["counts"]["requests"] == 12 == len(stats["log"])
    assert stats["counts"]["max_active"] <= 2 < stats["counts"]["max_in_flight"]  # queued
    assert stats["log"][0]["truth"][0]["true_class"] in {g for _, g in urls[:12]}
    server.reset_stats()
    assert server.stats()["counts"]["requests"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_teacher_serves_until_stopped(urls):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "synthetic", "teacher",
                             "--port", str(port), "--format-error-rate", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        assert client.models.list().data[0].model_extra["finecot_behaviour"]["format_error_rate"] == 0.5
        done = client.chat.completions.create(model="t", messages=_messages(urls[5][0]), n=8, seed=0)
        assert len(done.choices) == 8
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("count", [6, 24])
def test_mistakes_and_candidates_stay_inside_the_clients_world(start_teacher, tmp_path, count):
    """Without --world the teacher still names only classes any world of that size holds;
    with --world it names only the world's own classes."""
    world = world_classes(count)
    names = {c["name"] for c in world}
    make = tmp_path / "world"
    make_world(make, classes=count, per_class=1, seed=0, size=64)
    for server in (start_teacher(perception_error_rate=1.0),
                   start_teacher(perception_error_rate=1.0, world=str(make))):
        jobs = [{"messages": _messages(_data_url(render(c["attributes"], np.random.default_rng(k), 128))),
                 "seed": k} for k, c in enumerate(world)]
        for info, done in zip(world, asyncio.run(_many(server.base_url, jobs)), strict=True):
            text = done.choices[0].message.content
            answer = ANSWER.findall(text)[0]
            assert answer in names and answer != info["name"]  # a confusable wrong class
            candidates = re.split(r"[;\n]", sections(text)["candidate sub-categories"])
            assert {n.strip(" -") for n in candidates if n.strip(" -")} <= names


def test_latency_distribution_and_flag_validation():
    rng = random.Random(0)
    lognormal = Behaviour(latency_median=0.5, latency_p99=3.0)
    draws = np.array([lognormal.delay(rng) for _ in range(20000)])
    assert abs(np.median(draws) - 0.5) < 0.03 and abs(np.percentile(draws, 99) - 3.0) < 0.3
    assert Behaviour(latency=0.2).delay(rng) == 0.2
    with pytest.raises(ValueError, match="perception_error_rate must be between 0 and 1"):
        Behaviour(perception_error_rate=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        Behaviour(rate_429=0.6, rate_500=0.6)
    with pytest.raises(FileNotFoundError, match="finecot synthetic make"):
        Behaviour(world="/nonexistent/world")
