"""Batch files at the format level: the request lines, the split by lines and bytes, and what
each kind of result line (OpenAI's and vLLM's) means for its key.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_batch_files.py
"""

from __future__ import annotations

import json

import pytest

from curation.core.ledger import Ledger
from curation.core.ledger_schema import MIGRATIONS
from curation.teacher.batch_files import BatchFileWriter, interpret, parse_result, read_results


def _answer(content: str = "<think>x</think><answer>A</answer>", model: str = "m", **usage):
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": usage or {"prompt_tokens": 30, "completion_tokens": 10}}


def _line(**fields) -> bytes:
    return json.dumps({"id": "batch_req_1", "custom_id": "k1", **fields}).encode()


@pytest.mark.parametrize("max_lines, max_bytes, sizes", [(3, 10_000, [3, 3, 1]),
                                                         (100, 400, [2, 2, 2, 1])])
def test_files_split_by_lines_and_bytes_and_appear_only_when_whole(tmp_path, max_lines,
                                                                   max_bytes, sizes):
    finished = []
    writer = BatchFileWriter(tmp_path, max_lines, max_bytes, on_file=finished.append)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 60}]})
    for i in range(7):
        writer.add(f"key{i}", body, i)
        assert all(f.path.exists() for f in finished)
        assert len(list(tmp_path.glob("*.jsonl"))) == len(finished)  # the open one is hidden
    writer.close()
    assert [len(f.lines) for f in finished] == sizes
    for f in finished:
        raw = f.path.read_bytes()
        assert len(raw) == f.bytes <= max_bytes
        lines = [json.loads(line) for line in raw.splitlines()]
        assert [line["custom_id"] for line in lines] == [key for key, _, _ in f.lines]
        assert all(line["body"] == json.loads(body) for line in lines)
    tight = BatchFileWriter(tmp_path / "tight", max_lines=10, max_bytes=150, on_file=finished.append)
    with pytest.raises(ValueError, match="over the batch file limit of 150 bytes"):
        tight.add("big", body)
    tight.abort()
    assert list((tmp_path / "tight").iterdir()) == []


def test_result_lines_of_openai_and_vllm_mean_the_same():
    ok = interpret(parse_result(_line(response={"status_code": 200, "body": _answer()},
                                      error=None)), "m", 1024, 0)
    assert ok.kind == "answer" and ok.completion.status == "ok"
    assert (ok.completion.prompt_tokens, ok.completion.completion_tokens) == (30, 10)
    cut = interpret(parse_result(_line(response={"status_code": 200, "body": _answer(
        prompt_tokens=30, completion_tokens=64)})), "m", 64, 0)
    assert cut.completion.status == "length"  # as long as max_tokens: truncated
    dated = interpret(parse_result(_line(response={"status_code": 200, "body": _answer(
        model="m-2024-08-06")})), "m", 1024, 0)
    assert dated.kind == "answer"
    no_usage = interpret(parse_result(_line(response={"status_code": 200, "body": {
        **_answer(), "usage": None}})), "m", 1024, 321.0)
    assert no_usage.completion.usage_estimated and no_usage.completion.prompt_tokens == 321

    expired = interpret(parse_result(_line(response=None, error={
        "code": "batch_expired", "message": "This request could not be executed before the "
        "completion window expired."})), "m", 1024, 0)
    assert expired.kind == "expired"
    cancelled = interpret(parse_result(_line(response=None, error={
        "code": "batch_cancelled", "message": "cancelled"})), "m", 1024, 0)
    assert cancelled.kind == "cancelled"
    server = interpret(parse_result(_line(response={"status_code": 500, "body": {
        "error": {"message": "overloaded", "code": "500"}}}, error=None)), "m", 1024, 0)
    assert (server.kind, server.error) == ("failed", "http 500: overloaded")
    vllm = interpret(parse_result(_line(response={"status_code": 400, "request_id": "vllm-b"},
                                        error="The model `m` does not exist.")), "m", 1024, 0)
    assert (vllm.kind, vllm.error) == ("failed", "http 400: The model `m` does not exist.")
    timeout = interpret(parse_result(_line(response=None, error={
        "code": "request_timeout", "message": "timed out"})), "m", 1024, 0)
    assert (timeout.kind, timeout.error) == ("failed", "batch request_timeout: timed out")
    malformed = interpret(parse_result(_line(response={"status_code": 200, "body": {
        "object": "chat.completion", "choices": []}})), "m", 1024, 0)
    assert malformed.kind == "failed" and malformed.error.startswith("malformed:")

    for raw, reason in ((b'{"custom_id": "k1", "resp', "not JSON"),
                        (b'{"response": {"status_code": 200}}', "no custom_id"),
                        (b'{"custom_id": "k1", "response": null, "error": null}',
                         "neither a response body nor an error"),
                        (b"[1, 2]", "not a JSON object")):
        refused = interpret(parse_result(raw, 7), "m", 1024, 0)
        assert refused.kind == "refused" and refused.reason.startswith(f"line 7: {reason}")
    other = interpret(parse_result(_line(response={"status_code": 200, "body": _answer(
        model="x")})), "m", 1024, 0)
    assert other.kind == "refused" and "model 'x' answered, 'm' was asked" in other.reason


def test_read_results_goes_on_past_a_bad_line(tmp_path):
    path = tmp_path / "results.jsonl"
    good = _line(response={"status_code": 200, "body": _answer()}, error=None)
    path.write_bytes(good + b"\n\n" + b"{broken\n" + good.replace(b"k1", b"k2") + b"\n")
    results = list(read_results(path))
    assert [r.custom_id for r in results] == ["k1", None, "k2"]
    assert [r.number for r in results] == [1, 3, 4] and results[1].problem.startswith("line 3")
    assert results[0].sha256 != results[2].sha256


def test_a_schema_5_ledger_gains_the_batch_tables_with_its_rows_online(tmp_path):
    import sqlite3

    path = tmp_path / "v5.sqlite"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:5]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 5")
    for i in range(10):
        db.execute("INSERT INTO requests (key, model, status, attempts, response, prompt_tokens,"
                   " completion_tokens, cost_usd, endpoint, created_at, updated_at, raw_fields)"
                   " VALUES (?, 'm', 'ok', 1, 'x', 10, 5, 0.5, 'http://h/v1', 1, 1, 1)",
                   (f"k{i}",))
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        assert ledger.schema_version == len(MIGRATIONS) == 6
        stats = ledger.stats()
        assert stats["by_mode"]["online"] == {"requests": 10, "tokens": 150, "cost_usd": 5.0}
        assert stats["by_mode"]["batch"] == {"requests": 0, "tokens": 0, "cost_usd": 0}
        assert stats["batch_files"] == {} and stats["batch_lines_pending"] == 0
