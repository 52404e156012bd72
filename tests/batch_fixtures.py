"""What the batch-mode tests share: a recipe in batch mode against scripted teachers, the
teacher's batch counters, drafts compared as online and batch runs both write them, and a
script standing in for `vllm run-batch` (its output format; the answers come from the
scripted teacher's chat endpoint, so they are the ones an online run gets).

    from batch_fixtures import batch_spec, counters, comparable, vllm_run_batch
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from draft_fixtures import drafts, spec

from curation.core.rundir import RunDir
from curation.synthetic.batches import raw_body

# What differs between an online and a batch answer of the same request by nature: the
# latency of one HTTP request (a batch line has none). (Costs differ too where prices are
# set: batch is cheaper. These tests compare runs without prices, at $0 both.)
VARYING = ("latency_s",)


def batch_spec(run: RunDir, *servers, **sections):
    """`spec` in batch mode, polling every few milliseconds."""
    teacher = {"mode": "batch", "batch": {"poll_s": 0.02, "poll_max_s": 0.1},
               **sections.pop("teacher", {})}
    return spec(run, *servers, teacher=teacher, **sections)


def counters(server) -> dict[str, int]:
    """The teacher's Files/Batches counters (uploads, batches, lines, lines_repeated...)."""
    return server.stats(log=False)["batch"]


def comparable(run: RunDir) -> set[str]:
    """drafts.parquet as a set of rows (JSON), without the columns that differ by nature."""
    return {json.dumps({k: v for k, v in row.items() if k not in VARYING}, sort_keys=True,
                       default=str) for row in drafts(run).values()}


def vllm_run_batch(requests: Path, results: Path, server, fail: set[str] = frozenset()) -> int:
    """Stand-in for `vllm run-batch -i REQUESTS -o RESULTS`: the same output lines
    (`{"id": "vllm-...", "custom_id", "response": {"status_code", "request_id", "body"},
    "error"}`; vLLM's errors: a string, status_code 400, no body), each body answered by the
    scripted teacher's chat endpoint from the exact bytes of the request's body. Keys in
    `fail` get vLLM's error line. Returns the line count."""
    count = 0
    with open(requests, encoding="utf-8") as lines, open(results, "w", encoding="utf-8") as out:
        for line in lines:
            request = json.loads(line)
            custom_id = request["custom_id"]
            record = {"id": f"vllm-{uuid.uuid4().hex}", "custom_id": custom_id}
            if custom_id in fail:
                record["response"] = {"status_code": 400,
                                      "request_id": f"vllm-batch-{uuid.uuid4().hex}"}
                record["error"] = "The model `x` does not exist."
            else:
                post = urllib.request.Request(
                    f"{server.base_url}/chat/completions", data=raw_body(line, request["body"]),
                    headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(post, timeout=30) as response:
                    body = json.loads(response.read())
                record["response"] = {"status_code": 200,
                                      "request_id": f"vllm-batch-{uuid.uuid4().hex}", "body": body}
                record["error"] = None
            out.write(json.dumps(record) + "\n")
            count += 1
    return count
